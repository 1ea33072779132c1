package status

import (
	"errors"
	"testing"
	"time"
)

func TestHealth(t *testing.T) {
	start := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	bus := Liveness{Name: "bus rs485", Limit: 3 * time.Minute}
	up := Liveness{Name: "uplink", Last: start.Add(4 * time.Minute), Limit: 10 * time.Second}
	r := Report{Loops: []Liveness{bus, up}}
	if got := Health(start.Add(3*time.Minute), start, r); len(got) != 0 {
		t.Errorf("starting up, no beat yet, within the limit: %v", got)
	}
	r.Loops[0].Last = start.Add(time.Minute)
	if got := Health(start.Add(4*time.Minute+5*time.Second), start, r); len(got) != 1 || got[0] != "stuck: bus rs485 for 3m5s" {
		t.Errorf("stuck bus: %v", got)
	}
	r.Loops[0].Last = start.Add(4 * time.Minute)
	if got := Health(start.Add(5*time.Minute), start, r); len(got) != 1 || got[0] != "stuck: uplink for 1m0s" {
		t.Errorf("stuck uplink: %v", got)
	}
	r.Loops[1].Last = start.Add(5 * time.Minute)
	r.BufferErr = errors.New("no space left on device")
	if got := Health(start.Add(5*time.Minute), start, r); len(got) != 1 || got[0] != "buffer: no space left on device" {
		t.Errorf("failing buffer: %v", got)
	}
}
