package modbus

import (
	"context"
	"edgegw/drivers"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	smodbus "github.com/simonvetter/modbus"
)

// keepServer is a real Modbus TCP device whose holding registers and coils
// keep what is written, except at the addresses of stuck: those accept a
// write and keep their value, like a device that clamps a setpoint.
type keepServer struct {
	mu      sync.Mutex
	holding map[uint16]uint16
	coils   map[uint16]bool
	stuck   map[uint16]bool
	writes  int
}

func newKeepServer() *keepServer {
	return &keepServer{holding: map[uint16]uint16{}, coils: map[uint16]bool{}, stuck: map[uint16]bool{}}
}

func (s *keepServer) HandleHoldingRegisters(r *smodbus.HoldingRegistersRequest) ([]uint16, error) {
	return keep(s, s.holding, r.Addr, r.Quantity, r.IsWrite, r.Args), nil
}

func (s *keepServer) HandleCoils(r *smodbus.CoilsRequest) ([]bool, error) {
	return keep(s, s.coils, r.Addr, r.Quantity, r.IsWrite, r.Args), nil
}

// keep serves one request on table m: a write stores args (except at stuck
// addresses) and counts; either way the answer is what m holds.
func keep[T any](s *keepServer, m map[uint16]T, addr, qty uint16, write bool, args []T) []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]T, qty)
	for i := range out {
		a := addr + uint16(i)
		if write && !s.stuck[a] {
			m[a] = args[i]
		}
		out[i] = m[a]
	}
	if write {
		s.writes++
	}
	return out
}

func (s *keepServer) HandleInputRegisters(*smodbus.InputRegistersRequest) ([]uint16, error) {
	return nil, smodbus.ErrIllegalFunction
}

func (s *keepServer) HandleDiscreteInputs(*smodbus.DiscreteInputsRequest) ([]bool, error) {
	return nil, smodbus.ErrIllegalFunction
}

func (s *keepServer) writeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// writablePoints are one of each kind of writable point.
var writablePoints = []PointSpec{
	{Name: "relay", Table: "coil", Address: 3, Type: "bool"},
	{Name: "setpoint", Address: 10, Type: "int16", Scale: 0.1},
	{Name: "i64", Address: 20, Type: "int64"},
	{Name: "u64", Address: 30, Type: "uint64"},
	{Name: "f32", Address: 40, Type: "float32"},
	{Name: "tiny", Address: 50, Type: "float64", Scale: 1e-300},
	{Name: "label", Address: 60, Type: "string", Length: 2},
	{Name: "limited", Address: 70, Type: "int32", Scale: 0.5, Min: ptr(-10.0), Max: ptr(100.0)},
	{Name: "floor", Address: 80, Type: "uint16", Min: ptr(5.0)},
}

func ptr(f float64) *float64 { return &f }

func openWritable(t *testing.T, srv *keepServer) *Bus {
	t.Helper()
	dev := Device{Name: "d", UnitID: 1}
	for _, p := range writablePoints {
		p.Bit, p.ByteOrder, p.Writable = -1, "ABCD", true
		if p.Scale == 0 {
			p.Scale = 1
		}
		dev.Points = append(dev.Points, p)
	}
	bus, err := Open(tcpBus(serve(t, srv), dev))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	return bus
}

// TestWriteRefusesWhatItCannotWriteExactly: null, wrong JSON types and
// values the register type cannot hold are refused before anything is
// written; a null once turned a coil OFF and 2^63 wrapped to -2^63.
func TestWriteRefusesWhatItCannotWriteExactly(t *testing.T) {
	srv := newKeepServer()
	srv.coils[3] = true
	bus := openWritable(t, srv)
	for _, tc := range []struct{ point, value, want string }{
		{"relay", "null", "null"},
		{"relay", "1", "true or false"},
		{"relay", `"on"`, "true or false"},
		{"setpoint", "null", "null"},
		{"setpoint", "true", "number"},
		{"setpoint", `"21"`, "number"},
		{"setpoint", "[1]", "number"},
		{"setpoint", "1e999", "finite"},
		{"setpoint", "3276.8", "does not fit"},
		{"i64", "9223372036854775808", "does not fit"},
		{"i64", "-9223372036854775809", "does not fit"},
		{"u64", "18446744073709551616", "does not fit"},
		{"u64", "-1", "does not fit"},
		{"f32", "1e39", "does not fit"},
		{"f32", "-3.5e38", "does not fit"},
		{"tiny", "1e10", "does not fit"},
		{"label", "null", "null"},
		{"label", "12", "string"},
		{"label", `"too long"`, "does not fit"},
		{"limited", "100.5", "outside min..max (-10..100)"},
		{"limited", "-10.5", "outside min..max (-10..100)"},
		{"floor", "4", "outside min..max (5..any)"},
	} {
		_, err := bus.Write(context.Background(), "d", tc.point, json.RawMessage(tc.value))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s = %s: %v, want an error saying %q", tc.point, tc.value, err, tc.want)
		}
	}
	if n := srv.writeCount(); n != 0 {
		t.Errorf("%d writes reached the device", n)
	}
	if !srv.coils[3] {
		t.Error("the relay was switched off")
	}
}

// TestWriteReadsBack: a write returns the value read back after it; a
// device that keeps something else makes the write fail with both values.
func TestWriteReadsBack(t *testing.T) {
	srv := newKeepServer()
	bus := openWritable(t, srv)
	for _, tc := range []struct{ point, value, want string }{
		{"relay", "true", "true"},
		{"relay", "false", "false"},
		{"setpoint", "21.46", "21.5"}, // rounded to the register's 0.1 steps
		{"i64", "9223372036854775807", "9223372036854775807"},
		{"i64", "-9223372036854775808", "-9223372036854775808"},
		{"u64", "18446744073709551615", "18446744073709551615"},
		{"f32", "230.1", "230.1"},
		{"label", `"AB"`, `"AB"`},
		{"limited", "100", "100"},
		{"limited", "-10", "-10"},
		{"floor", "5", "5"},
	} {
		got, err := bus.Write(context.Background(), "d", tc.point, json.RawMessage(tc.value))
		if err != nil || got.String() != tc.want {
			t.Errorf("%s = %s: read back %s, %v; want %s", tc.point, tc.value, got, err, tc.want)
		}
	}

	srv.mu.Lock()
	srv.stuck[10], srv.stuck[3] = true, true
	srv.mu.Unlock()
	_, err := bus.Write(context.Background(), "d", "setpoint", json.RawMessage("30"))
	var rb *drivers.ReadBackError
	if !errors.As(err, &rb) || rb.Written.String() != "30" || rb.Read.String() != "21.5" {
		t.Errorf("setpoint = 30 on a device that keeps 21.5: %v", err)
	}
	_, err = bus.Write(context.Background(), "d", "relay", json.RawMessage("true"))
	if !errors.As(err, &rb) || rb.Written.String() != "true" || rb.Read.String() != "false" {
		t.Errorf("relay = true on a device that keeps false: %v", err)
	}
}
