package testbroker

import (
	"context"
	"fmt"
	"strings"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	_ "github.com/Shopify/toxiproxy/v2/toxics" // registers the toxics
	"github.com/rs/zerolog"
)

// FaultyLink is a Toxiproxy proxy, in this process, between a client and
// a broker: latency, silence and resets (toxics), or the link down (Down).
type FaultyLink struct {
	proxy *toxiproxy.Proxy
	addr  string
}

// NewFaultyLink listens on a free loopback port and forwards to upstream.
func NewFaultyLink(t testing.TB, upstream string) *FaultyLink {
	t.Helper()
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	p := toxiproxy.NewProxy(server, "mqtt", addr, upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &FaultyLink{proxy: p, addr: addr}
}

// URL is the link's tcp:// URL, for the client.
func (l *FaultyLink) URL() string { return "tcp://" + l.addr }

// Add adds a toxic: typ is a Toxiproxy toxic type, stream "upstream"
// (client to broker) or "downstream", attrs its JSON attributes.
func (l *FaultyLink) Add(t testing.TB, name, typ, stream, attrs string) {
	t.Helper()
	js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"attributes":%s}`, name, typ, stream, attrs)
	if _, err := l.proxy.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatal(err)
	}
}

// Remove removes the toxic name.
func (l *FaultyLink) Remove(t testing.TB, name string) {
	t.Helper()
	if err := l.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

// Down closes the link's connections and stops listening: to the client
// the broker is gone. Up brings it back.
func (l *FaultyLink) Down() { l.proxy.Stop() }

// Up listens again after Down.
func (l *FaultyLink) Up(t testing.TB) {
	t.Helper()
	if err := l.proxy.Start(); err != nil {
		t.Fatal(err)
	}
}
