package simulator

import (
	bugserial "go.bug.st/serial"

	"edgegw/drivers"

	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"edgegw/drivers/modbus"
	"edgegw/drivers/port"
	"edgegw/internal/testpty"
)

// TestSerialLine reads and writes every type in every byte order over a real
// serial line (a socat pty pair) between the driver and the simulator, in
// RTU and in ASCII, and sees a silent unit time out.
func TestSerialLine(t *testing.T) {
	for _, mode := range []modbus.Mode{modbus.RTU, modbus.ASCII} {
		t.Run(mode.String(), func(t *testing.T) {
			deviceEnd, gatewayEnd := testpty.Pair(t)
			var points []modbus.PointSpec
			values := map[string]any{}
			addr := 0
			for _, typ := range []string{"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"} {
				for _, order := range []string{"ABCD", "DCBA", "BADC", "CDAB"} {
					name := strings.ToLower(typ + "_" + order)
					points = append(points, modbus.PointSpec{Name: name, Table: "holding", Address: addr, Type: typ,
						ByteOrder: order, Bit: -1, Scale: 1, Writable: true})
					values[name] = map[string]any{"int16": int64(-1234), "uint16": int64(54321), "int32": int64(-123456789),
						"uint32": int64(3123456789), "int64": int64(-1234567890123), "uint64": int64(1234567890123),
						"float32": 230.5, "float64": 1234.5678}[typ]
					addr += 4
				}
			}
			points = append(points,
				modbus.PointSpec{Name: "relay", Table: "coil", Address: 7, Type: "bool", ByteOrder: "ABCD", Bit: -1, Scale: 1, Writable: true},
				modbus.PointSpec{Name: "label", Table: "holding", Address: 500, Type: "string", Length: 4, ByteOrder: "ABCD", Bit: -1, Scale: 1, Writable: true})
			values["relay"], values["label"] = true, "RS485"
			dev := modbus.Device{Name: "d", UnitID: 7, Points: points}
			silent := modbus.Device{Name: "gone", UnitID: 9, Points: points[:1]}
			sim, err := New([]modbus.Device{dev}, "", slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			devPort, err := port.Open(deviceEnd, &bugserial.Mode{BaudRate: 115200, DataBits: 8})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error)
			go func() { served <- sim.ServeSerial(ctx, devPort, mode == modbus.ASCII) }()
			defer func() { cancel(); <-served; devPort.Close() }()

			drv, err := modbus.Open(modbus.Options{Name: "line", Mode: mode, Timeout: 300 * time.Millisecond, MaxGap: -1,
				Line:    port.Line{Device: gatewayEnd, Baud: 115200, DataBits: 8, Parity: "none", StopBits: 1},
				Devices: []modbus.Device{dev, silent}})
			if err != nil {
				t.Fatal(err)
			}
			defer drv.Close()
			for name, v := range values {
				raw, _ := json.Marshal(v)
				if _, err := drv.Write(ctx, "d", name, raw); err != nil {
					t.Fatalf("write %s = %s: %v", name, raw, err)
				}
			}
			var r drivers.Reading
			r.Reset("d", time.Now())
			drv.Read(ctx, "d", &r)
			if len(r.Errors) > 0 {
				t.Fatalf("errors: %+v", r.Errors)
			}
			for _, v := range r.Values {
				want := fmt.Sprint(values[v.Point])
				got := ""
				switch v.Kind {
				case drivers.KindInt:
					got = fmt.Sprint(v.I)
				case drivers.KindUint:
					got = fmt.Sprint(v.U)
				case drivers.KindBool:
					got = fmt.Sprint(v.B)
				case drivers.KindString:
					got = v.S
				default:
					got = fmt.Sprint(v.F)
				}
				if got != want {
					t.Errorf("%s: read %s, wrote %s", v.Point, got, want)
				}
			}
			if len(r.Values) != len(values) {
				t.Errorf("%d values, want %d", len(r.Values), len(values))
			}

			// A unit nobody answers for: a timeout, within the bus timeout.
			start := time.Now()
			r.Reset("gone", time.Now())
			drv.Read(ctx, "gone", &r)
			if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Err, "timeout: no reply within 300ms") {
				t.Fatalf("silent unit: %+v", r.Errors)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("a silent unit took %s", took)
			}
			// And the live one answers right after.
			r.Reset("d", time.Now())
			drv.Read(ctx, "d", &r)
			if len(r.Errors) > 0 {
				t.Fatalf("after a silent unit: %+v", r.Errors)
			}
		})
	}
}
