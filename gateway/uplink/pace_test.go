package uplink

import (
	"bytes"
	"testing"
	"time"

	"edgegw/internal/testbroker"
)

// TestPacer: on a fake clock, the backlog may send a second's worth at
// once, then waits what each message costs; idle time earns no more
// than the burst.
func TestPacer(t *testing.T) {
	now := time.Unix(1000, 0)
	p := newPacer(Rate{Readings: 10})
	p.now = func() time.Time { return now }
	for i := range 10 {
		if d := p.delay(); d != 0 {
			t.Fatalf("message %d waits %s within the burst", i, d)
		}
		p.charge(0, 1)
	}
	p.charge(0, 5)
	if d := p.delay(); d != 500*time.Millisecond {
		t.Errorf("after 15 readings at 10/s: delay %s, want 500ms", d)
	}
	now = now.Add(time.Hour)
	p.charge(0, 20)
	if d := p.delay(); d != time.Second {
		t.Errorf("after an idle hour, 20 readings: delay %s, want 1s", d)
	}

	pub := &publication{Topic: "t", QoS: 1, Payload: bytes.Repeat([]byte("x"), 991)}
	n := packetSize(pub, MQTT5)
	if n != 1000 {
		t.Fatalf("packet of %d bytes, the test wants 1000", n)
	}
	b := newPacer(Rate{Bytes: 2000})
	b.now = func() time.Time { return now }
	for range 6 {
		b.charge(n, 1)
	}
	if d := b.delay(); d != 2*time.Second {
		t.Errorf("6000 bytes at 2000 B/s: delay %s, want 2s", d)
	}
}

// TestPacedBacklogLetsLiveReadingsFirst: with max_rate, a backlog drains
// at the rate, and a reading taken meanwhile goes at once, ahead of it.
func TestPacedBacklogLetsLiveReadingsFirst(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		store := openBuffer(t)
		fill(t, store, 300)
		const rate = 100 // readings a second: the backlog takes about 2 s
		begin := time.Now()
		start(t, store, []string{br.URL()}, func(c *Config) {
			c.MaxRate = Rate{Readings: rate}
			c.Batch = Batching{Max: 10, Topic: "test/batch"}
		})
		sub.WaitFor(t, 10*time.Second, "the first of the backlog", func(m []testbroker.Message) bool {
			return len(decodeAll(t, m, withCLI).all()) > 0
		})
		store.Append([]byte("live"))
		if err := store.Commit(); err != nil {
			t.Fatal(err)
		}
		msgs := sub.WaitFor(t, 10*time.Second, "the live reading", func(m []testbroker.Message) bool {
			for _, s := range decodeAll(t, m, withCLI).all() {
				if s == 301 {
					return true
				}
			}
			return false
		})
		// However slow the machine, no more than the rate allows can have
		// come: a second's burst plus rate × elapsed, plus one batch (the
		// one that starts at the burst's edge) and the live reading (never
		// held back by the pace: within a few milliseconds, that is 111).
		elapsed := time.Since(begin)
		got := decodeAll(t, msgs, withCLI).all()
		if limit := rate*(1+elapsed.Seconds()) + 10 + 1; float64(len(got)) > limit {
			t.Errorf("%d readings in %s, over the %d/s cap (at most %.0f)", len(got), elapsed, rate, limit)
		}
		if len(got) >= 301 {
			t.Fatalf("the live reading came after the whole backlog: %v", got)
		}
		d := decodeAll(t, sub.WaitFor(t, 20*time.Second, "the rest of the backlog", func(m []testbroker.Message) bool {
			return len(decodeAll(t, m, withCLI).all()) >= 301
		}), withCLI)
		all := d.all()
		if len(all) != 301 || !covers(all, 301) {
			t.Fatalf("got %d readings: %v", len(all), all)
		}
		// The backlog itself goes in seq order.
		var backlog []uint64
		for _, s := range all {
			if s != 301 {
				backlog = append(backlog, s)
			}
		}
		if !inOrderOnce(backlog, 300) {
			t.Errorf("backlog out of order: %v", backlog)
		}
		t.Logf("the live reading came after %d of the 300 backlog readings", len(got)-1)
	})
}
