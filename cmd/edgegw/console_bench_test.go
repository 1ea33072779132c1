package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"edgegw/internal/testbroker"
)

var consoleFor = flag.Duration("bench.console", 20*time.Second, "how long BenchmarkConsole measures each state")

// consoleBenchConfig is 50 SDM630 meters (63 points each) polled every
// second; arguments: data_dir, broker URL, status listen, simulator address.
func consoleBenchConfig(dataDir, broker, status, sim string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "[gateway]\nid = \"bench\"\ndata_dir = %q\n[mqtt]\nbrokers = [%q]\n[status]\nlisten = %q\n", dataDir, broker, status)
	fmt.Fprintf(&sb, "[[bus]]\nname = \"lan\"\nprotocol = \"modbus-tcp\"\naddress = %q\n", sim)
	for i := 1; i <= 50; i++ {
		fmt.Fprintf(&sb, "[[device]]\nname = \"meter%d\"\nbus = \"lan\"\nunit_id = %d\ninterval = \"1s\"\nprofile = \"eastron-sdm630\"\n", i, i)
	}
	return sb.String()
}

// cpuOf is the CPU time of every thread of pid so far.
func cpuOf(b *testing.B, pid int) time.Duration {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("no threads of %d: %v", pid, err)
	}
	var total time.Duration
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that ended
		}
		var ns int64
		fmt.Sscan(string(raw), &ns)
		total += time.Duration(ns)
	}
	return total
}

// BenchmarkConsole: a gateway polling 50 meters of 63 points every second,
// its CPU with the commissioning page closed and open in Chromium (three
// alternating rounds, same run), the page's first render, and its weight.
// Run with -benchtime 1x (scripts/bench/console.sh).
func BenchmarkConsole(b *testing.B) {
	br := testbroker.Start(b)
	dir := b.TempDir()
	simAddr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(b))
	statusAddr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(b))
	cfgPath := filepath.Join(dir, "sensors.toml")
	if err := os.WriteFile(cfgPath, []byte(consoleBenchConfig(filepath.Join(dir, "data"), br.URL(), statusAddr, simAddr)), 0o644); err != nil {
		b.Fatal(err)
	}
	startBinary(b, "simulate", "-config", cfgPath, "-listen", simAddr)
	testbroker.WaitListening(b, simAddr, 10*time.Second)
	gw := startBinary(b, "run", "-config", cfgPath)
	testbroker.WaitListening(b, statusAddr, 10*time.Second)
	time.Sleep(3 * time.Second) // start-up is not what is measured

	br2 := startBrowser(b)
	measure := func() time.Duration {
		start := cpuOf(b, gw.cmd.Process.Pid)
		time.Sleep(*consoleFor) // the measurement's window
		return cpuOf(b, gw.cmd.Process.Pid) - start
	}
	var closed, open time.Duration
	var firstRender float64
	for round := range 3 {
		closed += measure()
		if err := chromedp.Do(br2.ctx, chromedp.Navigate("http://"+statusAddr+"/")); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			v, err := chromedp.Run(br2.ctx, chromedp.Evaluate[float64](`window.edgegwFirstRender || 0`))
			if err != nil {
				b.Fatal(err)
			}
			if v > 0 {
				if round == 0 {
					firstRender = v
				}
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the page never rendered")
			}
			time.Sleep(20 * time.Millisecond) // polling the page
		}
		open += measure()
		if err := chromedp.Do(br2.ctx, chromedp.Navigate("about:blank")); err != nil {
			b.Fatal(err)
		}
	}
	per := func(d time.Duration) float64 { return d.Seconds() * 1000 / (3 * consoleFor.Seconds()) }
	b.ReportMetric(per(closed), "closed-ms-cpu/s")
	b.ReportMetric(per(open), "open-ms-cpu/s")
	b.ReportMetric(float64(open)/float64(closed), "open/closed")
	b.ReportMetric(firstRender, "first-render-ms")
	weight := 0
	for _, f := range []string{"index.html", "app.js", "app.css", "favicon.svg"} {
		st, err := os.Stat(filepath.Join("..", "..", "gateway", "status", "console", f))
		if err != nil {
			b.Fatal(err)
		}
		weight += int(st.Size())
	}
	b.ReportMetric(float64(weight)/1000, "page-kB")
}
