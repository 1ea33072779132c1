package gateway

import (
	"edgegw/drivers"
	"edgegw/gateway/config"

	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"edgegw/internal/testbroker"
)

// sdNotifier is the binary's notifier: go-systemd's sd_notify.
type sdNotifier struct{}

func (sdNotifier) Notify(state string) { daemon.SdNotify(false, state) }

// stuckDriver answers until stuck is set, then blocks, ignoring ctx as a
// deadlocked driver would, until release is closed.
type stuckDriver struct {
	stuck   *atomic.Bool
	release chan struct{}
}

func (d stuckDriver) Read(ctx context.Context, device string, r *drivers.Reading) {
	if d.stuck.Load() {
		<-d.release
	}
	r.Add(drivers.Value{Point: "p", Kind: drivers.KindInt, I: 1})
}
func (d stuckDriver) Close() error { return nil }

// TestWatchdogStopsPingingWhenALoopIsStuck runs the gateway with a real
// unixgram NOTIFY_SOCKET: READY=1 and WATCHDOG=1 arrive; when a bus's loop
// deadlocks the pings stop; when it comes back they resume.
func TestWatchdogStopsPingingWhenALoopIsStuck(t *testing.T) {
	br := testbroker.Start(t)
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	states := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			states <- string(buf[:n])
		}
	}()
	cfg, err := ParseConfig("t.toml", []byte(fmt.Sprintf(`
[gateway]
id = "wd"
data_dir = %q
[mqtt]
brokers = [%q]
[status]
listen = ""
[[bus]]
name = "b"
protocol = "modbus-tcp"
address = "127.0.0.1:1"
timeout = "100ms"
retries = 0
[[device]]
name = "d"
bus = "b"
interval = "50ms"
  [[device.point]]
  name = "p"
`, t.TempDir(), br.URL())))
	if err != nil {
		t.Fatal(err)
	}
	drv := stuckDriver{stuck: &atomic.Bool{}, release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Run(ctx, cfg, Options{
			Open:     func(config.Bus, []config.Device, *slog.Logger) (drivers.Driver, error) { return drv, nil },
			Logger:   slog.New(slog.DiscardHandler),
			Version:  "test",
			Notifier: sdNotifier{}, WatchdogInterval: 200 * time.Millisecond,
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// expect waits for a state; pings counts WATCHDOG=1 seen meanwhile.
	expect := func(want string, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case s := <-states:
				if s == want || strings.HasSuffix(want, "*") && strings.HasPrefix(s, strings.TrimSuffix(want, "*")) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q within %s", want, within)
			}
		}
	}
	expect("READY=1", 10*time.Second)
	expect("STATUS=publishing to "+br.URL()+"*", 15*time.Second)
	expect("WATCHDOG=1", 2*time.Second)
	expect("WATCHDOG=1", 2*time.Second)

	// The bus deadlocks: its limit is 16 × 100ms, plus twice the interval.
	drv.stuck.Store(true)
	quiet := time.NewTimer(time.Second)
	giveUp := time.After(10 * time.Second)
	for stopped := false; !stopped; {
		select {
		case s := <-states:
			if s == "WATCHDOG=1" {
				quiet.Reset(time.Second)
			}
		case <-quiet.C:
			stopped = true // a second without pings: withheld
		case <-giveUp:
			t.Fatal("pings went on for 10s with a deadlocked bus")
		}
	}
	close(drv.release)
	drv.stuck.Store(false)
	expect("WATCHDOG=1", 3*time.Second)
}
