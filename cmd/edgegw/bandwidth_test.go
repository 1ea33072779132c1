package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"edgegw/internal/testbroker"
)

var (
	bandwidthFor     = flag.Duration("bandwidth.for", 0, "run TestBandwidth this long (it runs only when set)")
	bandwidthDevices = flag.Int("bandwidth.devices", 10, "simulated SDM630 meters per gateway in TestBandwidth")
)

// countingProxy forwards TCP connections to upstream and counts the bytes
// the clients send: the MQTT packets a gateway puts on the wire.
type countingProxy struct {
	l    net.Listener
	sent atomic.Int64
	wg   sync.WaitGroup
}

func startCountingProxy(t *testing.T, upstream string) *countingProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{l: l}
	t.Cleanup(func() { l.Close(); p.wg.Wait() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(counting{u, &p.sent}, c); u.Close() }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

// counting is a writer that counts what it writes, as it goes.
type counting struct {
	w io.Writer
	n *atomic.Int64
}

func (c counting) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

const bandwidthGateway = `
[gateway]
id = %q
data_dir = %q
[mqtt]
brokers = ["tcp://%s"]
%s
[status]
listen = ""
%s`

// TestBandwidth measures the bytes on the wire (MQTT packets from gateway
// to broker, counted by a proxy in between) per SDM630 meter per hour,
// polled every second from the simulator, for today's every_poll and for
// report = "change" with the profile's deadbands, alone, in batches, in
// zstd batches, and as Sparkplug B DDATA, side by side in one run.
// scripts/bench/bandwidth.sh runs it.
func TestBandwidth(t *testing.T) {
	if *bandwidthFor == 0 {
		t.Skip("set -bandwidth.for to run")
	}
	br := testbroker.Start(t)
	dir := t.TempDir()
	simAddr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	devices := func(report string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "[[bus]]\nname = \"lan\"\nprotocol = \"modbus-tcp\"\naddress = %q\n", simAddr)
		for i := 1; i <= *bandwidthDevices; i++ {
			fmt.Fprintf(&b, "[[device]]\nname = \"meter%d\"\nbus = \"lan\"\nunit_id = %d\ninterval = \"1s\"\nprofile = \"eastron-sdm630\"\nreport = %q\n", i, i, report)
		}
		return b.String()
	}
	// Today's behaviour first; each other mode is measured against it.
	modes := []struct{ name, report, mqtt string }{
		{"every_poll", "every_poll", ""},
		{"change", "change", ""},
		{"change+batches", "change", "batch_max = 1000\nbatch_linger = \"10s\""},
		{"change+batches+zstd", "change", "batch_max = 1000\nbatch_linger = \"10s\"\ncompression = \"zstd\""},
		{"sparkplug", "change", "payload = \"sparkplug\"\n[sparkplug]\ngroup_id = \"plant1\""},
	}
	proxies := map[string]*countingProxy{}
	for i, mode := range modes {
		proxies[mode.name] = startCountingProxy(t, br.Addr())
		cfg := filepath.Join(dir, fmt.Sprintf("mode%d.toml", i))
		doc := fmt.Sprintf(bandwidthGateway, fmt.Sprintf("bw-%d", i), filepath.Join(dir, fmt.Sprint(i)), proxies[mode.name].l.Addr(), mode.mqtt, devices(mode.report))
		if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			startBinary(t, "simulate", "-config", cfg, "-listen", simAddr)
			testbroker.WaitListening(t, simAddr, 10*time.Second)
		}
	}
	start := time.Now()
	for i := range modes {
		startBinary(t, "run", "-config", filepath.Join(dir, fmt.Sprintf("mode%d.toml", i)))
	}
	timer := time.NewTimer(*bandwidthFor)
	<-timer.C // the measurement window
	elapsed := time.Since(start)
	perHour := func(mode string) float64 {
		return float64(proxies[mode].sent.Load()) / float64(*bandwidthDevices) / elapsed.Hours()
	}
	base := perHour(modes[0].name)
	t.Logf("%d SDM630 meters per gateway, polled every 1 s, for %s:", *bandwidthDevices, elapsed.Round(time.Second))
	for _, mode := range modes {
		b := perHour(mode.name)
		t.Logf("  %-20s %10.0f B/device/h  %.3f of every_poll (1/%.1f)", mode.name, b, b/base, base/b)
	}
}
