package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestSupervision: a part that returns while the gateway runs is a failure,
// with or without an error; one that returns because it was asked to stop
// is not. A reloadable part that stops ends the loop with its reason.
func TestSupervision(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	early := supervised(ctx, "buffer", func(context.Context) error { return nil })
	if err := early(); err == nil || err.Error() != "buffer stopped: returned" {
		t.Errorf("early nil return: %v", err)
	}
	boom := errors.New("disk gone")
	if err := supervised(ctx, "buffer", func(context.Context) error { return boom })(); !errors.Is(err, boom) {
		t.Errorf("early error: %v", err)
	}
	cancel()
	if err := supervised(ctx, "buffer", func(context.Context) error { return nil })(); err != nil {
		t.Errorf("asked to stop: %v", err)
	}

	g := &gateway{died: make(chan error, 1)}
	live, stopLive := context.WithCancel(context.Background())
	defer stopLive()
	g.watch(ctx, "bus a", nil) // ctx ended: a stop on request
	g.watch(live, "bus b", nil)
	g.watch(live, "uplink", boom) // the gateway is stopping already: dropped
	if err := g.loop(live); err == nil || !strings.Contains(err.Error(), "bus b stopped") {
		t.Errorf("loop: %v", err)
	}
}
