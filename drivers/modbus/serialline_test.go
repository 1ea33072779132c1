package modbus

import (
	"edgegw/drivers"

	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.bug.st/serial"

	"edgegw/drivers/port"
	"edgegw/internal/testpty"
)

// rtuReply is a read-holding-registers reply from unit 1 holding v.
func rtuReply(v uint16) []byte {
	f := []byte{1, 3, 2, byte(v >> 8), byte(v)}
	return binary.LittleEndian.AppendUint16(f, drivers.CRC16(f))
}

// TestLineNoiseAndLateReplies plays the device end of a real pty line:
// noise before a reply is skipped, a reply with a bad CRC is an error, and a
// reply that comes after the timeout does not answer the next request.
func TestLineNoiseAndLateReplies(t *testing.T) {
	deviceEnd, gatewayEnd := testpty.Pair(t)
	dev, err := serial.Open(deviceEnd, &serial.Mode{BaudRate: 115200})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	drv, err := Open(Options{Name: "l", Mode: RTU, Line: rtuLine(gatewayEnd), Timeout: 200 * time.Millisecond,
		Devices: []Device{{Name: "m", UnitID: 1, Points: []PointSpec{
			{Name: "v", Table: "holding", Type: "uint16", ByteOrder: "ABCD", Bit: -1, Scale: 1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	// answer reads one 8-byte request off the line, then sends reply.
	answer := func(reply []byte) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			req := make([]byte, 0, 8)
			buf := make([]byte, 8)
			dev.SetReadTimeout(2 * time.Second)
			for len(req) < 8 {
				n, err := dev.Read(buf)
				if err != nil || n == 0 {
					return
				}
				req = append(req, buf[:n]...)
			}
			dev.Write(reply)
		}()
		return done
	}
	read := func() string {
		var r drivers.Reading
		r.Reset("m", time.Now())
		drv.Read(context.Background(), "m", &r)
		if len(r.Errors) > 0 {
			return "error: " + r.Errors[0].Err
		}
		return fmt.Sprint(r.Values[0].U)
	}

	done := answer(append([]byte{0x00, 0xFF, 0x55, 0x03}, rtuReply(7)...))
	if got := read(); got != "7" {
		t.Errorf("noise before the reply: %s", got)
	}
	<-done

	bad := rtuReply(8)
	bad[len(bad)-1] ^= 0xFF
	done = answer(bad)
	if got := read(); !strings.Contains(got, "crc") {
		t.Errorf("a reply with a bad CRC: %s", got)
	}
	<-done

	// No reply in time...
	done = answer(nil)
	if got := read(); !strings.Contains(got, "timeout") {
		t.Errorf("no reply: %s", got)
	}
	<-done
	dev.Write(rtuReply(1)) // ...then it comes late, before the next request
	testpty.WaitInput(t, gatewayEnd, len(rtuReply(1)))
	done = answer(rtuReply(5))
	if got := read(); got != "5" {
		t.Errorf("the late reply answered the next request: %s", got)
	}
	<-done
}

// TestSilentDeviceIsBackedOff: a unit that never answers is asked once, then
// left alone for a while (its points under errors), so it cannot eat the
// time of the live device on the same line.
func TestSilentDeviceIsBackedOff(t *testing.T) {
	deviceEnd, gatewayEnd := testpty.Pair(t)
	dev, err := serial.Open(deviceEnd, &serial.Mode{BaudRate: 115200})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	// The live device: answers every request with one register.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		buf := make([]byte, 64)
		var req []byte
		for {
			select {
			case <-stop:
				return
			default:
			}
			dev.SetReadTimeout(50 * time.Millisecond)
			n, err := dev.Read(buf)
			if err != nil {
				return
			}
			req = append(req, buf[:n]...)
			for len(req) >= 8 {
				if req[0] == 1 {
					dev.Write(rtuReply(42))
				}
				req = req[8:]
			}
		}
	}()
	point := []PointSpec{{Name: "v", Table: "holding", Type: "uint16", ByteOrder: "ABCD", Bit: -1, Scale: 1}}
	drv, err := Open(Options{Name: "l", Mode: RTU, Line: rtuLine(gatewayEnd), Timeout: 100 * time.Millisecond, Retries: 1,
		Devices: []Device{
			{Name: "live", UnitID: 1, Interval: time.Second, Points: point},
			{Name: "dead", UnitID: 2, Interval: time.Second, Points: point},
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	asked, skipped := 0, 0
	for range 20 {
		var r drivers.Reading
		r.Reset("dead", time.Now())
		drv.Read(context.Background(), "dead", &r)
		switch {
		case len(r.Errors) == 1 && strings.Contains(r.Errors[0].Err, "timeout"):
			asked++
		case len(r.Errors) == 1 && strings.Contains(r.Errors[0].Err, "device not answering (1 polls); next try in"):
			skipped++
		default:
			t.Fatalf("dead device: %+v", r.Errors)
		}
		r.Reset("live", time.Now())
		drv.Read(context.Background(), "live", &r)
		if len(r.Errors) != 0 || r.Values[0].U != 42 {
			t.Fatalf("live device: %+v %+v", r.Values, r.Errors)
		}
	}
	// Within the 2 s backoff after the first silence, it is not asked again.
	if asked != 1 || skipped != 19 {
		t.Fatalf("dead device asked %d times, skipped %d", asked, skipped)
	}
}

// rtuLine is a pty at 115200 8N1.
func rtuLine(device string) port.Line {
	return port.Line{Device: device, Baud: 115200, DataBits: 8, Parity: "none", StopBits: 1}
}

// TestRetryAfterADroppedRequest: with retries = 1, a device that drops a
// request (noise on the bus ate it) is read on the retry, within the poll.
func TestRetryAfterADroppedRequest(t *testing.T) {
	deviceEnd, gatewayEnd := testpty.Pair(t)
	dev, err := serial.Open(deviceEnd, &serial.Mode{BaudRate: 115200})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	drv, err := Open(Options{Name: "l", Mode: RTU, Line: rtuLine(gatewayEnd), Timeout: 200 * time.Millisecond, Retries: 1,
		Devices: []Device{{Name: "m", UnitID: 1, Points: []PointSpec{
			{Name: "v", Table: "holding", Type: "uint16", ByteOrder: "ABCD", Bit: -1, Scale: 1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	requests := make(chan int, 4)
	go func() {
		buf := make([]byte, 64)
		var req []byte
		seen := 0
		dev.SetReadTimeout(3 * time.Second)
		for seen < 2 {
			n, err := dev.Read(buf)
			if err != nil || n == 0 {
				return
			}
			req = append(req, buf[:n]...)
			for len(req) >= 8 && seen < 2 {
				seen++
				req = req[8:]
				if seen == 2 { // the first is dropped
					dev.Write(rtuReply(9))
				}
				requests <- seen
			}
		}
	}()
	var r drivers.Reading
	r.Reset("m", time.Now())
	drv.Read(context.Background(), "m", &r)
	if len(r.Errors) > 0 || len(r.Values) != 1 || r.Values[0].U != 9 {
		t.Fatalf("not read on the retry: values %+v, errors %+v", r.Values, r.Errors)
	}
	for want := 1; want <= 2; want++ {
		select {
		case <-requests:
		case <-time.After(3 * time.Second):
			t.Fatalf("the device saw %d requests, want the first and its retry", want-1)
		}
	}
}
