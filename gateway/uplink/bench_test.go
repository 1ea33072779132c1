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
	b.Run("edgegw", func(b *testing.B) {
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
				Brokers: []string{br.URL()}, ClientID: "bench-edgegw", QoS: 1, KeepAlive: 30 * time.Second,
				ConnectTimeout: 5 * time.Second, MaxInflight: window, StatusTopic: "bench/status",
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
	})
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
