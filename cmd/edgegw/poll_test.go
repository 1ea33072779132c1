package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bugserial "go.bug.st/serial"

	"edgegw/drivers/modbus/simulator"
	"edgegw/drivers/port"
	"edgegw/gateway"
	"edgegw/internal/testbroker"
	"edgegw/internal/testpty"
)

var updatePoll = flag.Bool("update", false, "rewrite the golden files of TestPollGolden")

// pollConfig is a meter (the SDM630 profile) and a small PLC on one bus; its
// arguments: data_dir, the bus's protocol and address/device keys.
const pollConfig = `
[gateway]
id = "poll"
data_dir = %q
[mqtt]
brokers = ["tcp://127.0.0.1:1"]
[status]
listen = ""
[[bus]]
name = "b"
%s
timeout = "300ms"
retries = 0
[[device]]
name = "meter"
bus = "b"
unit_id = 1
profile = "eastron-sdm120"
[[device]]
name = "plc"
bus = "b"
unit_id = 2
  [[device.point]]
  name = "temperature"
  table = "input"
  address = 0
  scale = 0.1
  unit = "°C"
  [[device.point]]
  name = "running"
  table = "coil"
  address = 3
`

// durations are what changes from run to run in poll's output.
var durations = regexp.MustCompile(`[0-9.]+(µs|ms|s)\b`)

// pollSetup writes the config and serves its devices with a frozen
// simulator, over TCP or on a pty line; it returns the config's path.
func pollSetup(t *testing.T, line bool) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "sensors.toml")
	busKeys := ""
	if line {
		deviceEnd, gatewayEnd := testpty.Pair(t)
		busKeys = fmt.Sprintf("protocol = \"modbus-rtu\"\ndevice = %q\nbaud = 19200", gatewayEnd)
		sim := pollSimulator(t, path, busKeys, "")
		p, err := port.Open(deviceEnd, &bugserial.Mode{BaudRate: 19200})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sim.ServeSerial(ctx, p, false) }()
		t.Cleanup(func() { cancel(); <-done; p.Close() })
		return path
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	busKeys = fmt.Sprintf("protocol = \"modbus-tcp\"\naddress = %q", addr)
	sim := pollSimulator(t, path, busKeys, addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testbroker.WaitListening(t, addr, 5*time.Second)
	return path
}

// pollSimulator writes the config and returns a simulator of its devices
// frozen an hour after its start.
func pollSimulator(t *testing.T, path, busKeys, listen string) *simulator.Server {
	t.Helper()
	if err := os.WriteFile(path, []byte(fmt.Sprintf(pollConfig, filepath.Join(filepath.Dir(path), "data"), busKeys)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := simulator.New(gateway.Simulated(cfg).Devices, listen, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sim.Freeze(time.Hour)
	return sim
}

// TestPollGolden: what `edgegw poll` prints for the simulator's devices,
// over TCP and on an RTU line, twice (the second round with changes).
func TestPollGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		line bool
	}{{"tcp", false}, {"rtu", true}} {
		t.Run(tc.name, func(t *testing.T) {
			path := pollSetup(t, tc.line)
			var stdout, stderr bytes.Buffer
			code := realMain([]string{"poll", "-config", path, "-count", "2", "-interval", "10ms"}, &stdout, &stderr)
			if code != exitOK {
				t.Fatalf("exit %d, stderr %s\n%s", code, stderr.String(), stdout.String())
			}
			got := durations.ReplaceAllString(stdout.String(), "D")
			got = regexp.MustCompile(`round (\d) of 2, [0-9:.]+`).ReplaceAllString(got, "round $1 of 2, T")
			golden := filepath.Join("testdata", "poll", tc.name+".golden")
			if *updatePoll {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("edgegw poll printed:\n%s\nwant (%s; -update rewrites it):\n%s", got, golden, want)
			}
		})
	}
}

// TestPollSilentDevice: a device that does not answer makes poll say so
// per point and exit 3.
func TestPollSilentDevice(t *testing.T) {
	deviceEnd, gatewayEnd := testpty.Pair(t)
	_ = deviceEnd // nothing answers at the device end
	path := filepath.Join(t.TempDir(), "sensors.toml")
	pollSimulator(t, path, fmt.Sprintf("protocol = \"modbus-rtu\"\ndevice = %q", gatewayEnd), "")
	var stdout, stderr bytes.Buffer
	code := realMain([]string{"poll", "-config", path, "-device", "plc"}, &stdout, &stderr)
	out := stdout.String()
	if code != exitPointFailed || !strings.Contains(out, "plc (bus b): not answering") || !strings.Contains(out, "timeout: no reply within 300ms") {
		t.Errorf("exit %d:\n%s%s", code, out, stderr.String())
	}
	if strings.Contains(out, "meter") {
		t.Errorf("-device plc polled the meter too:\n%s", out)
	}
}

// TestPollPortHeldByTheService: while `edgegw run` holds the serial port,
// poll says so and how to stop it, instead of a bare "device busy".
func TestPollPortHeldByTheService(t *testing.T) {
	path := pollSetup(t, true)
	run := startBinary(t, "run", "-config", path)
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		held := false
		for _, h := range port.Holders(cfg.Buses[0].Device) {
			held = held || h.PID == run.cmd.Process.Pid
		}
		if held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edgegw run never opened the port:\n%s", run.out)
		}
		time.Sleep(20 * time.Millisecond) // polling for the service's open port
	}
	var stdout, stderr bytes.Buffer
	code := realMain([]string{"poll", "-config", path}, &stdout, &stderr)
	out := stdout.String()
	if code != exitPointFailed || !strings.Contains(out, "the edgegw service: stop it first (sudo systemctl stop edgegw)") {
		t.Errorf("exit %d:\n%s%s", code, out, stderr.String())
	}
}
