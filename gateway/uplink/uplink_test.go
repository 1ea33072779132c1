package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"edgegw/buffer"
	"edgegw/internal/testbroker"
	"edgegw/internal/testlog"
)

// compose publishes record data to test/{seq} with the seq in the payload.
func compose(dst []byte, rec buffer.Record) (string, []byte, error) {
	return "test/data", fmt.Appendf(dst, `{"seq":%d,"data":%q}`, rec.Seq, rec.Data), nil
}

func openBuffer(t *testing.T) *buffer.Buffer {
	t.Helper()
	b, err := buffer.Open(filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{CommitInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func fill(t *testing.T, b *buffer.Buffer, n int) {
	t.Helper()
	for i := range n {
		b.Append([]byte(strconv.Itoa(i)))
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
}

// quick is a short backoff for tests: 50 ms more per failure, at most 200 ms.
func quick(n int) time.Duration { return time.Duration(min(n, 4)) * 50 * time.Millisecond }

// bothProtocols runs f as two subtests, "5" and "3.1.1": start speaks the
// protocol its subtest is named after, so every promise is tested in both.
func bothProtocols(t *testing.T, f func(t *testing.T)) {
	for _, p := range []Protocol{MQTT5, MQTT311} {
		t.Run(p.String(), f)
	}
}

// testProtocol is the protocol a (sub)test named by bothProtocols speaks;
// Auto elsewhere.
func testProtocol(t testing.TB) Protocol {
	for _, part := range strings.Split(t.Name(), "/") {
		switch part {
		case "5":
			return MQTT5
		case "3.1.1":
			return MQTT311
		}
	}
	return Auto
}

// drop closes the connection in use abruptly, as a network failure would:
// no DISCONNECT, so the broker publishes the will.
func (r *running) drop(t *testing.T) {
	t.Helper()
	c := r.up.current()
	if c == nil {
		t.Fatal("not connected")
	}
	_ = c.wire.Conn.Close()
}

type running struct {
	up     *Uplink
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, store *buffer.Buffer, brokers []string, mutate ...func(*Config)) *running {
	t.Helper()
	cfg := Config{
		Brokers:        brokers,
		Protocol:       testProtocol(t),
		ClientID:       "edgegw-test-" + strings.ReplaceAll(t.Name(), "/", "-"),
		QoS:            1,
		KeepAlive:      2 * time.Second,
		ConnectTimeout: time.Second,
		MaxInflight:    16,
		StatusTopic:    "test/status",
		Version:        "test",
		Compose:        compose,
		Backoff:        quick,
		// Tests of one gateway reconnect at once; the fleet's pacing has
		// tests of its own.
		Reconnect: Reconnect{Window: -1, Away: quick, Failed: quick, Busy: quick},
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{up: New(cfg, store), cancel: cancel, done: make(chan error, 1)}
	// The buffer's commit loop turns acks into deletes, as in the gateway.
	bctx, bcancel := context.WithCancel(context.Background())
	bdone := make(chan struct{})
	go func() { store.Run(bctx); close(bdone) }()
	go func() { r.done <- r.up.Run(ctx) }()
	t.Cleanup(func() { r.stop(t); bcancel(); <-bdone })
	return r
}

func (r *running) stop(t *testing.T) {
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		r.done <- nil
	case <-time.After(15 * time.Second):
		var stacks strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		t.Fatalf("Run did not return within 15s of cancel; goroutines:\n%s", stacks.String())
	}
}

// seqsOf decodes the seq of every data message, in arrival order.
func seqsOf(t testing.TB, msgs []testbroker.Message) []uint64 {
	var out []uint64
	for _, m := range msgs {
		if m.Topic != "test/data" {
			continue
		}
		var v struct{ Seq uint64 }
		if err := json.Unmarshal(m.Payload, &v); err != nil {
			t.Fatalf("bad payload %q", m.Payload)
		}
		out = append(out, v.Seq)
	}
	return out
}

// covers reports whether every seq 1..n is among seqs.
func covers(seqs []uint64, n int) bool {
	seen := make(map[uint64]bool, len(seqs))
	for _, s := range seqs {
		seen[s] = true
	}
	for i := 1; i <= n; i++ {
		if !seen[uint64(i)] {
			return false
		}
	}
	return true
}

func waitEmpty(t *testing.T, b *buffer.Buffer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.Stats().Readings != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("buffer still holds %d readings", b.Stats().Readings)
		}
		select {
		case <-b.Committed():
		case <-time.After(20 * time.Millisecond): // acks commit without new records
		}
	}
}

func TestPublishesEveryRecordInOrder(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		store := openBuffer(t)
		const n = 2000
		fill(t, store, n)
		r := start(t, store, []string{br.URL()})
		msgs := sub.WaitFor(t, 30*time.Second, "all records", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), n) })
		seqs := seqsOf(t, msgs)
		for i, s := range seqs {
			if s != uint64(i+1) {
				t.Fatalf("message %d has seq %d: not in order without a reconnect", i, s)
			}
		}
		waitEmpty(t, store)
		if got := r.up.Published(); got != n {
			t.Errorf("published %d, want %d", got, n)
		}
		if r.up.Broker() != br.URL() {
			t.Errorf("broker in use %q", r.up.Broker())
		}
		// New records after the backlog flow too.
		fill(t, store, 10)
		sub.WaitFor(t, 10*time.Second, "records appended later", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), n+10) })
	})
}

func TestStatusBirthAndOfflineOnStop(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/status")
		store := openBuffer(t)
		r := start(t, store, []string{br.URL()})
		sub.WaitFor(t, 10*time.Second, "online status", func(m []testbroker.Message) bool {
			return len(m) > 0 && string(m[len(m)-1].Payload) == `{"state":"online","version":"test"}`
		})
		r.stop(t)
		sub.WaitFor(t, 10*time.Second, "offline status", func(m []testbroker.Message) bool {
			return string(m[len(m)-1].Payload) == `{"state":"offline"}`
		})
		// Retained: a new subscriber sees offline.
		late := testbroker.Subscribe(t, br.Addr(), "test/status")
		late.WaitFor(t, 5*time.Second, "retained offline", func(m []testbroker.Message) bool {
			return len(m) == 1 && m[0].Retain && string(m[0].Payload) == `{"state":"offline"}`
		})
	})
}

// TestWillOnLostConnection: when the connection drops without a goodbye,
// the broker publishes the retained will; the uplink reconnects by itself.
func TestWillOnLostConnection(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/status")
		store := openBuffer(t)
		r := start(t, store, []string{br.URL()})
		sub.WaitFor(t, 10*time.Second, "online status", func(m []testbroker.Message) bool { return len(m) > 0 })
		r.drop(t)
		sub.WaitFor(t, 10*time.Second, "will after a lost connection", func(m []testbroker.Message) bool {
			for _, x := range m {
				if string(x.Payload) == `{"state":"offline"}` {
					return true
				}
			}
			return false
		})
		// And it comes back online by itself.
		sub.WaitFor(t, 10*time.Second, "online again", func(m []testbroker.Message) bool {
			return string(m[len(m)-1].Payload) == `{"state":"online","version":"test"}`
		})
	})
}

// TestBrokerKilledAndRestarted: the broker dies mid-backlog; after it comes
// back every record arrives, resends allowed, and the buffer drains.
func TestBrokerKilledAndRestarted(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		store := openBuffer(t)
		const n = 3000
		fill(t, store, n)
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		start(t, store, []string{br.URL()}, func(c *Config) { c.MaxInflight = 4 })
		sub.WaitFor(t, 20*time.Second, "some records", func(m []testbroker.Message) bool { return len(seqsOf(t, m)) >= 200 })
		br.Kill()
		before := store.Stats().Readings
		if before == 0 {
			t.Skip("the backlog drained before the broker was killed; nothing to test")
		}
		br.Restart()
		sub2 := testbroker.Subscribe(t, br.Addr(), "test/#")
		waitEmpty(t, store)
		got := append(seqsOf(t, sub.Messages()), seqsOf(t, sub2.Messages())...)
		if !covers(got, n) {
			t.Fatalf("after the restart, not every seq 1..%d arrived (%d messages)", n, len(got))
		}
	})
}

// TestFailoverToNextBroker: the first address refuses, the second serves.
func TestFailoverToNextBroker(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		dead := fmt.Sprintf("tcp://127.0.0.1:%d", testbroker.FreePort(t))
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		store := openBuffer(t)
		fill(t, store, 100)
		r := start(t, store, []string{dead, br.URL()})
		sub.WaitFor(t, 10*time.Second, "records via the second broker", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 100) })
		if r.up.Broker() != br.URL() {
			t.Errorf("broker in use %q, want %q", r.up.Broker(), br.URL())
		}
	})
}

func TestQoS0AndQoS2(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		for _, qos := range []byte{0, 2} {
			t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
				br := testbroker.Start(t)
				sub := testbroker.Subscribe(t, br.Addr(), "test/#")
				store := openBuffer(t)
				fill(t, store, 300)
				start(t, store, []string{br.URL()}, func(c *Config) { c.QoS = qos })
				msgs := sub.WaitFor(t, 20*time.Second, "all records", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 300) })
				for i, s := range seqsOf(t, msgs) {
					if s != uint64(i+1) {
						t.Fatalf("message %d has seq %d", i, s)
					}
				}
				waitEmpty(t, store)
			})
		}
	})
}

// TestIdleConnectionStays: an idle connection to a live broker is kept for
// many keepalives: the client's pings (paho.mqtt.golang looks whether to
// ping only every keepalive/4) always come before the silence watchdog
// gives the broker up.
func TestIdleConnectionStays(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		logs := &testlog.Sink{}
		r := start(t, openBuffer(t), []string{br.URL()}, func(c *Config) {
			c.KeepAlive = time.Second
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		})
		waitFor(t, 5*time.Second, "connected", func() bool { return r.up.Broker() != "" })
		window := time.NewTimer(5 * time.Second)
		<-window.C // an observation window of five keepalives
		if n := r.up.Connects(); n != 1 || strings.Contains(logs.String(), "mqtt_broker_unresponsive") {
			t.Errorf("%d connections in five idle keepalives:\n%s", n, logs.String())
		}
	})
}

// TestQoS0LeavesFlashOnceTheBrokerHasIt: readings published at QoS 0 stay
// on flash until a PINGREQ written after them is answered, which a broker
// does only once it has read them: a hung broker's socket takes the bytes,
// and they are not lost with it.
func TestQoS0LeavesFlashOnceTheBrokerHasIt(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/data")
		store := openBuffer(t)
		r := start(t, store, []string{br.URL()}, func(c *Config) { c.QoS, c.KeepAlive = 0, 30*time.Second })
		waitFor(t, 10*time.Second, "connected", func() bool { return r.up.Broker() != "" })
		br.Stop() // the broker hangs: its socket still takes what is written
		fill(t, store, 20)
		window := time.NewTimer(time.Second)
		<-window.C // an observation window: the uplink writes all 20 into the socket
		if n := store.Stats().Readings; n != 20 {
			t.Errorf("%d readings on flash while the broker hangs, want all 20", n)
		}
		br.Continue()
		waitEmpty(t, store)
		sub.WaitFor(t, 10*time.Second, "every reading", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 20) })
	})
}
