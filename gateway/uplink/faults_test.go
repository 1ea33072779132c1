package uplink

import (
	"testing"
	"time"

	_ "github.com/Shopify/toxiproxy/v2/toxics" // registers the toxics

	"edgegw/internal/testbroker"
)

func TestNetworkFaults(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		t.Run("latency", func(t *testing.T) {
			br := testbroker.Start(t)
			link := testbroker.NewFaultyLink(t, br.Addr())
			link.Add(t, "up", "latency", "upstream", `{"latency":100,"jitter":20}`)
			link.Add(t, "down", "latency", "downstream", `{"latency":100,"jitter":20}`)
			sub := testbroker.Subscribe(t, br.Addr(), "test/#")
			store := openBuffer(t)
			fill(t, store, 300)
			start(t, store, []string{link.URL()})
			msgs := sub.WaitFor(t, 30*time.Second, "every reading", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 300) })
			if d := descents(seqsOf(t, msgs)); d != 0 {
				t.Errorf("out of order %d times over a slow link", d)
			}
			waitEmpty(t, store)
		})
		t.Run("bandwidth trickle", func(t *testing.T) {
			br := testbroker.Start(t)
			link := testbroker.NewFaultyLink(t, br.Addr())
			link.Add(t, "slow", "bandwidth", "upstream", `{"rate":8}`) // 8 KB/s
			sub := testbroker.Subscribe(t, br.Addr(), "test/#")
			store := openBuffer(t)
			fill(t, store, 300)
			start(t, store, []string{link.URL()})
			sub.WaitFor(t, 30*time.Second, "every reading", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 300) })
			waitEmpty(t, store)
		})
		t.Run("silence", func(t *testing.T) {
			// The link goes quiet without closing: the gateway gives it up
			// after the keepalive and its grace, and takes the next broker.
			br, next := testbroker.Start(t), testbroker.Start(t)
			link := testbroker.NewFaultyLink(t, br.Addr())
			sub := testbroker.Subscribe(t, br.Addr(), "test/#")
			subNext := testbroker.Subscribe(t, next.Addr(), "test/#")
			store := openBuffer(t)
			fill(t, store, 300)
			r := start(t, store, []string{link.URL(), next.URL()}, func(c *Config) {
				c.KeepAlive = time.Second
				c.MaxInflight = 4
			})
			sub.WaitFor(t, 10*time.Second, "some readings", func(m []testbroker.Message) bool { return len(seqsOf(t, m)) > 20 })
			link.Add(t, "quiet-up", "timeout", "upstream", `{"timeout":0}`)
			link.Add(t, "quiet-down", "timeout", "downstream", `{"timeout":0}`)
			fill(t, store, 300)
			waitEmpty(t, store)
			if r.up.Broker() != next.URL() {
				t.Errorf("broker in use %q, want the next one", r.up.Broker())
			}
			if got := union(t, sub, subNext); !covers(got, 600) {
				t.Fatalf("not every seq arrived (%d messages)", len(got))
			}
		})
		t.Run("reset mid-packet", func(t *testing.T) {
			// Every connection is cut after 7,001 bytes, in the middle of a
			// packet: each makes some progress, nothing is lost.
			br := testbroker.Start(t)
			link := testbroker.NewFaultyLink(t, br.Addr())
			link.Add(t, "cut", "limit_data", "upstream", `{"bytes":7001}`)
			sub := testbroker.Subscribe(t, br.Addr(), "test/#")
			store := openBuffer(t)
			const n = 400
			fill(t, store, n)
			start(t, store, []string{link.URL()}, func(c *Config) { c.MaxInflight = 8 })
			sub.WaitFor(t, 60*time.Second, "every reading despite the cuts", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), n) })
			link.Remove(t, "cut")
			waitEmpty(t, store)
		})
	})
}
