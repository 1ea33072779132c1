package modbus

import (
	"strconv"

	"edgegw/drivers"

	"context"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	smodbus "github.com/simonvetter/modbus"

	"edgegw/internal/testbroker"
)

// regServer is a real Modbus TCP server holding fixed registers; addresses
// at or above refuseFrom answer with an illegal-address exception.
type regServer struct {
	mu         sync.Mutex
	holding    map[uint16]uint16
	input      map[uint16]uint16
	coils      map[uint16]bool
	refuseFrom uint16
	requests   int
}

func (s *regServer) regs(m map[uint16]uint16, addr, qty uint16) ([]uint16, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if int(addr)+int(qty) > int(s.refuseFrom) {
		return nil, smodbus.ErrIllegalDataAddress
	}
	out := make([]uint16, qty)
	for i := range out {
		out[i] = m[addr+uint16(i)]
	}
	return out, nil
}

func (s *regServer) HandleHoldingRegisters(r *smodbus.HoldingRegistersRequest) ([]uint16, error) {
	return s.regs(s.holding, r.Addr, r.Quantity)
}
func (s *regServer) HandleInputRegisters(r *smodbus.InputRegistersRequest) ([]uint16, error) {
	return s.regs(s.input, r.Addr, r.Quantity)
}
func (s *regServer) HandleCoils(r *smodbus.CoilsRequest) ([]bool, error) {
	out := make([]bool, r.Quantity)
	for i := range out {
		out[i] = s.coils[r.Addr+uint16(i)]
	}
	return out, nil
}
func (s *regServer) HandleDiscreteInputs(r *smodbus.DiscreteInputsRequest) ([]bool, error) {
	return nil, smodbus.ErrIllegalFunction
}

// freeAddr is a loopback host:port that was free a moment ago.
func freeAddr(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t)) }

func serve(t *testing.T, h smodbus.RequestHandler) string {
	t.Helper()
	addr := freeAddr(t)
	srv, err := smodbus.NewServer(&smodbus.ServerConfiguration{URL: "tcp://" + addr, Timeout: time.Minute, MaxClients: 4, Logger: log.New(io.Discard, "", 0)}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	return addr
}

// tcpBus is a Modbus TCP bus to addr with devices.
func tcpBus(addr string, devices ...Device) Options {
	return Options{Name: "lan", Mode: TCP, Address: addr, Timeout: 300 * time.Millisecond, Retries: 0, MaxGap: -1, Devices: devices}
}

// put encodes v for point pc into the server's registers.
func put(t *testing.T, s *regServer, pc PointSpec, v any) {
	t.Helper()
	p, err := ParsePoint(pc)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2*p.Width())
	if str, ok := v.(string); ok {
		err = p.EncodeString(buf, str)
	} else {
		err = p.Encode(buf, v.(float64))
	}
	if err != nil {
		t.Fatal(err)
	}
	m := s.holding
	if p.Table == Input {
		m = s.input
	}
	for i := 0; i < p.Width(); i++ {
		m[p.Address+uint16(i)] = uint16(buf[2*i])<<8 | uint16(buf[2*i+1])
	}
}

// valuesText lists a reading's values as name=value, floats as short as
// their width allows, and then its errors.
func valuesText(r *drivers.Reading) string {
	var b strings.Builder
	for _, v := range r.Values {
		b.WriteString(v.Point + "=")
		switch v.Kind {
		case drivers.KindFloat:
			b.WriteString(strconv.FormatFloat(v.F, 'g', 15, 64))
		case drivers.KindFloat32:
			b.WriteString(strconv.FormatFloat(v.F, 'g', -1, 32))
		case drivers.KindInt:
			b.WriteString(strconv.FormatInt(v.I, 10))
		case drivers.KindUint:
			b.WriteString(strconv.FormatUint(v.U, 10))
		case drivers.KindBool:
			b.WriteString(strconv.FormatBool(v.B))
		case drivers.KindString:
			b.WriteString(strconv.Quote(v.S))
		}
		b.WriteString(" ")
	}
	fmt.Fprintf(&b, "errors=%v", r.Errors)
	return b.String()
}

func TestTCPReadsEveryType(t *testing.T) {
	srv := &regServer{holding: map[uint16]uint16{}, input: map[uint16]uint16{}, coils: map[uint16]bool{3: true}, refuseFrom: 1000}
	points := []struct {
		pc PointSpec
		v  any
	}{
		{PointSpec{Name: "u16", Table: "holding", Address: 0, Type: "uint16", ByteOrder: "ABCD"}, 54321.0},
		{PointSpec{Name: "i16", Table: "holding", Address: 1, Type: "int16", ByteOrder: "ABCD"}, -1234.0},
		{PointSpec{Name: "u32", Table: "holding", Address: 2, Type: "uint32", ByteOrder: "CDAB"}, 3123456789.0},
		{PointSpec{Name: "i32", Table: "holding", Address: 4, Type: "int32", ByteOrder: "DCBA"}, -123456.0},
		{PointSpec{Name: "f32", Table: "input", Address: 0, Type: "float32", ByteOrder: "BADC"}, 230.1},
		{PointSpec{Name: "f64", Table: "input", Address: 2, Type: "float64", ByteOrder: "ABCD"}, 1234.5},
		{PointSpec{Name: "i64", Table: "input", Address: 6, Type: "int64", ByteOrder: "CDAB"}, -5.0},
		{PointSpec{Name: "scaled", Table: "holding", Address: 10, Type: "uint16", ByteOrder: "ABCD", Scale: 0.1, Offset: 0}, 230.1},
		{PointSpec{Name: "name", Table: "holding", Address: 20, Type: "string", Length: 4, ByteOrder: "ABCD"}, "EDGE01"},
	}
	dev := Device{Name: "d", UnitID: 1}
	for _, p := range points {
		p.pc.Bit = -1
		if p.pc.Scale == 0 {
			p.pc.Scale = 1
		}
		put(t, srv, p.pc, p.v)
		dev.Points = append(dev.Points, p.pc)
	}
	srv.holding[30] = 0b1000
	dev.Points = append(dev.Points,
		PointSpec{Name: "flag", Table: "holding", Address: 30, Type: "bool", Bit: 3, ByteOrder: "ABCD", Scale: 1},
		PointSpec{Name: "relay", Table: "coil", Address: 3, Type: "bool", Bit: -1, ByteOrder: "ABCD", Scale: 1},
	)
	bus, err := Open(tcpBus(serve(t, srv), []Device{dev}...))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	var r drivers.Reading
	r.Reset("d", time.Now())
	bus.Read(context.Background(), "d", &r)
	want := `u16=54321 i16=-1234 u32=3123456789 i32=-123456 f32=230.1 f64=1234.5 i64=-5 scaled=230.1 name="EDGE01" flag=true relay=true errors=[]`
	if got := valuesText(&r); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// Holding 0..30 bridges gaps of at most 10, input 0..9 is contiguous, plus the coil.
	if got := bus.Requests("d"); got != 3 {
		t.Errorf("requests per poll: got %d, want 3", got)
	}
}

func TestTCPExceptionMarksOnlyItsPoints(t *testing.T) {
	srv := &regServer{holding: map[uint16]uint16{0: 7}, input: map[uint16]uint16{}, refuseFrom: 100}
	dev := Device{Name: "d", UnitID: 1, Points: []PointSpec{
		{Name: "good", Table: "holding", Address: 0, Type: "uint16", ByteOrder: "ABCD", Bit: -1, Scale: 1},
		{Name: "bad", Table: "holding", Address: 500, Type: "uint16", ByteOrder: "ABCD", Bit: -1, Scale: 1},
	}}
	bus, _ := Open(tcpBus(serve(t, srv), []Device{dev}...))
	defer bus.Close()
	var r drivers.Reading
	r.Reset("d", time.Now())
	bus.Read(context.Background(), "d", &r)
	want := `good=7 errors=[{bad modbus exception 2: illegal data address}]`
	if got := valuesText(&r); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestTCPSilentAndRefusingDevices(t *testing.T) {
	// A device that accepts the connection and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	dev := Device{Name: "d", UnitID: 1, Points: []PointSpec{{Name: "p", Table: "holding", Type: "uint16", ByteOrder: "ABCD", Bit: -1, Scale: 1}}}
	for name, tc := range map[string]struct{ addr, want string }{
		"silent":  {l.Addr().String(), "timeout: no reply within 300ms"},
		"refused": {freeAddr(t), "connection refused"},
	} {
		t.Run(name, func(t *testing.T) {
			bus, _ := Open(tcpBus(tc.addr, []Device{dev}...))
			defer bus.Close()
			var r drivers.Reading
			start := time.Now()
			bus.Read(context.Background(), "d", &r)
			if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Err, tc.want) {
				t.Fatalf("errors %+v, want one with %q", r.Errors, tc.want)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("a failed read took %s with a 300ms timeout", took)
			}
		})
	}
}

// TestTCPRecoversAfterServerRestart: a device that goes away and comes back
// is read again without a restart of the gateway.
func TestTCPRecoversAfterServerRestart(t *testing.T) {
	srv := &regServer{holding: map[uint16]uint16{0: 42}, refuseFrom: 100}
	addr := freeAddr(t)
	start := func() *smodbus.ModbusServer {
		s, _ := smodbus.NewServer(&smodbus.ServerConfiguration{URL: "tcp://" + addr, Timeout: time.Minute, MaxClients: 4, Logger: log.New(io.Discard, "", 0)}, srv)
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start()
	dev := Device{Name: "d", UnitID: 1, Points: []PointSpec{{Name: "p", Table: "holding", Type: "uint16", ByteOrder: "ABCD", Bit: -1, Scale: 1}}}
	bus, _ := Open(tcpBus(addr, []Device{dev}...))
	defer bus.Close()
	read := func() string {
		var r drivers.Reading
		bus.Read(context.Background(), "d", &r)
		return fmt.Sprint(r.Values, r.Errors)
	}
	if got := read(); !strings.Contains(got, "42") {
		t.Fatalf("first read: %s", got)
	}
	s.Stop()
	if got := read(); strings.Contains(got, "42") {
		t.Fatalf("read from a stopped server: %s", got)
	}
	s = start()
	defer s.Stop()
	if got := read(); !strings.Contains(got, "42") {
		t.Fatalf("read after restart: %s", got)
	}
}
