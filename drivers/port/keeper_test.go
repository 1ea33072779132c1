package port

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.bug.st/serial"
)

// nopPort is an open port that does nothing.
type nopPort struct{ closed *int }

func (nopPort) Read([]byte) (int, error)           { return 0, nil }
func (nopPort) Write(b []byte) (int, error)        { return len(b), nil }
func (nopPort) SetReadTimeout(time.Duration) error { return nil }
func (nopPort) ResetInputBuffer() error            { return nil }
func (p nopPort) Close() error                     { *p.closed++; return nil }

// TestKeeper: a port that cannot be opened is tried again only after its
// backoff, logged once when lost and once when back; a failed port is
// closed and reopened a second later.
func TestKeeper(t *testing.T) {
	var logs bytes.Buffer
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	opens, closed := 0, 0
	var openErr error = errors.New("no such file or directory")
	k := &Keeper{Bus: "rs485", Device: "/dev/ttyUSB0", Log: slog.New(slog.NewTextHandler(&logs, nil)),
		Now: func() time.Time { return now },
		Open: func(string, *serial.Mode) (Port, error) {
			opens++
			if openErr != nil {
				return nil, openErr
			}
			return nopPort{&closed}, nil
		}}
	for range 3 {
		if _, _, err := k.Get(); err == nil {
			t.Fatal("opened a missing port")
		}
	}
	if opens != 1 {
		t.Errorf("%d opens within the first backoff step, want 1", opens)
	}
	now = now.Add(Reopen.Delay(1) + Reopen.Delay(1)/5)
	openErr = nil
	p, fresh, err := k.Get()
	if err != nil || p == nil || !fresh || opens != 2 {
		t.Fatalf("after the backoff: %v %v %v, %d opens", p, fresh, err, opens)
	}
	if _, fresh, _ := k.Get(); fresh || opens != 2 {
		t.Errorf("an open port was opened again")
	}
	k.Failed(errors.New("input/output error"))
	if closed != 1 {
		t.Errorf("failed port closed %d times", closed)
	}
	if _, _, err := k.Get(); err == nil {
		t.Errorf("reopened at once after a failure")
	}
	now = now.Add(Reopen.First)
	if _, fresh, err := k.Get(); err != nil || !fresh {
		t.Errorf("not reopened a second after the failure: %v", err)
	}
	got := logs.String()
	for want, n := range map[string]int{"serial_port_unavailable": 1, "serial_port_lost": 1, "serial_port_back": 2} {
		if strings.Count(got, want) != n {
			t.Errorf("%s logged %d times, want %d:\n%s", want, strings.Count(got, want), n, got)
		}
	}
}
