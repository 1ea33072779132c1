package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"edgegw/drivers"
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
