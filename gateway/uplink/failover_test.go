package uplink

import (
	"fmt"
	"testing"
	"time"

	"edgegw/buffer"
	"edgegw/internal/testbroker"
)

// descents counts where a stream goes back in seq: only a resend after a
// reconnect may do that.
func descents(seqs []uint64) int {
	n := 0
	for i := 1; i < len(seqs); i++ {
		if seqs[i] < seqs[i-1] {
			n++
		}
	}
	return n
}

// union merges what several subscribers received.
func union(t *testing.T, subs ...*testbroker.Subscriber) []uint64 {
	var all []uint64
	for _, s := range subs {
		seqs := seqsOf(t, s.Messages())
		if d := descents(seqs); d > 4 {
			t.Errorf("a broker's stream goes back %d times: more than reconnects explain", d)
		}
		all = append(all, seqs...)
	}
	return all
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling state that has no event to wait on
	}
}

// TestFailover loses the broker in use in each way a broker goes away; the
// union of what the brokers received holds every seq, and publishing goes
// on at the next broker of the list.
func TestFailover(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		for _, tc := range []struct {
			name string
			lose func(*testbroker.Broker)
		}{
			{"killed", func(b *testbroker.Broker) { b.Kill() }},
			{"hung", func(b *testbroker.Broker) { b.Stop() }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a, b, c := testbroker.Start(t), testbroker.Start(t), testbroker.Start(t)
				subA := testbroker.Subscribe(t, a.Addr(), "test/#")
				subB := testbroker.Subscribe(t, b.Addr(), "test/#")
				subC := testbroker.Subscribe(t, c.Addr(), "test/#")
				store := openBuffer(t)
				const n = 3000
				fill(t, store, n)
				r := start(t, store, []string{a.URL(), b.URL(), c.URL()}, func(c *Config) {
					c.MaxInflight = 8
					c.KeepAlive = time.Second
				})
				subA.WaitFor(t, 20*time.Second, "records at A", func(m []testbroker.Message) bool { return len(seqsOf(t, m)) >= 300 })
				lost := time.Now()
				tc.lose(a)
				waitFor(t, 20*time.Second, "failover to B", func() bool { return r.up.Broker() == b.URL() })
				t.Logf("%s: on B %s after losing A", tc.name, time.Since(lost).Round(time.Millisecond))
				waitEmpty(t, store)
				if got := union(t, subA, subB, subC); !covers(got, n) {
					t.Fatalf("not every seq 1..%d arrived (%d messages)", n, len(got))
				}
				if len(seqsOf(t, subC.Messages())) != 0 {
					t.Error("C received readings: the next broker after A is B")
				}
			})
		}
	})
}

func TestRefusingFirstBrokerAndAllAwayThenBack(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		refusing := fmt.Sprintf("tcp://127.0.0.1:%d", testbroker.FreePort(t))
		b := testbroker.Start(t)
		subB := testbroker.Subscribe(t, b.Addr(), "test/#")
		store := openBuffer(t)
		fill(t, store, 500)
		r := start(t, store, []string{refusing, b.URL()})
		subB.WaitFor(t, 10*time.Second, "records via B", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 500) })

		// Every broker away: readings pile up, then all arrive once B is back.
		b.Kill()
		waitFor(t, 10*time.Second, "the loss to be noticed", func() bool { return r.up.Broker() == "" })
		fill(t, store, 700)
		b.Restart()
		subB2 := testbroker.Subscribe(t, b.Addr(), "test/#")
		subB2.WaitFor(t, 20*time.Second, "the readings taken while away", func(m []testbroker.Message) bool {
			seqs := seqsOf(t, m)
			seen := map[uint64]bool{}
			for _, s := range seqs {
				seen[s] = true
			}
			for s := uint64(501); s <= 1200; s++ {
				if !seen[s] {
					return false
				}
			}
			return true
		})
		waitEmpty(t, store)
	})
}

// TestHAProxyFrontLosesBackend: the gateway knows one address, an haproxy
// front; the broker behind it dies; the front sends the reconnect to the
// other broker, bridged with the first.
func TestHAProxyFrontLosesBackend(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		a := testbroker.Start(t)
		b := testbroker.Start(t, testbroker.BridgeTo(a))
		front := testbroker.StartHAProxy(t, a, b)
		subA := testbroker.Subscribe(t, a.Addr(), "test/#")
		subB := testbroker.Subscribe(t, b.Addr(), "test/#")
		store := openBuffer(t)
		const n = 2000
		fill(t, store, n)
		start(t, store, []string{front.URL()}, func(c *Config) { c.MaxInflight = 8 })
		subA.WaitFor(t, 20*time.Second, "records at A", func(m []testbroker.Message) bool { return len(seqsOf(t, m)) >= 200 })
		a.Kill()
		waitEmpty(t, store)
		if got := union(t, subA, subB); !covers(got, n) {
			t.Fatalf("not every seq 1..%d arrived (%d messages)", n, len(got))
		}
	})
}

// TestPermanentRejectionDropsWithoutStorm: readings the broker's ACL refuses
// are dropped, counted and logged; the others flow; nothing is resent in a loop.
func TestPermanentRejectionDropsWithoutStorm(t *testing.T) {
	br := testbroker.Start(t, testbroker.WithACL(t, "topic readwrite test/data", "topic readwrite test/status", "topic read test/#"))
	sub := testbroker.Subscribe(t, br.Addr(), "test/#")
	store := openBuffer(t)
	for i := range 300 {
		if i%100 == 50 {
			store.Append([]byte("deny"))
		} else {
			store.Append([]byte("ok"))
		}
	}
	store.Commit()
	r := start(t, store, []string{br.URL()}, func(c *Config) {
		c.Compose = func(dst []byte, rec buffer.Record) (string, []byte, error) {
			topic := "test/data"
			if string(rec.Data) == "deny" {
				topic = "test/denied"
			}
			return topic, fmt.Appendf(dst, `{"seq":%d}`, rec.Seq), nil
		}
	})
	waitEmpty(t, store)
	if got := r.up.Rejected(); got != 3 {
		t.Fatalf("rejected %d, want the 3 denied readings", got)
	}
	seqs := seqsOf(t, sub.Messages())
	if len(seqs) != 297 || descents(seqs) != 0 {
		t.Fatalf("%d readings delivered, %d descents; want 297 in order", len(seqs), descents(seqs))
	}
}
