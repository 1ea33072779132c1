package simulator_test

import (
	"edgegw/drivers"
	"edgegw/drivers/modbus/simulator"
	"edgegw/gateway"

	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"edgegw/drivers/modbus"
	"edgegw/internal/testpty"
)

// BenchmarkRTUCycle9600 polls an Eastron SDM630 (the built-in profile, 63
// float32 points) over Modbus RTU at 9600 baud 8E1 and reports the poll-cycle
// time against the time its bytes need on the wire. Run with -benchtime 20x.
func BenchmarkRTUCycle9600(b *testing.B) {
	const baud = 9600
	char := 11 * time.Second / baud // start, 8 data, parity, stop
	gwEnd, devEnd := testpty.PacedLine(b, char, nil)

	doc := fmt.Sprintf("[gateway]\nid = \"g\"\nprofiles_dir = %q\n[mqtt]\nbrokers = [\"tcp://127.0.0.1:1883\"]\n"+
		"[[bus]]\nname = \"rs485\"\nprotocol = \"modbus-rtu\"\ndevice = %q\nbaud = %d\nparity = \"even\"\ntimeout = \"2s\"\n"+
		"[[device]]\nname = \"m\"\nbus = \"rs485\"\nprofile = \"eastron-sdm630\"\n", b.TempDir(), gwEnd, baud)
	cfg, err := gateway.ParseConfig("b.toml", []byte(doc))
	if err != nil {
		b.Fatal(err)
	}
	bus := gateway.Simulated(cfg)
	sim, err := simulator.New(bus.Devices, "", slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error)
	devPort := testpty.Open(b, devEnd)
	go func() { served <- sim.ServeSerial(ctx, devPort, false) }()
	defer func() { cancel(); <-served }()
	opts := modbus.Options{Name: "rs485", Mode: modbus.RTU, Line: bus.Line, Timeout: 2 * time.Second, MaxGap: -1, Devices: bus.Devices}
	drv, err := modbus.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer drv.Close()

	// The bytes a poll puts on the wire: each request is 8 bytes, each
	// reply 5 plus 2 per register.
	var points []modbus.Point
	for _, pc := range bus.Devices[0].Points {
		p, _ := modbus.ParsePoint(pc)
		points = append(points, p)
	}
	plan := modbus.Plan(points, modbus.MaxGapFor(opts))
	bytes := 0
	for _, r := range plan {
		bytes += 8 + 5 + 2*int(r.Count)
	}
	wire := time.Duration(bytes) * char
	silences := time.Duration(2*len(plan)) * char * 7 / 2
	var r drivers.Reading
	b.ResetTimer()
	for range b.N {
		r.Reset("m", time.Now())
		drv.Read(ctx, "m", &r)
		if len(r.Errors) > 0 {
			b.Fatalf("errors: %+v", r.Errors[0])
		}
	}
	cycle := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(len(plan)), "requests")
	b.ReportMetric(wire.Seconds()*1000, "wire-ms")
	b.ReportMetric((wire+silences).Seconds()*1000, "wire+silence-ms")
	b.ReportMetric(cycle.Seconds()*1000, "cycle-ms")
	b.ReportMetric(float64(cycle)/float64(wire), "x-wire")
}
