package uplink

import (
	"context"
	"flag"
	"log/slog"
	"slices"
	"testing"
	"time"

	"edgegw/buffer"
	"edgegw/internal/testbroker"
)

var outage = flag.Duration("return.outage", 60*time.Second, "BenchmarkReturnAfterOutage: how long the only broker is away")

// BenchmarkReturnAfterOutage: gateways whose only broker goes away for
// -return.outage, ten with today's pacing and ten with the one backoff of
// before (250 ms doubling to 30 s for every failure), side by side, each
// with its own broker. It reports the median and the worst time from the
// broker being back to the first reading it acknowledges.
func BenchmarkReturnAfterOutage(b *testing.B) {
	paces := []struct {
		name string
		pace Reconnect
	}{
		{"edgegw", Reconnect{}},
		{"one-backoff", Reconnect{Away: DefaultBackoff, Failed: DefaultBackoff}},
	}
	const runs = 10
	for range b.N {
		type gw struct {
			pace   int
			broker *testbroker.Broker
			up     *Uplink
			store  *memStore
		}
		var gws []*gw
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, len(paces)*runs)
		for p := range paces {
			for range runs {
				g := &gw{pace: p, broker: testbroker.Start(b), store: newMemStore()}
				g.up = New(Config{
					Brokers: []string{g.broker.URL()}, ClientID: "bench-return", QoS: 1,
					KeepAlive: 30 * time.Second, ConnectTimeout: 5 * time.Second, Reconnect: paces[p].pace,
					StatusTopic: "bench/status", Logger: slog.New(slog.DiscardHandler),
					Compose: func(dst []byte, rec buffer.Record) (string, []byte, error) {
						return "bench/data", append(dst, rec.Data...), nil
					},
				}, g.store)
				go func() { done <- g.up.Run(ctx) }()
				gws = append(gws, g)
			}
		}
		waitFor(b, 2*time.Minute, "every gateway connected", func() bool {
			for _, g := range gws {
				if g.up.Broker() == "" {
					return false
				}
			}
			return true
		})
		for _, g := range gws {
			g.broker.Kill()
		}
		away := time.NewTimer(*outage)
		<-away.C // the outage itself, not a wait for an event
		back := make([]time.Time, len(gws))
		before := make([]uint64, len(gws))
		for i, g := range gws {
			g.store.append() // a reading taken while away
			before[i] = g.up.Published()
			g.broker.Restart()
			back[i] = time.Now()
		}
		took := make([][]time.Duration, len(paces))
		waitFor(b, 2*time.Minute, "a reading acknowledged after each return", func() bool {
			for i, g := range gws {
				if back[i].IsZero() || g.up.Published() == before[i] {
					continue
				}
				took[g.pace] = append(took[g.pace], time.Since(back[i]))
				back[i] = time.Time{}
			}
			return len(took[0])+len(took[1]) == len(gws)
		})
		cancel()
		for range gws {
			<-done
		}
		for p, ds := range took {
			slices.Sort(ds)
			b.ReportMetric(ds[len(ds)/2].Seconds(), paces[p].name+"-median-s")
			b.ReportMetric(ds[len(ds)-1].Seconds(), paces[p].name+"-max-s")
		}
	}
}
