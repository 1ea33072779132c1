package modbus

import (
	"edgegw/drivers"

	"context"
	"strings"
	"testing"
	"time"

	smodbus "github.com/simonvetter/modbus"
)

// holeServer answers holding registers, except that any request covering
// an address in hole fails with exception 2, as real devices do for
// registers they lack.
type holeServer struct {
	regServer
	hole map[uint16]bool
}

func (s *holeServer) HandleHoldingRegisters(r *smodbus.HoldingRegistersRequest) ([]uint16, error) {
	for a := r.Addr; a < r.Addr+r.Quantity; a++ {
		if s.hole[a] {
			s.mu.Lock()
			s.requests++
			s.mu.Unlock()
			return nil, smodbus.ErrIllegalDataAddress
		}
	}
	return s.regs(s.holding, r.Addr, r.Quantity)
}

func TestIllegalAddressSplitsAndRemembers(t *testing.T) {
	srv := &holeServer{regServer: regServer{holding: map[uint16]uint16{}, refuseFrom: 1000}, hole: map[uint16]bool{4: true}}
	dev := Device{Name: "d", UnitID: 1}
	for a := uint16(0); a < 8; a++ {
		srv.holding[a] = 100 + a
		dev.Points = append(dev.Points, PointSpec{Name: "r" + string(rune('0'+a)), Table: "holding", Address: int(a), Type: "uint16", ByteOrder: "ABCD", Bit: -1, Scale: 1})
	}
	bus, err := Open(tcpBus(serve(t, srv), []Device{dev}...))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	poll := func() (*drivers.Reading, int) {
		srv.mu.Lock()
		before := srv.requests
		srv.mu.Unlock()
		var r drivers.Reading
		r.Reset("d", time.Now())
		bus.Read(context.Background(), "d", &r)
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return &r, srv.requests - before
	}
	r, _ := poll()
	if len(r.Values) != 7 || len(r.Errors) != 1 || r.Errors[0].Point != "r4" || !strings.Contains(r.Errors[0].Err, "exception 2") {
		t.Fatalf("first poll: values %d, errors %+v", len(r.Values), r.Errors)
	}
	planned := bus.Requests("d")
	r, n := poll()
	if len(r.Values) != 7 || n != planned {
		t.Fatalf("second poll: %d values in %d requests; the split plan has %d", len(r.Values), n, planned)
	}
	if planned > 4 {
		t.Errorf("the split made %d requests for 8 registers with one hole", planned)
	}
}
