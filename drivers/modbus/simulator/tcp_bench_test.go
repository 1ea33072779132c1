package simulator_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"edgegw/drivers"
	"edgegw/drivers/modbus"
	"edgegw/drivers/modbus/simulator"
	"edgegw/gateway"
)

// BenchmarkTCPPollSDM630 polls an SDM630 (63 float32 points, three
// requests) from the simulator over loopback TCP, reusing the reading as
// the poller does, and reports the allocations of a poll and per point:
// the poll path allocates per request (the Modbus client's frames), not
// per point.
func BenchmarkTCPPollSDM630(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	doc := fmt.Sprintf("[gateway]\nid = \"g\"\nprofiles_dir = %q\n[mqtt]\nbrokers = [\"tcp://127.0.0.1:1883\"]\n"+
		"[[bus]]\nname = \"lan\"\nprotocol = \"modbus-tcp\"\naddress = %q\n"+
		"[[device]]\nname = \"m\"\nbus = \"lan\"\nprofile = \"eastron-sdm630\"\n", b.TempDir(), addr)
	cfg, err := gateway.ParseConfig("b.toml", []byte(doc))
	if err != nil {
		b.Fatal(err)
	}
	bus := gateway.Simulated(cfg)
	sim, err := simulator.New(bus.Devices, addr, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- sim.Run(ctx) }()
	defer func() { cancel(); <-served }()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the simulator does not listen")
		}
		time.Sleep(10 * time.Millisecond) // polling the listener's start
	}
	drv, err := modbus.Open(modbus.Options{Name: "lan", Mode: modbus.TCP, Address: addr, Timeout: 2 * time.Second, MaxGap: -1, Devices: bus.Devices})
	if err != nil {
		b.Fatal(err)
	}
	defer drv.Close()
	var r drivers.Reading
	read := func() {
		r.Reset("m", time.Now())
		drv.Read(ctx, "m", &r)
		if len(r.Errors) > 0 {
			b.Fatalf("errors: %+v", r.Errors[0])
		}
	}
	read() // the connection and the reading's storage
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		read()
	}
	b.StopTimer()
	allocs := testing.AllocsPerRun(20, read)
	b.ReportMetric(allocs/float64(len(r.Values)), "allocs/point")
}
