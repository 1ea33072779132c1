package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bugserial "go.bug.st/serial"

	gmodbus "github.com/goburrow/modbus"

	"edgegw/drivers"
	"edgegw/drivers/modbus"
	"edgegw/drivers/modbus/simulator"
	"edgegw/drivers/port"
	"edgegw/gateway/config"
	"edgegw/internal/testbroker"
	"edgegw/internal/testpty"
)

var sharedBusFor = flag.Duration("modbusserver.duration", 3*time.Second, "how long TestModbusServerSharesTheLine runs its masters and poller (the issue's figure: a minute)")

// sharedConfig is a gateway polling one device on a bus, with a Modbus
// server in front of it; its arguments: data_dir, the bus's protocol and
// address key, the device's interval, the server's listen and more keys
// (and the status server's listen, after data_dir).
const sharedConfig = `
[gateway]
id = "share"
data_dir = %q
[mqtt]
brokers = ["tcp://127.0.0.1:1"]
connect_timeout = "1s"
[status]
listen = %q
[[bus]]
name = "b"
%s
timeout = "300ms"
[[device]]
name = "meter"
bus = "b"
unit_id = 1
interval = %q
  [[device.point]]
  name = "voltage"
  table = "input"
  address = 0
  type = "float32"
  [[device.point]]
  name = "setpoint"
  address = 10
  writable = true
  [[device.point]]
  name = "relay"
  table = "coil"
  address = 5
[[modbus_server]]
listen = %q
bus = "b"
%s
`

// pollLog wraps the Modbus driver a gateway opens and notes when each poll
// started; the wrapped bus keeps its Transact and image.
type pollLog struct {
	mu    sync.Mutex
	times []time.Time
}

func (l *pollLog) open(bus config.Bus, devices []config.Device, log *slog.Logger) (drivers.Driver, error) {
	d, err := openDriver(bus, devices, log)
	if err != nil {
		return nil, err
	}
	return timedBus{d.(*modbus.Bus), l}, nil
}

func (l *pollLog) polls() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.times...)
}

type timedBus struct {
	*modbus.Bus
	log *pollLog
}

func (b timedBus) Read(ctx context.Context, device string, r *drivers.Reading) {
	b.log.mu.Lock()
	b.log.times = append(b.log.times, time.Now())
	b.log.mu.Unlock()
	b.Bus.Read(ctx, device, r)
}

// runShared starts the gateway of sharedConfig and waits for its first poll
// and its server.
func runShared(t testing.TB, busKeys, interval, serverKeys string) (listen string, polls *pollLog) {
	listen, polls, _ = runSharedStatus(t, busKeys, interval, serverKeys)
	return listen, polls
}

// runSharedStatus is runShared that also returns the status server's address.
func runSharedStatus(t testing.TB, busKeys, interval, serverKeys string) (listen string, polls *pollLog, status string) {
	t.Helper()
	listen = fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	status = fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	path := filepath.Join(t.TempDir(), "sensors.toml")
	doc := fmt.Sprintf(sharedConfig, t.TempDir(), status, busKeys, interval, listen, serverKeys)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	polls = &pollLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Options{Open: polls.open, Logger: slog.New(slog.DiscardHandler), Version: "test"})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	testbroker.WaitListening(t, listen, 5*time.Second)
	waitFor(t, 5*time.Second, "the first poll", func() bool { return len(polls.polls()) > 0 })
	return listen, polls, status
}

func waitFor(t testing.TB, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond) // polling: the state changes in another goroutine
	}
}

// master is an outside Modbus TCP master (goburrow's client) of the server.
func master(t *testing.T, listen string) (gmodbus.Client, func()) {
	h := gmodbus.NewTCPClientHandler(listen)
	h.SlaveId = 1
	h.Timeout = 5 * time.Second
	if err := h.Connect(); err != nil {
		t.Fatal(err)
	}
	return gmodbus.NewClient(h), func() { h.Close() }
}

func exceptionOf(err error) byte {
	var me *gmodbus.ModbusError
	if errors.As(err, &me) {
		return me.ExceptionCode
	}
	return 0
}

// startSimulator serves sharedConfig's device over TCP, taking at most
// maxClients connections.
func startSimulator(t *testing.T, maxClients int) (*simulator.Server, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	sim := newSharedSimulator(t, addr)
	sim.MaxClients = maxClients
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testbroker.WaitListening(t, addr, 5*time.Second)
	return sim, addr
}

func newSharedSimulator(t testing.TB, addr string) *simulator.Server {
	t.Helper()
	spec := func(name, table string, addr int, typ string) modbus.PointSpec {
		return modbus.PointSpec{Name: name, Table: table, Address: addr, Type: typ, ByteOrder: "ABCD", Bit: -1, Scale: 1}
	}
	sim, err := simulator.New([]modbus.Device{{Name: "meter", UnitID: 1, Points: []modbus.PointSpec{
		spec("voltage", "input", 0, "float32"), spec("setpoint", "holding", 10, "uint16"), spec("relay", "coil", 5, "bool")}}},
		addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return sim
}

// TestModbusServerOverTCP: in front of a Modbus TCP device that takes one
// connection (edgegw's), an outside master reads and writes through edgegw:
// reads polled within cache cost the device nothing, others go to it, its
// exceptions come back as it sent them, a write is read back fresh; real
// masters (mbpoll, pymodbus) are answered too.
func TestModbusServerOverTCP(t *testing.T) {
	sim, simAddr := startSimulator(t, 1)
	listen, polls, status := runSharedStatus(t, fmt.Sprintf("protocol = \"modbus-tcp\"\naddress = %q", simAddr), "1h", "cache = \"1h\"\nwrites = true")
	waitFor(t, 5*time.Second, "the first poll's requests", func() bool { return sim.Requests() >= 3 })

	// The device takes one connection, and edgegw holds it.
	direct := gmodbus.NewTCPClientHandler(simAddr)
	direct.Timeout = 500 * time.Millisecond
	if _, err := gmodbus.NewClient(direct).ReadInputRegisters(0, 2); err == nil {
		t.Fatal("the device answered a second connection: the test needs it to take one")
	}
	direct.Close()

	c, closeMaster := master(t, listen)
	defer closeMaster()
	before := sim.Requests()
	first, err := c.ReadInputRegisters(0, 2)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.ReadInputRegisters(0, 2)
	if err != nil || string(again) != string(first) {
		t.Fatalf("a second cached read: % x, %v; the first % x", again, err, first)
	}
	if n := sim.Requests() - before; n != 0 {
		t.Errorf("cached reads cost the device %d requests", n)
	}
	if v := binary.BigEndian.Uint32(first); v == 0 {
		t.Errorf("the voltage read as % x", first)
	}
	if len(polls.polls()) != 1 {
		t.Fatalf("%d polls: the test needs the one at start only", len(polls.polls()))
	}

	// Not polled: to the device.
	if _, err := c.ReadHoldingRegisters(200, 4); err != nil {
		t.Fatal(err)
	}
	if n := sim.Requests() - before; n != 1 {
		t.Errorf("a read of registers never polled made %d requests, want 1", n)
	}
	// The device's own exception, passed back.
	if _, err := c.ReadHoldingRegisters(simulator.NoSuchAddress, 1); exceptionOf(err) != 2 {
		t.Errorf("read past the device's last address: %v, want its exception 2", err)
	}
	// A unit edgegw does not answer for: 0x0B, without traffic.
	before = sim.Requests()
	h := gmodbus.NewTCPClientHandler(listen)
	h.SlaveId = 9
	if _, err := gmodbus.NewClient(h).ReadHoldingRegisters(0, 1); exceptionOf(err) != 0x0B {
		t.Errorf("unit 9: %v, want exception 0x0B", err)
	}
	h.Close()
	if n := sim.Requests() - before; n != 0 {
		t.Errorf("a unit not served made %d requests", n)
	}

	// A write of a polled register: the cache must not answer the old value.
	if _, err := c.WriteSingleRegister(10, 4321); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadHoldingRegisters(10, 1)
	if err != nil || binary.BigEndian.Uint16(got) != 4321 {
		t.Errorf("setpoint after writing 4321: % x, %v", got, err)
	}

	// What happened, as /metrics counts it: 2 cached reads; 4 to the
	// device (a read, its exception, the write and its read-back); unit 9.
	m := metrics(t, status)
	for _, want := range []string{
		fmt.Sprintf(`edgegw_modbus_server_requests_total{outcome="cache",server=%q} 2`, listen),
		fmt.Sprintf(`edgegw_modbus_server_requests_total{outcome="bus",server=%q} 4`, listen),
		fmt.Sprintf(`edgegw_modbus_server_requests_total{outcome="refused",server=%q} 1`, listen),
		fmt.Sprintf(`edgegw_modbus_server_queue_wait_seconds_count{server=%q} 4`, listen),
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("no %s in /metrics:\n%s", want, m)
		}
	}

	realMasters(t, listen, 4321)
}

// realMasters reads and writes through the server at listen with mbpoll
// (libmodbus) and pymodbus 3.0: holding register 10 holds setpoint;
// register 300 is written and read back.
func realMasters(t *testing.T, listen string, setpoint int) {
	t.Run("mbpoll", func(t *testing.T) {
		mbpoll, err := exec.LookPath("mbpoll")
		if err != nil {
			t.Skip("mbpoll is not installed: run `make test` as root, or apt-get install mbpoll")
		}
		host, p, _ := strings.Cut(listen, ":")
		out, err := exec.Command(mbpoll, "-m", "tcp", "-p", p, "-a", "1", "-t", "4", "-0", "-r", "10", "-c", "1", "-1", host).CombinedOutput()
		if err != nil || !strings.Contains(string(out), fmt.Sprintf("[10]: \t%d", setpoint)) {
			t.Errorf("mbpoll: %v\n%s", err, out)
		}
		out, err = exec.Command(mbpoll, "-m", "tcp", "-p", p, "-a", "1", "-t", "4", "-0", "-r", "300", "-1", host, "77").CombinedOutput()
		if err != nil {
			t.Errorf("mbpoll write: %v\n%s", err, out)
		}
	})
	t.Run("pymodbus", func(t *testing.T) {
		host, p, _ := strings.Cut(listen, ":")
		out, err := exec.Command("/usr/bin/python3", "-c", `
import sys
from pymodbus.client import ModbusTcpClient
c = ModbusTcpClient(sys.argv[1], port=int(sys.argv[2]), timeout=5)
assert c.connect()
w = c.write_register(300, 78, slave=1)
assert not w.isError(), w
r = c.read_holding_registers(300, 1, slave=1)
assert not r.isError(), r
print(r.registers[0])
r = c.read_holding_registers(10, 1, slave=1)
print(r.registers[0])
`, host, p).CombinedOutput()
		if err != nil && strings.Contains(string(out), "No module named 'pymodbus'") {
			t.Skip("pymodbus is not installed: run `make test` as root, or apt-get install python3-pymodbus")
		}
		if f := strings.Fields(string(out)); err != nil || len(f) < 2 || f[0] != "78" || f[1] != fmt.Sprint(setpoint) {
			t.Errorf("pymodbus: %v\n%s", err, out)
		}
	})
}

// TestModbusServerSharesTheLine: three outside masters and the poller share
// a serial line (RTU, ASCII) through edgegw: the device never sees two
// requests at once, every outside request gets the device's answer, and the
// polls keep their interval.
func TestModbusServerSharesTheLine(t *testing.T) {
	for _, mode := range []modbus.Mode{modbus.RTU, modbus.ASCII} {
		t.Run(mode.String(), func(t *testing.T) {
			deviceEnd, gatewayEnd := testpty.Pair(t)
			sim := newSharedSimulator(t, "")
			devPort, err := port.Open(deviceEnd, &bugserial.Mode{BaudRate: 19200, DataBits: 8})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- sim.ServeSerial(ctx, devPort, mode == modbus.ASCII) }()
			defer func() { cancel(); <-served; devPort.Close() }()

			const interval = 100 * time.Millisecond
			listen, polls := runShared(t, fmt.Sprintf("protocol = %q\ndevice = %q\nbaud = 19200", mode.String(), gatewayEnd),
				interval.String(), "cache = \"0s\"\nwrites = true")
			c, closeMaster := master(t, listen)
			want := []uint16{11, 22, 33, 44, 55, 66, 77, 88, 99, 110}
			regs := make([]byte, 0, 20)
			for _, v := range want {
				regs = binary.BigEndian.AppendUint16(regs, v)
			}
			if _, err := c.WriteMultipleRegisters(100, uint16(len(want)), regs); err != nil {
				t.Fatal(err)
			}
			if _, err := c.WriteSingleRegister(10, 1234); err != nil {
				t.Fatal(err)
			}
			closeMaster()
			realMasters(t, listen, 1234)

			start, stop := time.Now(), time.Now().Add(*sharedBusFor)
			pollsBefore := len(polls.polls())
			var wg sync.WaitGroup
			answered := make([]int, 3)
			errs := make(chan error, 3)
			for m := range answered {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, closeMaster := master(t, listen)
					defer closeMaster()
					for time.Now().Before(stop) {
						got, err := c.ReadHoldingRegisters(100, uint16(len(want)))
						if err != nil {
							errs <- fmt.Errorf("master %d: %w", m, err)
							return
						}
						if string(got) != string(regs) {
							errs <- fmt.Errorf("master %d read % x, the device holds % x", m, got, regs)
							return
						}
						answered[m]++
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			elapsed := time.Since(start)
			if n := sim.Overlaps(); n != 0 {
				t.Errorf("the device saw %d requests arrive before the previous was answered", n)
			}
			made := len(polls.polls()) - pollsBefore
			if expected := int(elapsed / interval); made < expected*8/10 {
				t.Errorf("%d polls in %s, want about %d (every %s)", made, elapsed.Round(time.Millisecond), expected, interval)
			}
			for m, n := range answered {
				if n == 0 {
					t.Errorf("master %d got no turn", m)
				}
			}
			t.Logf("%s: %d polls, outside masters answered %v times", elapsed.Round(time.Millisecond), made, answered)
		})
	}
}

// metrics returns the gateway's /metrics text.
func metrics(t *testing.T, status string) string {
	t.Helper()
	resp, err := http.Get("http://" + status + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
