package uplink

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"
	"testing"
	"time"

	"edgegw/internal/testbroker"
)

// TestHungFirstAddressOfAName: a cluster name resolves to two brokers; the
// first accepts TCP and answers nothing. The gateway gives it one connect
// timeout and publishes through the second.
func TestHungFirstAddressOfAName(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		port := testbroker.FreePort(t)
		hung := testbroker.StartAt(t, "127.0.0.2", port)
		good := testbroker.StartAt(t, "127.0.0.3", port)
		sub := testbroker.Subscribe(t, good.Addr(), "test/#")
		hung.Stop()
		resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
			if host != "cluster.test" {
				return nil, fmt.Errorf("no such host %s", host)
			}
			return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}, nil
		}
		store := openBuffer(t)
		fill(t, store, 100)
		broker := fmt.Sprintf("tcp://cluster.test:%d", port)
		r := start(t, store, []string{broker}, func(c *Config) { c.Resolve = resolve })
		sub.WaitFor(t, 15*time.Second, "readings through the second address", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 100) })
		if got := r.up.Broker(); got != broker {
			t.Errorf("Broker() = %q, want the configured %q", got, broker)
		}
		waitEmpty(t, store)
	})
}

// TestFailBack: ordered brokers; the primary dies and the gateway moves
// on; once the primary has been back for FailbackAfter the gateway
// returns to it, leaving the secondary cleanly (no offline will there), and
// no reading is lost on the way.
func TestFailBack(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		a, b := testbroker.Start(t), testbroker.Start(t)
		subA := testbroker.Subscribe(t, a.Addr(), "test/#")
		subB := testbroker.Subscribe(t, b.Addr(), "test/#")
		store := openBuffer(t)
		fill(t, store, 200)
		r := start(t, store, []string{a.URL(), b.URL()}, func(c *Config) {
			c.FailbackAfter = time.Second
			c.Reconnect.Window = 300 * time.Millisecond
		})
		subA.WaitFor(t, 10*time.Second, "readings at the primary", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 200) })
		a.Kill()
		waitFor(t, 10*time.Second, "the move to the secondary", func() bool { return r.up.Broker() == b.URL() })
		fill(t, store, 200)
		a.Restart()
		subA2 := testbroker.Subscribe(t, a.Addr(), "test/#")
		back := time.Now()
		waitFor(t, 15*time.Second, "the return to the primary", func() bool { return r.up.Broker() == a.URL() })
		t.Logf("back on the primary %s after it returned (fail-back after 1s, window 300ms)", time.Since(back).Round(time.Millisecond))
		fill(t, store, 200)
		subA2.WaitFor(t, 10*time.Second, "readings at the primary again", func(m []testbroker.Message) bool {
			seqs := seqsOf(t, m)
			return len(seqs) > 0 && seqs[len(seqs)-1] >= 600
		})
		waitEmpty(t, store)
		if all := union(t, subA, subB, subA2); !covers(all, 600) {
			t.Fatal("a reading was lost on the way")
		}
		for _, m := range subB.Messages() {
			if m.Topic == "test/status" && strings.Contains(string(m.Payload), "offline") {
				t.Errorf("the secondary published the will: the gateway did not leave it cleanly")
			}
		}
	})
}

// TestBusyBrokerBacksOffFurther: a broker that answers "server busy" (or
// "connection rate exceeded") costs the gateway a longer wait before its
// next attempt, even to another broker. Over 3.1.1 the refuser answers
// return code 3, server unavailable, which is taken the same way.
func TestBusyBrokerBacksOffFurther(t *testing.T) {
	bothProtocols(t, testBusyBrokerBacksOffFurther)
}

func testBusyBrokerBacksOffFurther(t *testing.T) {
	for _, code := range []byte{0x89, 0x9F} {
		t.Run(fmt.Sprintf("0x%02x", code), func(t *testing.T) {
			busy := testbroker.StartRefuser(t, code, "")
			good := testbroker.Start(t)
			store := openBuffer(t)
			fill(t, store, 10)
			const wait = 400 * time.Millisecond
			r := start(t, store, []string{busy.URL(), good.URL()}, func(c *Config) {
				c.Reconnect.Busy = func(int) time.Duration { return wait }
			})
			waitFor(t, 10*time.Second, "a connection to the other broker", func() bool { return r.up.Broker() == good.URL() })
			connected := time.Now()
			ans := busy.Answered()
			if len(ans) != 1 {
				t.Fatalf("the busy broker was asked %d times", len(ans))
			}
			if gap := connected.Sub(ans[0]); gap < wait {
				t.Errorf("next attempt %s after the busy answer, want at least %s", gap, wait)
			}
			waitEmpty(t, store)
		})
	}
}

// TestServerReferenceIsFollowed: a broker that answers "use another
// server" with a Server Reference sends the gateway there.
func TestServerReferenceIsFollowed(t *testing.T) {
	for _, code := range []byte{0x9C, 0x9D} {
		t.Run(fmt.Sprintf("0x%02x", code), func(t *testing.T) {
			good := testbroker.Start(t)
			sub := testbroker.Subscribe(t, good.Addr(), "test/#")
			redirect := testbroker.StartRefuser(t, code, good.Addr())
			store := openBuffer(t)
			fill(t, store, 50)
			r := start(t, store, []string{redirect.URL()})
			sub.WaitFor(t, 10*time.Second, "readings at the referred server", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 50) })
			if got := r.up.Broker(); got != good.URL() {
				t.Errorf("Broker() = %q, want the referred %q", got, good.URL())
			}
		})
	}
}

// TestSpreadStartsAtTheIDsPlace: in the spread mode each gateway connects
// first to the broker its client id points at, not to the head of the list.
func TestSpreadStartsAtTheIDsPlace(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		brokers := []*testbroker.Broker{testbroker.Start(t), testbroker.Start(t), testbroker.Start(t)}
		urls := []string{brokers[0].URL(), brokers[1].URL(), brokers[2].URL()}
		used := map[string]bool{}
		for i := range 9 {
			id := fmt.Sprintf("edgegw-spread-%d", i)
			h := fnv.New64a()
			h.Write([]byte(id))
			want := urls[h.Sum64()%3]
			r := start(t, openBuffer(t), urls, func(c *Config) { c.Order, c.ClientID = Spread, id })
			waitFor(t, 10*time.Second, id+" connected", func() bool { return r.up.Broker() != "" })
			if got := r.up.Broker(); got != want {
				t.Errorf("%s on %s, want %s", id, got, want)
			}
			used[r.up.Broker()] = true
		}
		if len(used) != 3 {
			t.Errorf("nine gateways used %d brokers", len(used))
		}
	})
}

// TestServerReferenceOnDisconnectIsFollowed: a broker that takes the
// connection, then closes it with "use another server" and a Server
// Reference, sends the gateway there.
func TestServerReferenceOnDisconnectIsFollowed(t *testing.T) {
	good := testbroker.Start(t)
	sub := testbroker.Subscribe(t, good.Addr(), "test/#")
	mover := testbroker.StartMover(t, good.Addr())
	store := openBuffer(t)
	fill(t, store, 50)
	r := start(t, store, []string{mover.URL()}, func(c *Config) { c.Reconnect.Window = 200 * time.Millisecond })
	sub.WaitFor(t, 10*time.Second, "readings at the referred server", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 50) })
	if got := r.up.Broker(); got != good.URL() {
		t.Errorf("Broker() = %q, want the referred %q", got, good.URL())
	}
	if n := len(mover.Answered()); n != 1 {
		t.Errorf("the moving broker was dialled %d times", n)
	}
}
