package uplink

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"edgegw/internal/testbroker"
)

// connectedHeap connects n uplinks over one empty buffer to a real broker
// and returns the heap each costs once connected.
func connectedHeap(tb testing.TB, n int) uint64 {
	br := testbroker.Start(tb)
	store := openBuffer(tb.(*testing.T))
	bctx, bcancel := context.WithCancel(context.Background())
	bdone := make(chan struct{})
	go func() { store.Run(bctx); close(bdone) }()
	defer func() { bcancel(); <-bdone }()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, n)
	ups := make([]*Uplink, n)
	for i := range ups {
		ups[i] = New(Config{Brokers: []string{br.URL()}, ClientID: fmt.Sprintf("heap-%d", i), QoS: 1, Protocol: testProtocol(tb),
			KeepAlive: 30 * time.Second, ConnectTimeout: time.Second, MaxInflight: 16, StatusTopic: "test/status",
			Version: "test", Compose: compose, Logger: slog.New(slog.DiscardHandler)}, store)
		go func() { done <- ups[i].Run(ctx) }()
	}
	defer func() {
		cancel()
		for range ups {
			<-done
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for _, up := range ups {
		for up.Broker() == "" {
			if time.Now().After(deadline) {
				tb.Fatal("uplinks not connected within 20s")
			}
			time.Sleep(10 * time.Millisecond) // polling with a deadline
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	return (after.HeapAlloc - min(before.HeapAlloc, after.HeapAlloc)) / uint64(n)
}

// TestHeapPerConnection: a connected uplink costs kilobytes of heap, not
// the half megabyte that paho's 65,535-slot incoming queue took when no
// Receive Maximum was sent.
func TestHeapPerConnection(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		per := connectedHeap(t, 20)
		t.Logf("heap per connected uplink: %d KiB", per>>10)
		if per > 128<<10 {
			t.Errorf("heap per connected uplink %d KiB, want at most 128 KiB", per>>10)
		}
	})
}
