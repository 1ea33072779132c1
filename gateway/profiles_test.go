package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"edgegw/drivers"
	"edgegw/drivers/modbus"
	"edgegw/drivers/modbus/simulator"
	"edgegw/internal/testbroker"
)

// TestBuiltInProfiles loads each built-in profile through the config and
// the protocol map, and reads it from the simulator (a real Modbus TCP
// server) with the driver run uses: every point reads, in as few requests
// as the protocol allows.
func TestBuiltInProfiles(t *testing.T) {
	for _, name := range []string{"eastron-sdm630", "eastron-sdm120", "xy-md02"} {
		t.Run(name, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
			doc := fmt.Sprintf("[gateway]\nid = \"g\"\nprofiles_dir = %q\n[mqtt]\nbrokers = [\"tcp://127.0.0.1:1883\"]\n"+
				"[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\naddress = %q\n"+
				"[[device]]\nname = \"m\"\nbus = \"b\"\nprofile = %q\n", t.TempDir(), addr, name)
			cfg, err := ParseConfig("t.toml", []byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			bus, err := busFor(cfg.Buses[0], cfg.Devices, nil)
			if err != nil {
				t.Fatal(err)
			}
			sim, err := simulator.New(bus.modbus.Devices, addr, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- sim.Run(ctx) }()
			defer func() { cancel(); <-done }()
			testbroker.WaitListening(t, addr, 5*time.Second)

			drv, err := modbus.Open(*bus.modbus)
			if err != nil {
				t.Fatal(err)
			}
			defer drv.Close()
			var r drivers.Reading
			r.Reset("m", time.Now())
			drv.Read(ctx, "m", &r)
			points := bus.modbus.Devices[0].Points
			if len(r.Errors) > 0 || len(r.Values) != len(points) {
				t.Fatalf("%d values of %d points, errors %+v", len(r.Values), len(points), r.Errors)
			}
			var planned []modbus.Point
			for _, s := range points {
				p, err := modbus.ParsePoint(s)
				if err != nil {
					t.Fatal(err)
				}
				planned = append(planned, p)
			}
			optimum := len(modbus.Plan(planned, modbus.MaxRegisters))
			got := drv.Requests("m")
			t.Logf("%s: %d points in %d requests per poll over TCP (one per point: %d; optimum: %d; on a serial line, bridging gaps of up to %d registers: %d)",
				name, len(points), got, len(points), optimum, modbus.SerialMaxGap, len(modbus.Plan(planned, modbus.SerialMaxGap)))
			if got != optimum {
				t.Errorf("%d requests over TCP, the optimum is %d", got, optimum)
			}
		})
	}
}
