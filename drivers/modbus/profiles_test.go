package modbus

import (
	"edgegw/drivers"

	"context"
	"fmt"
	"log/slog"
	"math"
	"testing"
	"time"

	"edgegw/gateway"
)

// TestBuiltInProfiles loads each built-in profile through the config, plans
// it, and decodes it against a server holding known values; it also tells
// how many requests a poll takes against one per point and the optimum
// (any gap bridged within the 125-register limit).
func TestBuiltInProfiles(t *testing.T) {
	for _, name := range []string{"eastron-sdm630", "eastron-sdm120", "xy-md02"} {
		t.Run(name, func(t *testing.T) {
			doc := fmt.Sprintf("[gateway]\nid = \"g\"\nprofiles_dir = %q\n[mqtt]\nbrokers = [\"tcp://127.0.0.1:1883\"]\n"+
				"[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\naddress = \"127.0.0.1:502\"\n"+
				"[[device]]\nname = \"m\"\nbus = \"b\"\nprofile = %q\n", t.TempDir(), name)
			cfg, err := gateway.ParseConfig("t.toml", []byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			srv := &regServer{holding: map[uint16]uint16{}, input: map[uint16]uint16{}, refuseFrom: 1000}
			want := map[string]float64{}
			var points []Point
			for i, pc := range cfg.Devices[0].Points {
				p, err := PointFromConfig(pc)
				if err != nil {
					t.Fatal(err)
				}
				points = append(points, p)
				v := float64(i) + 0.5
				if p.Type == Int16 {
					v = -float64(i) - 0.5
				}
				put(t, srv, pc, v)
				want[pc.Name] = v
			}
			bus, err := OpenTCP(tcpBus(serve(t, srv)), cfg.Devices, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer bus.Close()
			var r drivers.Reading
			r.Reset("m", time.Now())
			bus.Read(context.Background(), "m", &r)
			if len(r.Errors) > 0 || len(r.Values) != len(want) {
				t.Fatalf("%d values, errors %+v", len(r.Values), r.Errors)
			}
			for _, v := range r.Values {
				if math.Abs(v.F-want[v.Point]) > 1e-4 {
					t.Errorf("%s: %v, want %v", v.Point, v.F, want[v.Point])
				}
			}
			optimum := len(Plan(points, MaxRegisters))
			got := bus.Requests("m")
			t.Logf("%s: %d points in %d requests per poll over TCP (one per point: %d; optimum: %d; on a serial line, bridging gaps of up to %d registers: %d)",
				name, len(points), got, len(points), optimum, SerialMaxGap, len(Plan(points, SerialMaxGap)))
			if got != optimum {
				t.Errorf("%d requests over TCP, the optimum is %d", got, optimum)
			}
		})
	}
}
