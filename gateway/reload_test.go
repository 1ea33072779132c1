package gateway

import (
	"edgegw/drivers"
	"edgegw/gateway/config"

	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"edgegw/internal/testbroker"
	"edgegw/internal/testlog"
)

// countingDriver counts polls by device.
type countingDriver struct {
	mu    *sync.Mutex
	polls map[string]int
}

func (d countingDriver) Read(ctx context.Context, device string, r *drivers.Reading) {
	d.mu.Lock()
	d.polls[device]++
	d.mu.Unlock()
	r.Add(drivers.Value{Point: "p", Kind: drivers.KindInt, I: 1})
}
func (d countingDriver) Close() error { return nil }

const reloadConfig = `
[gateway]
id = "rl"
data_dir = %q
[mqtt]
brokers = [%q]
qos = %d
keepalive = "2s"
%s
[status]
listen = %q
[buffer]
commit_interval = "20ms"
[[bus]]
name = "b"
protocol = "modbus-tcp"
address = "127.0.0.1:1"
%s`

func device(name string) string {
	return fmt.Sprintf("[[device]]\nname = %q\nbus = \"b\"\ninterval = \"20ms\"\n  [[device.point]]\n  name = \"p\"\n", name)
}

type reloadRig struct {
	t      *testing.T
	path   string
	data   string
	broker string
	status string
	drv    countingDriver
	logs   *testlog.Sink
	reload chan struct{}
	stop   func()
	// mqtt holds more [mqtt] lines.
	mqtt string
}

func newReloadRig(t *testing.T, broker string, mqtt ...string) *reloadRig {
	r := &reloadRig{t: t, path: filepath.Join(t.TempDir(), "sensors.toml"), data: t.TempDir(), broker: broker, mqtt: strings.Join(mqtt, "\n"),
		status: fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t)),
		drv:    countingDriver{mu: &sync.Mutex{}, polls: map[string]int{}}, logs: &testlog.Sink{}, reload: make(chan struct{})}
	r.write(1, device("a"))
	cfg, err := LoadConfig(r.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Run(ctx, cfg, Options{
			Open:    func(config.Bus, []config.Device, *slog.Logger) (drivers.Driver, error) { return r.drv, nil },
			Logger:  slog.New(slog.NewTextHandler(r.logs, nil)),
			Version: "test", Reload: r.reload, Load: func() (*config.Config, error) { return LoadConfig(r.path) },
		})
	}()
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(r.stop)
	testbroker.WaitListening(t, r.status, 10*time.Second)
	return r
}

func (r *reloadRig) write(qos int, devices ...string) {
	doc := fmt.Sprintf(reloadConfig, r.data, r.broker, qos, r.mqtt, r.status, strings.Join(devices, ""))
	if err := os.WriteFile(r.path, []byte(doc), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *reloadRig) polls(device string) int {
	r.drv.mu.Lock()
	defer r.drv.mu.Unlock()
	return r.drv.polls[device]
}

// waitPolls waits until device has been polled n more times than now.
func (r *reloadRig) waitPolls(device string, n int) {
	r.t.Helper()
	target := r.polls(device) + n
	deadline := time.Now().Add(10 * time.Second)
	for r.polls(device) < target {
		if time.Now().After(deadline) {
			r.t.Fatalf("device %s polled %d times, want %d", device, r.polls(device), target)
		}
		time.Sleep(10 * time.Millisecond) // polling a counter the fake driver keeps
	}
}

// metric reads one value from /metrics.
func (r *reloadRig) metric(name string) float64 {
	r.t.Helper()
	resp, err := http.Get("http://" + r.status + "/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` ([0-9.e+]+)$`).FindSubmatch(body)
	if m == nil {
		r.t.Fatalf("no %s in /metrics", name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// doReload signals a reload and waits for its log line.
func (r *reloadRig) doReload(want string) {
	r.t.Helper()
	before := strings.Count(r.logs.String(), want)
	r.reload <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(r.logs.String(), want) == before {
		if time.Now().After(deadline) {
			r.t.Fatalf("no %q after the reload:\n%s", want, r.logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling the log: no event to wait on
	}
}

func TestReload(t *testing.T) {
	// No broker: nothing is acknowledged, so the buffer can only grow, and
	// a reload must never make it smaller.
	r := newReloadRig(t, fmt.Sprintf("tcp://127.0.0.1:%d", testbroker.FreePort(t)))
	r.waitPolls("a", 5)
	readings := func() float64 { return r.metric("edgegw_buffer_readings") + r.metric("edgegw_buffer_pending_readings") }
	last := readings()
	grew := func(step string) {
		t.Helper()
		now := readings()
		if now < last {
			t.Fatalf("%s: buffered readings went down from %v to %v", step, last, now)
		}
		last = now
	}

	r.write(1, device("a"), device("b")) // add a device
	r.doReload("msg=reloaded")
	r.waitPolls("b", 5)
	grew("adding a device")

	r.write(1, device("b")) // remove one
	r.doReload("msg=reloaded")
	gone := r.polls("a")
	r.waitPolls("b", 5)
	if r.polls("a") != gone {
		t.Error("a removed device is still polled")
	}
	grew("removing a device")

	os.WriteFile(r.path, []byte("[gateway]\nid = \"rl\"\nfrobnicate = 1\n"), 0o644) // break the file
	r.doReload("msg=reload_kept_old_config")
	if !strings.Contains(r.logs.String(), "level=ERROR msg=reload_refused problem=\""+r.path+":3: gateway.frobnicate: unknown key") {
		t.Errorf("the problem is not logged with file, line and key:\n%s", r.logs.String())
	}
	r.waitPolls("b", 5) // the old config runs on
	grew("a broken file")
	if r.metric("edgegw_readings_total{device=\"b\"}") < 15 {
		t.Error("the counters of a device restarted at a reload")
	}
}

func TestReloadKeepsMQTTConnectionUnlessMQTTChanged(t *testing.T) {
	br := testbroker.Start(t)
	r := newReloadRig(t, br.URL())
	connected := func() int { return strings.Count(r.logs.String(), "msg=mqtt_connected") }
	deadline := time.Now().Add(10 * time.Second)
	for connected() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling the log
	}
	r.write(1, device("a"), device("c"))
	r.doReload("msg=reloaded")
	r.waitPolls("c", 3)
	if n := connected(); n != 1 {
		t.Fatalf("[mqtt] unchanged, yet %d connections", n)
	}
	r.write(2, device("a"), device("c")) // qos changes
	r.doReload("mqtt_restarted=true")
	deadline = time.Now().Add(10 * time.Second)
	for connected() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("[mqtt] changed, yet no new connection:\n%s", r.logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling the log
	}
}

// TestReloadPicksUpARotatedPassword: a reload uses the password file's new
// content although its path stayed the same.
func TestReloadPicksUpARotatedPassword(t *testing.T) {
	br := testbroker.Start(t, testbroker.WithUsers(t, map[string]string{"edgegw-rl": "new"}))
	password := filepath.Join(t.TempDir(), "mqtt.password")
	if err := os.WriteFile(password, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := newReloadRig(t, br.URL(), `username = "edgegw-rl"`, fmt.Sprintf("password_file = %q", password))
	waitLog := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(r.logs.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s:\n%s", what, r.logs.String())
			}
			time.Sleep(10 * time.Millisecond) // polling the log
		}
	}
	waitLog("msg=mqtt_connect_failed") // the broker wants the new password
	if err := os.WriteFile(password, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.doReload("mqtt_restarted=true")
	waitLog("msg=mqtt_connected")
}
