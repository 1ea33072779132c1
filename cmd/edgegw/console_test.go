package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	gmodbus "github.com/goburrow/modbus"

	"edgegw/internal/testbroker"
)

var screenshots = flag.String("screenshots", "", "also write the console test's screenshots into this directory (docs/ keeps two)")

// consoleConfig is a meter and a PLC whose unit is hostile, served by the
// simulator; arguments: data_dir, broker URL, status listen, simulator address.
const consoleConfig = `
[gateway]
id = "site-7"
data_dir = %q
[mqtt]
brokers = [%q]
connect_timeout = "1s"
[status]
listen = %q
[[bus]]
name = "rs485"
protocol = "modbus-tcp"
address = %q
timeout = "300ms"
retries = 0
[[device]]
name = "meter"
bus = "rs485"
unit_id = 1
interval = "200ms"
profile = "eastron-sdm120"
[[device]]
name = "plc"
bus = "rs485"
unit_id = 2
interval = "200ms"
  [[device.point]]
  name = "setpoint"
  address = 10
  unit = "<img src=x onerror=alert(1)>"
  [[device.point]]
  name = "running"
  table = "coil"
  address = 3
`

// browser starts headless Chromium and collects what its console says.
type browser struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func startBrowser(t testing.TB) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed: run `make test` as root, or apt-get install chromium")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Flag("headless", "new"))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 5*time.Minute) // a bound for a hung browser
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	b := &browser{ctx: ctx}
	err = chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				msg = fmt.Sprintf("console.%s", ev.Type)
				for _, a := range ev.Args {
					msg += " " + string(a.Value)
				}
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				msg = "log: " + ev.Entry.Text + " " + ev.Entry.URL
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	})
	if err != nil { // Listen starts the browser
		t.Fatal(err)
	}
	return b
}

func (b *browser) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// eval evaluates a JavaScript expression.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// waitText waits until the text of the element at selector satisfies ok.
func (b *browser) waitText(t *testing.T, limit time.Duration, what, selector string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	expr := fmt.Sprintf(`(document.querySelector(%q) || {textContent: ""}).textContent`, selector)
	for {
		got := eval[string](t, b, expr)
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q after %s", what, got, limit)
		}
		time.Sleep(50 * time.Millisecond) // polling the page
	}
}

func (b *browser) screenshot(t *testing.T, name string, width, height int64, mobile bool) {
	t.Helper()
	var opts []chromedp.EmulateViewportOption
	if mobile {
		opts = append(opts, chromedp.EmulateMobile)
	}
	err := chromedp.Do(b.ctx, chromedp.EmulateViewport(width, height, opts...),
		chromedp.Sleep(300*time.Millisecond)) // a relayout after the resize: no event to wait on
	if err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dirs := []string{filepath.Join(os.TempDir(), "edgegw-test-artefacts")}
	if *screenshots != "" {
		dirs = append(dirs, *screenshots)
	}
	for _, dir := range dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}
}

// TestConsoleInBrowser: the commissioning page in headless Chromium, served
// by the real binary polling the simulator: no console error, the devices
// and values show, a value the device changes shows within 2 s, a killed
// device shows as failing, and a hostile unit shows as text.
func TestConsoleInBrowser(t *testing.T) {
	b := startBrowser(t)
	br := testbroker.Start(t)
	dir := t.TempDir()
	simAddr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	statusAddr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	cfgPath := filepath.Join(dir, "sensors.toml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(consoleConfig, filepath.Join(dir, "data"), br.URL(), statusAddr, simAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	sim := startBinary(t, "simulate", "-config", cfgPath, "-listen", simAddr)
	testbroker.WaitListening(t, simAddr, 10*time.Second)
	startBinary(t, "run", "-config", cfgPath)
	testbroker.WaitListening(t, statusAddr, 10*time.Second)

	if err := chromedp.Do(b.ctx, chromedp.Navigate("http://"+statusAddr+"/")); err != nil {
		t.Fatal(err)
	}
	b.waitText(t, 5*time.Second, "the meter's voltage", `article[data-device="meter"] tr[data-point="voltage"] td:nth-child(2)`,
		func(s string) bool { return strings.HasPrefix(s, "2") })
	b.waitText(t, 5*time.Second, "the gateway's id", "#gw-id", func(s string) bool { return s == "site-7" })
	b.waitText(t, 5*time.Second, "the broker in use", "#uplink dd", func(s string) bool { return s == br.URL() })

	// A value the device changes shows within 2 s.
	h := gmodbus.NewTCPClientHandler(simAddr)
	h.SlaveId, h.Timeout = 2, 2*time.Second
	if _, err := gmodbus.NewClient(h).WriteSingleRegister(10, 4242); err != nil {
		t.Fatal(err)
	}
	h.Close()
	changed := time.Now()
	b.waitText(t, 2*time.Second, "the setpoint written at the device", `article[data-device="plc"] tr[data-point="setpoint"] td:nth-child(2)`,
		func(s string) bool { return s == "4242" })
	t.Logf("a value changed at the device showed after %s", time.Since(changed).Round(time.Millisecond))

	// The hostile unit is text, and no element came of it.
	unit := b.waitText(t, time.Second, "the setpoint's unit", `article[data-device="plc"] tr[data-point="setpoint"] td:nth-child(3)`,
		func(s string) bool { return s != "" })
	if unit != "<img src=x onerror=alert(1)>" {
		t.Errorf("the unit shows as %q", unit)
	}
	if images := eval[int](t, b, `document.querySelectorAll("img").length`); images != 0 {
		t.Errorf("%d <img> elements on the page: a unit became HTML", images)
	}
	// The raw registers, asked for.
	if err := chromedp.Do(b.ctx, chromedp.Click("#raw")); err != nil {
		t.Fatal(err)
	}
	b.waitText(t, 3*time.Second, "the setpoint's raw register", `article[data-device="plc"] tr[data-point="setpoint"] td.raw`,
		func(s string) bool { return s == "1092" }) // 4242
	b.screenshot(t, "console-desktop.png", 1280, 900, false)
	b.screenshot(t, "console-phone.png", 390, 844, true)

	// The device goes silent: the page says so.
	if err := sim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = sim.cmd.Wait() // killed: its error says so
	b.waitText(t, 5*time.Second, "the meter failing", `article[data-device="meter"] .badge`,
		func(s string) bool { return strings.HasPrefix(s, "failing since") })
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("the browser's console:\n%s", strings.Join(errs, "\n"))
	}
}
