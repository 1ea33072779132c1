package gateway

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	gmodbus "github.com/goburrow/modbus"

	"edgegw/drivers/modbus/simulator"
	"edgegw/internal/testbroker"
	"edgegw/internal/testpty"
)

var (
	benchMbusd = flag.String("bench.mbusd", os.Getenv("MBUSD"), "mbusd 0.5.2 binary to measure against (scripts/bench/modbus-server.sh builds it); empty skips it")
	benchFor   = flag.Duration("bench.duration", 10*time.Second, "how long each master reads in BenchmarkModbusServer")
)

// pacedLine is a serial line at baud between a gateway end and a device end
// served by the simulator of sharedConfig's device; moved counts the bytes
// that crossed it.
func pacedLine(b *testing.B, baud int) (gatewayEnd string, sim *simulator.Server, moved *atomic.Int64) {
	moved = &atomic.Int64{}
	gwEnd, devEnd := testpty.PacedLine(b, 10*time.Second/time.Duration(baud), moved) // 8N1
	sim = newSharedSimulator(b, "")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	devPort := testpty.Open(b, devEnd)
	go func() { served <- sim.ServeSerial(ctx, devPort, false) }()
	b.Cleanup(func() { cancel(); <-served })
	return gwEnd, sim, moved
}

// readFor reads 10 holding registers back to back through addr for d and
// returns the reads' latencies.
func readFor(b *testing.B, addr string, d time.Duration) []time.Duration {
	h := gmodbus.NewTCPClientHandler(addr)
	h.SlaveId, h.Timeout = 1, 2*time.Second
	defer h.Close()
	c := gmodbus.NewClient(h)
	var lat []time.Duration
	for stop := time.Now().Add(d); time.Now().Before(stop); {
		start := time.Now()
		if _, err := c.ReadHoldingRegisters(100, 10); err != nil {
			b.Fatalf("read through %s: %v", addr, err)
		}
		lat = append(lat, time.Since(start))
	}
	return lat
}

func percentile(lat []time.Duration, p float64) time.Duration {
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func report(b *testing.B, name string, lat []time.Duration, d time.Duration) float64 {
	rate := float64(len(lat)) / d.Seconds()
	b.ReportMetric(rate, name+"-reads/s")
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, name+"-p99-ms")
	return rate
}

// BenchmarkModbusServer measures edgegw's Modbus server beside mbusd 0.5.2
// on one 19,200-baud RTU line (a paced pty pair, the simulator answering),
// one after the other: pass-through reads of 10 registers with edgegw's own
// polling idle, and cached reads of registers polled within cache. Run it
// with -benchtime 1x (scripts/bench/modbus-server.sh).
func BenchmarkModbusServer(b *testing.B) {
	d := *benchFor
	gwEnd, _, _ := pacedLine(b, 19200)
	var mbusdRate float64
	var mbusdLat []time.Duration
	if *benchMbusd != "" {
		listen := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(b))
		_, p, _ := net.SplitHostPort(listen)
		cmd := exec.Command(*benchMbusd, "-d", "-L", "-", "-v", "0", "-p", gwEnd, "-s", "19200", "-m", "8N1", "-A", "127.0.0.1", "-P", p, "-R", "1")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		testbroker.WaitListening(b, listen, 5*time.Second)
		mbusdLat = readFor(b, listen, d)
		mbusdRate = report(b, "mbusd", mbusdLat, d)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	// Pass-through: polls once at start (interval 1h), then idle; no cache.
	listen, _ := runShared(b, fmt.Sprintf("protocol = \"modbus-rtu\"\ndevice = %q\nbaud = 19200", gwEnd), "1h", "cache = \"0s\"")
	lat := readFor(b, listen, d)
	rate := report(b, "edgegw-pass", lat, d)
	if mbusdRate > 0 {
		b.ReportMetric(rate/mbusdRate, "pass-reads-ratio")
		b.ReportMetric(float64(percentile(lat, 0.99))/float64(percentile(mbusdLat, 0.99)), "pass-p99-ratio")
	}
}

// BenchmarkModbusServerCached: reads of 10 registers the poller reads every
// 200 ms, with cache = "1s", through edgegw on a 19,200-baud line.
func BenchmarkModbusServerCached(b *testing.B) {
	d := *benchFor
	gwEnd, _, _ := pacedLine(b, 19200)
	listen, _ := runShared(b, fmt.Sprintf("protocol = \"modbus-rtu\"\ndevice = %q\nbaud = 19200", gwEnd), "200ms",
		"cache = \"1s\"\n[[device]]\nname = \"block\"\nbus = \"b\"\nunit_id = 1\ninterval = \"200ms\"\n  [[device.point]]\n  name = \"first\"\n  address = 100\n  [[device.point]]\n  name = \"last\"\n  address = 109")
	report(b, "edgegw-cached", readFor(b, listen, d), d)
}

// BenchmarkModbusServerSharing: on a 9,600-baud line, edgegw polls its device
// every 500 ms while an outside master reads 10 registers as fast as it can:
// the polls' interval, the master's share and how busy the line is.
func BenchmarkModbusServerSharing(b *testing.B) {
	d := *benchFor
	gwEnd, _, moved := pacedLine(b, 9600)
	const interval = 500 * time.Millisecond
	listen, polls := runShared(b, fmt.Sprintf("protocol = \"modbus-rtu\"\ndevice = %q\nbaud = 9600", gwEnd), interval.String(), "cache = \"0s\"")
	before, bytesBefore, start := len(polls.polls()), moved.Load(), time.Now()
	lat := readFor(b, listen, d)
	wall := time.Since(start)
	times := polls.polls()[before:]
	var worst time.Duration
	for i := 1; i < len(times); i++ {
		worst = max(worst, times[i].Sub(times[i-1]))
	}
	busy := float64(moved.Load()-bytesBefore) * float64(10*time.Second/9600) / float64(wall)
	b.ReportMetric(float64(len(times))/(wall.Seconds()/interval.Seconds()), "polls-kept")
	b.ReportMetric(float64(worst.Microseconds())/1000, "worst-poll-gap-ms")
	b.ReportMetric(busy, "line-busy")
	report(b, "outside", lat, wall)
}
