package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"edgegw/internal/testbroker"
	"edgegw/internal/testpty"
)

// binary is the edgegw binary built once for these tests: the real thing,
// run as a user runs it.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edgegw-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "edgegw")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building edgegw:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const e2eConfig = `
[gateway]
id = "e2e"
data_dir = "%s"

[mqtt]
brokers = ["%s"]
keepalive = "2s"
connect_timeout = "1s"

[buffer]
commit_interval = "50ms"

[status]
listen = "%s"

[[bus]]
name = "lan"
protocol = "modbus-tcp"
address = "%s"
timeout = "500ms"

[[device]]
name = "meter"
bus = "lan"
unit_id = 3
interval = "100ms"
  [[device.point]]
  name = "voltage"
  table = "input"
  address = 0
  type = "float32"
  [[device.point]]
  name = "frequency"
  table = "input"
  address = 2
  type = "uint16"
  scale = 0.01
  [[device.point]]
  name = "energy_total"
  table = "holding"
  address = 100
  type = "uint32"
  byte_order = "CDAB"
  [[device.point]]
  name = "temperature"
  table = "holding"
  address = 110
  type = "int16"
  scale = 0.1
`

type proc struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

func startBinary(t testing.TB, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary, args...), out: &bytes.Buffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

type payload struct {
	Seq    uint64            `json:"seq"`
	TS     string            `json:"ts"`
	Device string            `json:"device"`
	Values map[string]any    `json:"values"`
	Errors map[string]string `json:"errors"`
}

// readings decodes every reading of device meter, keyed by seq; the same seq
// delivered twice must carry the same payload.
func readings(t *testing.T, msgs []testbroker.Message) map[uint64]string {
	out := map[uint64]string{}
	for _, m := range msgs {
		if m.Topic != "edgegw/e2e/meter" {
			continue
		}
		var p payload
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			t.Fatalf("payload is not JSON: %q", m.Payload)
		}
		if prev, ok := out[p.Seq]; ok && prev != string(m.Payload) {
			t.Fatalf("seq %d reused for another reading:\n%s\n%s", p.Seq, prev, m.Payload)
		}
		out[p.Seq] = string(m.Payload)
	}
	return out
}

// TestEndToEnd runs the real binary against real Mosquitto and the Modbus
// simulator: decoded values, a broker outage, a kill -9 and restart, and a
// clean stop; every seq from 1 on arrives, none twice with different content.
func TestEndToEnd(t *testing.T) {
	br := testbroker.Start(t)
	dir := t.TempDir()
	simAddr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	statusAddr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	cfgPath := filepath.Join(dir, "sensors.toml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(e2eConfig, filepath.Join(dir, "data"), br.URL(), statusAddr, simAddr)), 0o644)

	startBinary(t, "simulate", "-config", cfgPath, "-listen", simAddr)
	testbroker.WaitListening(t, simAddr, 10*time.Second)
	sub := testbroker.Subscribe(t, br.Addr(), "edgegw/#")

	gw := startBinary(t, "run", "-config", cfgPath)
	first := time.Now()
	msgs := sub.WaitFor(t, 20*time.Second, "10 readings", func(m []testbroker.Message) bool { return len(readings(t, m)) >= 10 })
	t.Logf("first 10 readings within %s of start", time.Since(first).Round(time.Millisecond))

	// Values decoded from the simulator, through scale and byte order.
	var p payload
	for _, m := range msgs {
		if m.Topic == "edgegw/e2e/meter" {
			json.Unmarshal(m.Payload, &p)
			break
		}
	}
	if v, ok := p.Values["voltage"].(float64); !ok || v < 220 || v > 240 {
		t.Errorf("voltage %v", p.Values["voltage"])
	}
	if v, ok := p.Values["frequency"].(float64); !ok || v < 49.9 || v > 50.1 {
		t.Errorf("frequency %v", p.Values["frequency"])
	}
	if v, ok := p.Values["energy_total"].(float64); !ok || v < 1000 || v != float64(int64(v)) {
		t.Errorf("energy_total %v", p.Values["energy_total"])
	}
	if v, ok := p.Values["temperature"].(float64); !ok || v < 15 || v > 30 {
		t.Errorf("temperature %v", p.Values["temperature"])
	}
	if _, err := time.Parse(time.RFC3339, p.TS); err != nil || !strings.HasSuffix(p.TS, "Z") {
		t.Errorf("ts %q", p.TS)
	}

	// The status server tells the same story.
	metrics := httpGet(t, "http://"+statusAddr+"/metrics")
	for _, want := range []string{
		"edgegw_mqtt_connected 1",
		`edgegw_mqtt_broker_info{url="` + br.URL() + `"} 1`,
		`edgegw_dropped_total{reason="max_bytes"} 0`,
		`edgegw_readings_total{device="meter"} `,
		"edgegw_published_total ",
		"edgegw_buffer_readings ",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if got := httpGet(t, "http://"+statusAddr+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz: %q", got)
	}

	// Broker outage: readings pile up on flash.
	br.Kill()
	outage := len(readings(t, sub.Messages()))
	// The outage lasts a while, not until an event: readings taken meanwhile
	// go to flash, and must all arrive later.
	const outageDuration = 700 * time.Millisecond
	time.Sleep(outageDuration)
	// kill -9 the gateway mid-outage, then bring everything back.
	gw.cmd.Process.Signal(syscall.SIGKILL)
	gw.cmd.Wait()
	br.Restart()
	sub2 := testbroker.Subscribe(t, br.Addr(), "edgegw/#")
	gw = startBinary(t, "run", "-config", cfgPath)
	sub2.WaitFor(t, 20*time.Second, "readings after restart", func(m []testbroker.Message) bool { return len(readings(t, m)) > 10 })

	// Clean stop: exit 0 and the offline status.
	gw.cmd.Process.Signal(syscall.SIGTERM)
	if err := gw.cmd.Wait(); err != nil {
		t.Fatalf("clean stop: %v\n%s", err, gw.out)
	}
	sub2.WaitFor(t, 5*time.Second, "offline status", func(m []testbroker.Message) bool {
		return len(m) > 0 && m[len(m)-1].Topic == "edgegw/e2e/status" && string(m[len(m)-1].Payload) == `{"state":"offline"}`
	})

	all := readings(t, append(sub.Messages(), sub2.Messages()...))
	var seqs []uint64
	for s := range all {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("seq %d missing: the buffer lost a committed reading (got %d readings, last seq %d)\n%s", i+1, len(seqs), seqs[len(seqs)-1], gw.out)
		}
	}
	if len(seqs) <= outage+5 {
		t.Errorf("only %d readings in all, %d before the outage: readings taken during the outage did not arrive", len(seqs), outage)
	}
	t.Logf("%d readings, seq 1..%d contiguous across a broker outage and kill -9", len(seqs), seqs[len(seqs)-1])
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[gateway]\nid = \"a b\"\n[mqtt]\nbrokers = [\"http://x\"]\nqos = 5\n"), 0o644)
	out, err := exec.Command(binary, "check", "-config", bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("check of a bad config: %v\n%s", err, out)
	}
	for _, want := range []string{bad + ":2: gateway.id: ", bad + ":4: mqtt.brokers: ", bad + ":5: mqtt.qos: 5 is out of range 0..2"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if out, err := exec.Command(binary, "check", "-config", "../../examples/sensors.toml").CombinedOutput(); err != nil {
		t.Errorf("check of the example: %v\n%s", err, out)
	}
	if out, err := exec.Command(binary, "run", "-config", bad).CombinedOutput(); err == nil || err.(*exec.ExitError).ExitCode() != 1 {
		t.Errorf("run with a bad config must exit 1: %v\n%s", err, out)
	}
	if _, err := exec.Command(binary, "check", "-config", filepath.Join(dir, "missing.toml")).CombinedOutput(); err == nil || err.(*exec.ExitError).ExitCode() != 1 {
		t.Errorf("check of a missing file must exit 1: %v", err)
	}
	out, err = exec.Command(binary, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "edgegw ") || !strings.Contains(string(out), "linux/") {
		t.Errorf("version: %v %s", err, out)
	}
}

const commandConfig = `
[gateway]
id = "cmd"
data_dir = "%s"
[mqtt]
brokers = ["%s"]
[status]
listen = ""
[buffer]
commit_interval = "50ms"
[[bus]]
name = "lan"
protocol = "modbus-tcp"
address = "%s"
[[device]]
name = "plc"
bus = "lan"
interval = "100ms"
  [[device.point]]
  name = "setpoint"
  table = "holding"
  address = 10
  type = "int16"
  scale = 0.1
  writable = true
  min = 5
  max = 35
  [[device.point]]
  name = "pump"
  table = "coil"
  address = 3
  writable = true
  [[device.point]]
  name = "temperature"
  table = "input"
  address = 0
  type = "float32"
`

// TestCommands writes points over MQTT through the real binary into the
// simulator: results on the result topic, the new values in later readings.
func TestCommands(t *testing.T) {
	br := testbroker.Start(t)
	dir := t.TempDir()
	simAddr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	cfgPath := filepath.Join(dir, "sensors.toml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(commandConfig, filepath.Join(dir, "data"), br.URL(), simAddr)), 0o644)
	startBinary(t, "simulate", "-config", cfgPath, "-listen", simAddr)
	testbroker.WaitListening(t, simAddr, 10*time.Second)
	sub := testbroker.Subscribe(t, br.Addr(), "edgegw/cmd/#")
	startBinary(t, "run", "-config", cfgPath)
	sub.WaitFor(t, 20*time.Second, "a reading", func(m []testbroker.Message) bool {
		for _, x := range m {
			if x.Topic == "edgegw/cmd/plc" {
				return true
			}
		}
		return false
	})
	for _, tc := range []struct {
		topic, value, want string
	}{
		{"plc/set/setpoint", "21.46", `{"ok":true,"value":21.5}`},
		{"plc/set/pump", "null", `{"ok":false,"error":"plc.pump: null is not a value to write: send true/false, a number or a string"}`},
		{"plc/set/pump", "true", `{"ok":true,"value":true}`},
		{"plc/set/setpoint", "35.5", `{"ok":false,"error":"plc.setpoint: 35.5 is outside min..max (5..35): refused"}`},
		{"plc/set/temperature", "3", `{"ok":false,"error":"plc.temperature: point is not writable"}`},
		{"plc/set/nosuch", "3", `{"ok":false,"error":"no such point \"nosuch\" on plc"}`},
		{"boiler/set/setpoint", "3", `{"ok":false,"error":"no device \"boiler\" on this gateway"}`},
		{"plc/set/setpoint", `"warm"`, `{"ok":false,"error":"plc.setpoint: want a JSON number, not \"warm\""}`},
	} {
		topic := "edgegw/cmd/" + tc.topic
		before := len(sub.Messages())
		sub.Publish(t, topic, []byte(tc.value))
		msgs := sub.WaitFor(t, 10*time.Second, "the result of "+tc.topic, func(m []testbroker.Message) bool {
			for _, x := range m[before:] {
				if x.Topic == topic+"/result" {
					return true
				}
			}
			return false
		})
		for _, x := range msgs[before:] {
			if x.Topic == topic+"/result" && string(x.Payload) != tc.want {
				t.Errorf("%s = %s: result %s, want %s", tc.topic, tc.value, x.Payload, tc.want)
			}
		}
	}
	// The written values come back in the next readings.
	sub.WaitFor(t, 10*time.Second, "a reading with the written values", func(m []testbroker.Message) bool {
		for _, x := range m {
			var p payload
			if x.Topic == "edgegw/cmd/plc" && json.Unmarshal(x.Payload, &p) == nil &&
				p.Values["setpoint"] == 21.5 && p.Values["pump"] == true {
				return true
			}
		}
		return false
	})
}

// TestModbusRTUEndToEnd runs the real binary on a Modbus RTU line (a socat
// pty pair) served by `edgegw simulate -device`, to a real Mosquitto.
func TestModbusRTUEndToEnd(t *testing.T) {
	deviceEnd, gatewayEnd := testpty.Pair(t)
	br := testbroker.Start(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sensors.toml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
[gateway]
id = "rtu"
data_dir = %q
[mqtt]
brokers = [%q]
[status]
listen = ""
[[bus]]
name = "rs485"
protocol = "modbus-rtu"
device = %q
baud = 19200
parity = "even"
timeout = "300ms"
[[device]]
name = "meter"
bus = "rs485"
unit_id = 12
interval = "200ms"
  [[device.point]]
  name = "voltage"
  table = "input"
  address = 0
  type = "float32"
  [[device.point]]
  name = "frequency"
  table = "input"
  address = 70
  type = "float32"
  byte_order = "CDAB"
`, filepath.Join(dir, "data"), br.URL(), gatewayEnd)), 0o644)
	startBinary(t, "simulate", "-config", cfgPath, "-device", deviceEnd)
	sub := testbroker.Subscribe(t, br.Addr(), "edgegw/rtu/meter")
	startBinary(t, "run", "-config", cfgPath)
	msgs := sub.WaitFor(t, 20*time.Second, "3 readings over RTU", func(m []testbroker.Message) bool { return len(m) >= 3 })
	var p payload
	json.Unmarshal(msgs[len(msgs)-1].Payload, &p)
	if len(p.Errors) > 0 {
		t.Fatalf("errors over RTU: %v", p.Errors)
	}
	if v, ok := p.Values["voltage"].(float64); !ok || v < 220 || v > 240 {
		t.Errorf("voltage %v", p.Values["voltage"])
	}
	if v, ok := p.Values["frequency"].(float64); !ok || v < 49.9 || v > 50.1 {
		t.Errorf("frequency %v", p.Values["frequency"])
	}
}

// TestScan finds the one unit that answers on an RTU line.
func TestScan(t *testing.T) {
	deviceEnd, gatewayEnd := testpty.Pair(t)
	cfgPath := filepath.Join(t.TempDir(), "sensors.toml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
[gateway]
id = "scan"
[mqtt]
brokers = ["tcp://127.0.0.1:1883"]
[[bus]]
name = "rs485"
protocol = "modbus-rtu"
device = %q
[[device]]
name = "meter"
bus = "rs485"
unit_id = 12
  [[device.point]]
  name = "v"
`, gatewayEnd)), 0o644)
	startBinary(t, "simulate", "-config", cfgPath, "-device", deviceEnd)
	out, err := exec.Command(binary, "scan", "-config", cfgPath, "-bus", "rs485", "-units", "1-3,10-14", "-timeout", "50ms").CombinedOutput()
	if err != nil {
		t.Fatalf("scan: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "unit  12: answers (holding register 0 = ") || !strings.Contains(string(out), "1 of 8 unit ids answered") {
		t.Errorf("scan output:\n%s", out)
	}
	if out, err := exec.Command(binary, "scan", "-config", cfgPath, "-bus", "nope").CombinedOutput(); err == nil {
		t.Errorf("scan of an unknown bus succeeded:\n%s", out)
	}
}

// TestSerialSensorEndToEnd: a sensor pushing key=value lines on a pty line,
// read by the real binary, published to a real Mosquitto.
func TestSerialSensorEndToEnd(t *testing.T) {
	sensorEnd, gatewayEnd := testpty.Pair(t)
	br := testbroker.Start(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sensors.toml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
[gateway]
id = "ser"
data_dir = %q
[mqtt]
brokers = [%q]
[status]
listen = ""
[[bus]]
name = "weather"
protocol = "serial"
device = %q
baud = 115200
delimiter = "\r\n"
[[device]]
name = "ws1"
bus = "weather"
format = "kv"
interval = "100ms"
  [[device.point]]
  name = "temperature"
  field = "T"
  unit = "°C"
  [[device.point]]
  name = "rain"
  field = "R"
  type = "bool"
`, filepath.Join(dir, "data"), br.URL(), gatewayEnd)), 0o644)
	sub := testbroker.Subscribe(t, br.Addr(), "edgegw/ser/ws1")
	startBinary(t, "run", "-config", cfgPath)
	sensor, err := os.OpenFile(sensorEnd, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sensor.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(30 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				sensor.Write([]byte("T=21.5;R=1\r\n"))
			}
		}
	}()
	sub.WaitFor(t, 20*time.Second, "a reading with values", func(m []testbroker.Message) bool {
		for _, x := range m {
			var p payload
			if json.Unmarshal(x.Payload, &p) == nil && p.Values["temperature"] == 21.5 && p.Values["rain"] == true {
				return true
			}
		}
		return false
	})
	if out, err := exec.Command(binary, "ports").CombinedOutput(); err != nil {
		t.Errorf("ports: %v\n%s", err, out)
	}
}

// TestBufferCommand: with no broker reachable, readings wait in the buffer;
// `edgegw buffer` counts them once the gateway stopped, and says why it
// cannot while the gateway holds the file.
func TestBufferCommand(t *testing.T) {
	dir := t.TempDir()
	simAddr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	statusAddr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	noBroker := fmt.Sprintf("tcp://127.0.0.1:%d", testbroker.FreePort(t))
	cfgPath := filepath.Join(dir, "sensors.toml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(e2eConfig, filepath.Join(dir, "data"), noBroker, statusAddr, simAddr)), 0o644)
	startBinary(t, "simulate", "-config", cfgPath, "-listen", simAddr)
	testbroker.WaitListening(t, simAddr, 10*time.Second)
	gw := startBinary(t, "run", "-config", cfgPath)
	testbroker.WaitListening(t, statusAddr, 10*time.Second)
	buffered := regexp.MustCompile(`(?m)^edgegw_buffer_readings (\d+)`)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if m := buffered.FindStringSubmatch(httpGet(t, "http://"+statusAddr+"/metrics")); m != nil && m[1] != "0" && m[1] != "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no readings buffered within 15 s")
		}
		time.Sleep(50 * time.Millisecond) // polling the metrics
	}
	out, err := exec.Command(binary, "buffer", "-config", cfgPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is the gateway running?") {
		t.Errorf("buffer while the gateway runs: %v\n%s", err, out)
	}
	gw.cmd.Process.Signal(syscall.SIGTERM)
	gw.cmd.Wait()
	out, err = exec.Command(binary, "buffer", "-count", "-config", cfgPath).Output()
	n, convErr := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || convErr != nil || n < 2 {
		t.Errorf("buffer -count: %q, %v", out, err)
	}
	out, err = exec.Command(binary, "buffer", "-config", cfgPath).Output()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d readings waiting to be sent, the oldest taken", n)) {
		t.Errorf("buffer: %q, %v", out, err)
	}
}
