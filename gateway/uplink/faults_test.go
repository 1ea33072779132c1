package uplink

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	_ "github.com/Shopify/toxiproxy/v2/toxics" // registers the toxics
	"github.com/rs/zerolog"

	"edgegw/internal/testbroker"
)

// faultyLink is a Toxiproxy proxy, in this process, between gateway and broker.
type faultyLink struct {
	proxy *toxiproxy.Proxy
	addr  string
}

func newFaultyLink(t *testing.T, upstream string) *faultyLink {
	t.Helper()
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	addr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	p := toxiproxy.NewProxy(server, "mqtt", addr, upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &faultyLink{proxy: p, addr: addr}
}

func (l *faultyLink) url() string { return "tcp://" + l.addr }

// add adds a toxic: typ is a Toxiproxy toxic type, stream "upstream"
// (gateway to broker) or "downstream", attrs its JSON attributes.
func (l *faultyLink) add(t *testing.T, name, typ, stream, attrs string) {
	t.Helper()
	js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"attributes":%s}`, name, typ, stream, attrs)
	if _, err := l.proxy.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatal(err)
	}
}

func (l *faultyLink) remove(t *testing.T, name string) {
	if err := l.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

func TestNetworkFaults(t *testing.T) {
	t.Run("latency", func(t *testing.T) {
		br := testbroker.Start(t)
		link := newFaultyLink(t, br.Addr())
		link.add(t, "up", "latency", "upstream", `{"latency":100,"jitter":20}`)
		link.add(t, "down", "latency", "downstream", `{"latency":100,"jitter":20}`)
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		store := openBuffer(t)
		fill(t, store, 300)
		start(t, store, []string{link.url()})
		msgs := sub.WaitFor(t, 30*time.Second, "every reading", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 300) })
		if d := descents(seqsOf(t, msgs)); d != 0 {
			t.Errorf("out of order %d times over a slow link", d)
		}
		waitEmpty(t, store)
	})
	t.Run("bandwidth trickle", func(t *testing.T) {
		br := testbroker.Start(t)
		link := newFaultyLink(t, br.Addr())
		link.add(t, "slow", "bandwidth", "upstream", `{"rate":8}`) // 8 KB/s
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		store := openBuffer(t)
		fill(t, store, 300)
		start(t, store, []string{link.url()})
		sub.WaitFor(t, 30*time.Second, "every reading", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 300) })
		waitEmpty(t, store)
	})
	t.Run("silence", func(t *testing.T) {
		// The link goes quiet without closing: the gateway gives it up
		// after the keepalive and its grace, and takes the next broker.
		br, next := testbroker.Start(t), testbroker.Start(t)
		link := newFaultyLink(t, br.Addr())
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		subNext := testbroker.Subscribe(t, next.Addr(), "test/#")
		store := openBuffer(t)
		fill(t, store, 300)
		r := start(t, store, []string{link.url(), next.URL()}, func(c *Config) {
			c.KeepAlive = time.Second
			c.MaxInflight = 4
		})
		sub.WaitFor(t, 10*time.Second, "some readings", func(m []testbroker.Message) bool { return len(seqsOf(t, m)) > 20 })
		link.add(t, "quiet-up", "timeout", "upstream", `{"timeout":0}`)
		link.add(t, "quiet-down", "timeout", "downstream", `{"timeout":0}`)
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
		link := newFaultyLink(t, br.Addr())
		link.add(t, "cut", "limit_data", "upstream", `{"bytes":7001}`)
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		store := openBuffer(t)
		const n = 400
		fill(t, store, n)
		start(t, store, []string{link.url()}, func(c *Config) { c.MaxInflight = 8 })
		sub.WaitFor(t, 60*time.Second, "every reading despite the cuts", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), n) })
		link.remove(t, "cut")
		waitEmpty(t, store)
	})
}
