package uplink

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"edgegw/buffer"
	"edgegw/gateway/batch"
	"edgegw/internal/testbroker"
)

// payload200 is the size of a typical reading.
var payload200 = []byte(`"ts":"2026-11-22T12:00:00.123Z","device":"meter1","values":{"voltage_l1":230.1,"voltage_l2":229.8,"voltage_l3":231.0,"current_l1":5.1,"power_total":3512.4,"energy_total":1234.5},"errors":{}}`)

func drainSize() int {
	if n, err := strconv.Atoi(os.Getenv("EDGEGW_DRAIN_N")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

// BenchmarkDrainToBroker drains a backlog to a real local Mosquitto at QoS 1
// with a window of 64, side by side with a bare paho.golang publisher
// using the same window, payload size and broker. Run with -benchtime 1x;
// EDGEGW_DRAIN_N sets the backlog (1,000,000 by default).
func BenchmarkDrainToBroker(b *testing.B) {
	n := drainSize()
	br := testbroker.Start(b)
	const window = 64
	// MQTT 5 and 3.1.1 side by side, each mode in turn.
	for _, proto := range []Protocol{MQTT5, MQTT311} {
		suffix := map[Protocol]string{MQTT5: "", MQTT311: "-3.1.1"}[proto]
		b.Run("edgegw"+suffix, func(b *testing.B) { benchDrain(b, br, n, window, Batching{}, proto) })
		// As a backlog drains with batch_max = 1000 (batch_bytes 64 KiB: about
		// 280 of these readings a message) and no linger.
		b.Run("edgegw-batches"+suffix, func(b *testing.B) {
			benchDrain(b, br, n, window, Batching{Max: 1000, Topic: "bench/batch"}, proto)
		})
		b.Run("edgegw-batches-zstd"+suffix, func(b *testing.B) {
			benchDrain(b, br, n, window, Batching{Max: 1000, Topic: "bench/batch", Encoding: batch.Zstd}, proto)
		})
	}
	b.Run("bare-paho", func(b *testing.B) {
		for range b.N {
			conn, err := net.Dial("tcp", br.Addr())
			if err != nil {
				b.Fatal(err)
			}
			cli := paho.NewClient(paho.ClientConfig{Conn: conn})
			ctx := context.Background()
			if _, err := cli.Connect(ctx, &paho.Connect{ClientID: "bench-bare", CleanStart: true, KeepAlive: 30}); err != nil {
				b.Fatal(err)
			}
			sem := make(chan struct{}, window)
			var wg sync.WaitGroup
			var failed sync.Once
			b.ResetTimer()
			for i := range n {
				sem <- struct{}{}
				wg.Add(1)
				payload := fmt.Appendf(nil, `{"seq":%d,%s`, i+1, payload200)
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					if _, err := cli.Publish(ctx, &paho.Publish{Topic: "bench/bare", QoS: 1, Payload: payload}); err != nil {
						failed.Do(func() { b.Error(err) })
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			cli.Disconnect(&paho.Disconnect{})
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "readings/s")
	})
}

// BenchmarkFailover measures, with default settings (keepalive 30s,
// connect_timeout 5s), the time from losing the broker in use to the first
// reading the next broker receives: killed (its port then refuses) and hung
// (SIGSTOP: the socket stays open, nothing answers). Run with -benchtime 1x.
func BenchmarkFailover(b *testing.B) {
	for _, tc := range []struct {
		name string
		lose func(*testbroker.Broker)
	}{
		{"killed", func(br *testbroker.Broker) { br.Kill() }},
		{"hung", func(br *testbroker.Broker) { br.Stop() }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				a, next := testbroker.Start(b), testbroker.Start(b)
				sub := testbroker.Subscribe(b, next.Addr(), "bench/#")
				store, err := buffer.Open(filepath.Join(b.TempDir(), "buffer.db"), buffer.Options{})
				if err != nil {
					b.Fatal(err)
				}
				bctx, bcancel := context.WithCancel(context.Background())
				bdone := make(chan struct{})
				go func() { store.Run(bctx); close(bdone) }()
				up := New(Config{
					Brokers: []string{a.URL(), next.URL()}, ClientID: "bench-failover", QoS: 1,
					KeepAlive: 30 * time.Second, ConnectTimeout: 5 * time.Second, MaxInflight: 64,
					StatusTopic: "bench/status", Logger: slog.New(slog.DiscardHandler),
					Compose: func(dst []byte, rec buffer.Record) (string, []byte, error) {
						return "bench/data", append(dst, rec.Data...), nil
					},
				}, store)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error)
				go func() { done <- up.Run(ctx) }()
				// A steady 100 readings/s, as a busy gateway makes.
				stopFeed := make(chan struct{})
				fed := make(chan struct{})
				go func() {
					defer close(fed)
					t := time.NewTicker(10 * time.Millisecond)
					defer t.Stop()
					for {
						select {
						case <-stopFeed:
							return
						case <-t.C:
							store.Append(payload200)
						}
					}
				}()
				for up.Published() < 50 {
					time.Sleep(5 * time.Millisecond)
				}
				b.StartTimer()
				tc.lose(a)
				sub.WaitFor(b, 2*time.Minute, "a reading at the next broker", func(m []testbroker.Message) bool {
					for _, x := range m {
						if x.Topic == "bench/data" {
							return true
						}
					}
					return false
				})
				b.StopTimer()
				close(stopFeed)
				<-fed
				cancel()
				<-done
				bcancel()
				<-bdone
				store.Close()
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/failover")
		})
	}
}

// benchDrain drains a backlog of n readings through an Uplink.
func benchDrain(b *testing.B, br *testbroker.Broker, n, window int, batching Batching, proto Protocol) {
	for range b.N {
		b.StopTimer()
		store, err := buffer.Open(filepath.Join(b.TempDir(), "buffer.db"), buffer.Options{MaxBytes: 8 << 30})
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			store.Append(payload200)
			if i%100000 == 99999 {
				store.Commit()
			}
		}
		store.Commit()
		bctx, bcancel := context.WithCancel(context.Background())
		bdone := make(chan struct{})
		go func() { store.Run(bctx); close(bdone) }()
		up := New(Config{
			Brokers: []string{br.URL()}, Protocol: proto, ClientID: "bench-edgegw", QoS: 1, KeepAlive: 30 * time.Second,
			ConnectTimeout: 5 * time.Second, MaxInflight: window, StatusTopic: "bench/status", Batch: batching,
			Compose: func(dst []byte, rec buffer.Record) (string, []byte, error) {
				dst = append(dst, `{"seq":`...)
				dst = strconv.AppendUint(dst, rec.Seq, 10)
				dst = append(dst, ',')
				return "bench/edgegw", append(dst, rec.Data...), nil
			},
			Logger: slog.New(slog.DiscardHandler),
		}, store)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		b.StartTimer()
		go func() { done <- up.Run(ctx) }()
		for up.Published() < uint64(n) {
			time.Sleep(time.Millisecond) // polling a counter: the benchmark's clock, not a test wait
		}
		b.StopTimer()
		cancel()
		<-done
		bcancel()
		<-bdone
		store.Close()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}

// BenchmarkFallback measures, with protocol auto and default settings, the
// time from starting the uplink against a broker that closes an MQTT 5
// CONNECT without a CONNACK (as Mosquitto 1.4 and RabbitMQ 3.10 do) to the
// first reading it acknowledged over 3.1.1: the refused CONNECT, the
// fallback and the 3.1.1 session. Run with -benchtime 20x.
func BenchmarkFallback(b *testing.B) {
	br := testbroker.Start(b)
	front := testbroker.StartV311Front(b, br.Addr(), testbroker.CloseOnV5)
	var worst time.Duration
	for i := range b.N {
		b.StopTimer()
		store, err := buffer.Open(filepath.Join(b.TempDir(), "buffer.db"), buffer.Options{})
		if err != nil {
			b.Fatal(err)
		}
		store.Append(payload200)
		store.Commit()
		up := New(Config{
			Brokers: []string{front.URL()}, ClientID: fmt.Sprintf("bench-fallback-%d", i), QoS: 1,
			KeepAlive: 30 * time.Second, ConnectTimeout: 5 * time.Second, StatusTopic: "bench/status",
			Logger: slog.New(slog.DiscardHandler),
			Compose: func(dst []byte, rec buffer.Record) (string, []byte, error) {
				return "bench/data", append(dst, rec.Data...), nil
			},
		}, store)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		b.StartTimer()
		began := time.Now()
		go func() { done <- up.Run(ctx) }()
		for up.Published() < 1 {
			time.Sleep(100 * time.Microsecond) // polling a counter: the benchmark's clock
		}
		b.StopTimer()
		worst = max(worst, time.Since(began))
		cancel()
		<-done
		store.Close()
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)*1000, "ms/first-reading")
	b.ReportMetric(worst.Seconds()*1000, "ms-worst")
}
