package gateway

import (
	"errors"
	"strings"
	"testing"
	"time"

	"edgegw/gateway/config"
)

func TestHealth(t *testing.T) {
	start := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	p := &poller{bus: config.Bus{Name: "rs485", Timeout: config.Duration(time.Second), Retries: 1},
		devices: []config.Device{{Name: "a", Interval: config.Duration(5 * time.Second)}, {Name: "b", Interval: config.Duration(time.Minute)}}}
	// limit: 3 × 1m + 2s × 2 devices + 10s = 3m14s
	if got := p.stallLimit(); got != 3*time.Minute+14*time.Second {
		t.Fatalf("stall limit %s", got)
	}
	if got := health(start.Add(3*time.Minute), start, []*poller{p}, nil); len(got) != 0 {
		t.Errorf("starting up, no poll yet, within the limit: %v", got)
	}
	p.alive.Store(start.Add(time.Minute).UnixNano())
	if got := health(start.Add(5*time.Minute), start, []*poller{p}, nil); len(got) != 1 || !strings.Contains(got[0], "bus rs485: no poll for 4m0s") {
		t.Errorf("stuck bus: %v", got)
	}
	if got := health(start.Add(2*time.Minute), start, []*poller{p}, errors.New("no space left on device")); len(got) != 1 || got[0] != "buffer: no space left on device" {
		t.Errorf("failing buffer: %v", got)
	}
}
