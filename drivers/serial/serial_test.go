package serial

import (
	"edgegw/drivers"

	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bugserial "go.bug.st/serial"

	"edgegw/drivers/port"
	"edgegw/internal/testpty"
)

func openEnd(t *testing.T, path string) port.Port {
	t.Helper()
	p, err := port.Open(path, &bugserial.Mode{BaudRate: 9600})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// line is a serial bus on the pty at path, 9600 8N1, one frame per line.
func line(path string, timeout time.Duration, devices ...Device) Options {
	return Options{Name: "line", Line: port.Line{Device: path, Baud: 9600, DataBits: 8, Parity: "none", StopBits: 1},
		Timeout: timeout, Framing: "line", Delimiter: "\n", Devices: devices}
}

func pt(name, field, typ string) PointSpec {
	return PointSpec{Name: name, Field: field, Type: typ, Scale: 1}
}

func reading(t *testing.T, b *Bus, device string) *drivers.Reading {
	t.Helper()
	r := &drivers.Reading{}
	r.Reset(device, time.Now())
	b.Read(context.Background(), device, r)
	return r
}

func describe(r *drivers.Reading) string {
	var parts []string
	for _, v := range r.Values {
		switch v.Kind {
		case drivers.KindBool:
			parts = append(parts, fmt.Sprintf("%s=%v", v.Point, v.B))
		case drivers.KindString:
			parts = append(parts, fmt.Sprintf("%s=%s", v.Point, v.S))
		case drivers.KindInt:
			parts = append(parts, fmt.Sprintf("%s=%d", v.Point, v.I))
		case drivers.KindUint:
			parts = append(parts, fmt.Sprintf("%s=%d", v.Point, v.U))
		default: // as the JSON encoding writes it: 15 significant digits
			parts = append(parts, fmt.Sprintf("%s=%.15g", v.Point, v.F))
		}
	}
	for _, e := range r.Errors {
		parts = append(parts, fmt.Sprintf("%s!%s", e.Point, e.Err))
	}
	return strings.Join(parts, " ")
}

func TestPushingKVSensorWithNoiseAndStaleness(t *testing.T) {
	sensorEnd, gatewayEnd := testpty.Pair(t)
	sensor := openEnd(t, sensorEnd)
	dev := Device{Name: "th", Format: "kv", Points: []PointSpec{
		pt("temperature", "T", "float64"), pt("humidity", "H", "float64"), pt("alarm", "ALM", "bool")}}
	dev.Points[1].Scale = 0.01
	b, err := Open(line(gatewayEnd, time.Second, dev))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The port opens at the first Read: nothing yet.
	if got := describe(reading(t, b, "th")); !strings.Contains(got, "no frame since the last reading") {
		t.Fatalf("before any frame: %s", got)
	}
	// Noise, a cut line, then good lines: the newest one wins.
	sensor.Write([]byte("\x00\xff\xfe garbage\x01"))
	sensor.Write([]byte("3,ALM=0\n"))
	sensor.Write([]byte("T=23.5,H=4520;ALM=1\r\nT=23.7 H=4530 ALM=0\n"))
	var got string
	waitFor(t, func() bool { got = describe(reading(t, b, "th")); return !strings.Contains(got, "no frame") })
	if got != "temperature=23.7 humidity=45.3 alarm=false" {
		t.Fatalf("reading: %q", got)
	}
	// Nothing new: stale, once per reading.
	if got := describe(reading(t, b, "th")); !strings.Contains(got, "temperature!no frame since the last reading") {
		t.Fatalf("stale: %s", got)
	}
	// A frame without one of the fields.
	sensor.Write([]byte("T=24.0\n"))
	waitFor(t, func() bool { got = describe(reading(t, b, "th")); return !strings.Contains(got, "no frame") })
	if got != "temperature=24 humidity!field H missing from the frame alarm!field ALM missing from the frame" {
		t.Fatalf("partial frame: %q", got)
	}
}

func TestPolledRegexAndCSVSensors(t *testing.T) {
	sensorEnd, gatewayEnd := testpty.Pair(t)
	sensor := openEnd(t, sensorEnd)
	stop := make(chan struct{})
	defer close(stop)
	// The polled sensor answers READ; another pushes CSV on the same line.
	go func() {
		buf := make([]byte, 64)
		for {
			select {
			case <-stop:
				return
			default:
			}
			sensor.SetReadTimeout(20 * time.Millisecond)
			n, _ := sensor.Read(buf)
			if strings.Contains(string(buf[:n]), "READ") {
				sensor.Write([]byte("12,ok,3.5\r\nWS1 T=-3.5C RH=81% V=12.1\r\n"))
			}
		}
	}()
	ws := Device{Name: "ws", Format: "regex", Request: "READ\r\n",
		Pattern: `T=(?P<temp>-?[0-9.]+)C RH=(?P<rh>[0-9]+)% V=(?P<v>[0-9.]+)`,
		Points:  []PointSpec{pt("temperature", "temp", "float64"), pt("humidity", "rh", "int16"), pt("supply", "v", "float64")}}
	csv := Device{Name: "counter", Format: "csv",
		Points: []PointSpec{pt("count", "0", "uint32"), pt("state", "1", "string"), pt("flow", "2", "float64")}}
	bus := line(gatewayEnd, 500*time.Millisecond, ws, csv)
	bus.Delimiter = "\r\n"
	b, err := Open(bus)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got := describe(reading(t, b, "ws")); got != "temperature=-3.5 humidity=81 supply=12.1" {
		t.Fatalf("polled regex sensor: %q", got)
	}
	// The CSV line that came with the reply went to the CSV sensor.
	if got := describe(reading(t, b, "counter")); got != "count=12 state=ok flow=3.5" {
		t.Fatalf("csv sensor: %q", got)
	}
}

// TestReplug: the other end of the line disappears (socat killed: what an
// unplugged USB adapter looks like) and comes back under the same name.
func TestReplug(t *testing.T) {
	socat, err := exec.LookPath("socat")
	if err != nil {
		t.Skip("socat is not installed")
	}
	dir := t.TempDir()
	a, g := filepath.Join(dir, "sensor"), filepath.Join(dir, "gw")
	start := func() *exec.Cmd {
		cmd := exec.Command(socat, "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+g)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { _, e1 := os.Stat(a); _, e2 := os.Stat(g); return e1 == nil && e2 == nil })
		return cmd
	}
	cmd := start()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	dev := Device{Name: "th", Format: "kv", Points: []PointSpec{pt("t", "T", "float64")}}
	b, err := Open(line(g, time.Second, dev))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	reading(t, b, "th") // opens the port
	sensor := openEnd(t, a)
	var got string
	write := func(p port.Port, s string) { p.Write([]byte(s)) }
	waitFor(t, func() bool {
		write(sensor, "T=1\n")
		got = describe(reading(t, b, "th"))
		return got == "t=1"
	})
	// The line goes away; the next reading only comes through a new open.
	cmd.Process.Kill()
	cmd.Wait()
	cmd = start()
	sensor2 := openEnd(t, a)
	waitFor(t, func() bool {
		write(sensor2, "T=2\n")
		got = describe(reading(t, b, "th"))
		return got == "t=2"
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out after 10s")
		}
		time.Sleep(20 * time.Millisecond) // the sensor and the line take their time
	}
}

// binaryFrame is AA 55, int16 temperature ×0.1 (big-endian), uint16
// humidity (little-endian), float32 pressure, a status byte, then xor8.
func binaryFrame(temp int16, hum uint16, pressure float32, ok bool) []byte {
	f := []byte{0xAA, 0x55, byte(uint16(temp) >> 8), byte(temp), byte(hum), byte(hum >> 8)}
	f = binary.BigEndian.AppendUint32(f, math.Float32bits(pressure))
	if ok {
		f = append(f, 1)
	} else {
		f = append(f, 0)
	}
	var x byte
	for _, c := range f {
		x ^= c
	}
	return append(f, x)
}

func TestFixedFrameBinarySensorWithChecksum(t *testing.T) {
	sensorEnd, gatewayEnd := testpty.Pair(t)
	sensor := openEnd(t, sensorEnd)
	bus := line(gatewayEnd, time.Second)
	bus.Framing, bus.FrameLength, bus.Header, bus.Checksum = "fixed", 12, "AA55", "xor8"
	temp := pt("temperature", "2", "int16")
	temp.Scale, temp.ByteOrder = 0.1, "ABCD"
	hum := pt("humidity", "4", "uint16")
	hum.ByteOrder = "DCBA"
	pres := pt("pressure", "6", "float32")
	pres.ByteOrder = "ABCD"
	dev := Device{Name: "bin", Format: "binary", Points: []PointSpec{temp, hum, pres, pt("ok", "10", "bool")}}
	bus.Devices = []Device{dev}
	b, err := Open(bus)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	reading(t, b, "bin") // opens the port
	bad := binaryFrame(999, 1, 1, false)
	bad[5] ^= 0x40 // the checksum no longer matches
	var stream []byte
	stream = append(stream, 0x13, 0xAA, 0x00, 0x55) // noise, a false start
	stream = append(stream, bad...)
	stream = append(stream, binaryFrame(-125, 45, 1013.25, true)...)
	sensor.Write(stream)
	var got string
	waitFor(t, func() bool { got = describe(reading(t, b, "bin")); return !strings.Contains(got, "no frame") })
	if got != "temperature=-12.5 humidity=45 pressure=1013.25 ok=true" {
		t.Fatalf("binary frame: %q", got)
	}
}

// TestStreamingLineDoesNotStallTheBus: a sensor that streams without a
// pause never leaves the line idle; a Read still returns (with the newest
// frame), and a cancelled context ends it at once.
func TestStreamingLineDoesNotStallTheBus(t *testing.T) {
	stop, streamed := make(chan struct{}), make(chan struct{})
	// Registered before the pty pair, so it runs after the pair is gone:
	// a writer blocked on a full line fails then.
	t.Cleanup(func() { <-streamed })
	sensorEnd, gatewayEnd := testpty.Pair(t)
	sensor := openEnd(t, sensorEnd)
	dev := Device{Name: "th", Format: "kv", Points: []PointSpec{pt("temperature", "T", "float64")}}
	b, err := Open(line(gatewayEnd, time.Second, dev))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(streamed)
		burst := []byte(strings.Repeat("T=21.5\n", 64))
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := sensor.Write(burst); err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		b.Close()
	}()
	read := func(ctx context.Context) string {
		done := make(chan string, 1)
		go func() {
			r := &drivers.Reading{}
			r.Reset("th", time.Now())
			b.Read(ctx, "th", r)
			done <- describe(r)
		}()
		select {
		case got := <-done:
			return got
		case <-time.After(5 * time.Second):
			t.Fatal("Read did not return while the line streams")
			return ""
		}
	}
	var got string
	waitFor(t, func() bool { got = read(context.Background()); return !strings.Contains(got, "no frame") })
	if got != "temperature=21.5" {
		t.Fatalf("reading: %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	read(ctx)
}
