package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"edgegw/drivers"
	"edgegw/drivers/modbus"
	"edgegw/gateway/config"
	"edgegw/internal/testpty"
)

// TestRS485ModeRefusedIsReported: a bus that asks for kernel RS-485 mode on
// a port without it (a pty here) cannot send; every reading says why.
func TestRS485ModeRefusedIsReported(t *testing.T) {
	_, gatewayEnd := testpty.Pair(t)
	for _, proto := range []string{"modbus-rtu", "serial"} {
		bus := config.Bus{Name: "b", Protocol: proto, Device: gatewayEnd, RS485: true, Baud: 9600, DataBits: 8,
			Parity: "none", StopBits: 1, Timeout: config.Duration(100 * time.Millisecond), Framing: "line", Delimiter: "\n", MaxGap: -1}
		dev := config.Device{Name: "d", UnitID: 1, Format: "kv", Points: []config.Point{
			{Name: "p", Table: "holding", Type: "uint16", ByteOrder: "ABCD", Bit: -1, Scale: 1, Field: "p"}}}
		drv, err := openDriver(bus, []config.Device{dev}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		var r drivers.Reading
		r.Reset("d", time.Now())
		drv.Read(context.Background(), "d", &r)
		drv.Close()
		if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Err, "no kernel RS-485 support") {
			t.Errorf("%s: %+v", proto, r.Errors)
		}
	}
	if _, err := openDriver(config.Bus{Protocol: "can"}, nil, slog.New(slog.DiscardHandler)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown protocol: %v", err)
	}
}

// TestScanOpensTheBusAsRunDoes: scan asks for the bus's kernel RS-485
// mode too (it once opened the port without it, and never drove the line).
func TestScanOpensTheBusAsRunDoes(t *testing.T) {
	_, gatewayEnd := testpty.Pair(t)
	cfg := &config.Config{File: "sensors.toml", Buses: []config.Bus{{Name: "rs485", Protocol: "modbus-rtu", Device: gatewayEnd, RS485: true,
		Baud: 9600, DataBits: 8, Parity: "none", StopBits: 1, Timeout: config.Duration(100 * time.Millisecond), MaxGap: -1}}}
	err := Scan(context.Background(), cfg, "rs485", []int{1}, 50*time.Millisecond, func(r modbus.ScanResult) {})
	if err == nil || !strings.Contains(err.Error(), "no kernel RS-485 support") {
		t.Errorf("scan of an rs485 bus on a port without RS-485: %v", err)
	}
}
