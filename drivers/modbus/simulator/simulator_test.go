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

	gmodbus "github.com/goburrow/modbus"

	"edgegw/drivers/modbus"
	"edgegw/internal/testbroker"
)

// freeAddr is a loopback host:port that was free a moment ago.
func freeAddr(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t)) }

// TestSimulatorServesExampleConfig reads the example config's devices from
// the simulator with the real driver: every point answers, plausibly.
func TestSimulatorServesExampleConfig(t *testing.T) {
	cfg, err := gateway.LoadConfig("../../../examples/sensors.toml")
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	bus := gateway.Simulated(cfg)
	sim, err := simulator.New(bus.Devices, addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- sim.Run(ctx) }()
	defer func() { cancel(); <-done }()

	drv, err := modbus.Open(modbus.Options{Name: "lan", Mode: modbus.TCP, Address: addr, Timeout: time.Second, MaxGap: -1, Devices: bus.Devices})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	testbroker.WaitListening(t, addr, 5*time.Second)
	var r drivers.Reading
	r.Reset("meter1", time.Now())
	drv.Read(ctx, "meter1", &r)
	if len(r.Errors) != 0 || len(r.Values) != 5 {
		t.Fatalf("meter1: values %+v errors %+v", r.Values, r.Errors)
	}
	for _, v := range r.Values {
		if v.Point == "voltage_l1" && (v.F < 220 || v.F > 240) {
			t.Errorf("voltage %v is not plausible", v.F)
		}
		if v.Point == "frequency" && (v.F < 49.5 || v.F > 50.5) {
			t.Errorf("frequency %v is not plausible", v.F)
		}
	}
	r.Reset("plc1", time.Now())
	drv.Read(ctx, "plc1", &r)
	if len(r.Errors) != 0 || len(r.Values) != 3 {
		t.Fatalf("plc1: values %+v errors %+v", r.Values, r.Errors)
	}

	// Writes to holding registers stick; unknown units answer with an exception.
	h := gmodbus.NewTCPClientHandler(addr)
	h.SlaveId = 2
	h.Timeout = time.Second
	defer h.Close()
	c := gmodbus.NewClient(h)
	if _, err := c.WriteSingleRegister(1, 1234); err != nil {
		t.Fatal(err)
	}
	if b, err := c.ReadHoldingRegisters(1, 1); err != nil || b[0] != 0x04 || b[1] != 0xd2 {
		t.Errorf("written register reads back %x, %v", b, err)
	}
	h.SlaveId = 99
	if _, err := c.ReadHoldingRegisters(0, 1); err == nil {
		t.Error("unit 99 answered")
	}
}
