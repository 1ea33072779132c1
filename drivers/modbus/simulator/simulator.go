// Package simulator serves a Modbus TCP device that answers every point of a
// config with plausible, changing values, so a user can try a config (and
// the demo can run) without hardware.
//
// Values follow the point's name and drift as a real meter's do: a voltage
// wanders ±0.5% around 230 with a little noise, a load steps between
// levels every half minute or so (power, current), a frequency drifts near
// 50, an energy counter only rises (by about 2 kWh an hour), a bool toggles. Registers
// no point covers read as 0, up to NoSuchAddress (exception 2 from there);
// writes to holding registers and coils stick.
package simulator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	smodbus "github.com/simonvetter/modbus"

	"edgegw/drivers"
	"edgegw/drivers/modbus"
)

// Server is a simulated Modbus TCP device serving the points of a config.
type Server struct {
	listen string
	log    *slog.Logger
	start  time.Time
	now    func() time.Time

	units map[uint8][]modbus.Point // by unit id

	mu      sync.Mutex
	written map[uint8]map[modbus.Table]map[uint16]uint16 // writes that stick

	// MaxClients bounds the TCP connections at once (some real devices
	// take one); 0 means 16. Set before Run.
	MaxClients int
	requests   atomic.Uint64 // requests answered (exceptions included)
	overlaps   atomic.Uint64 // serial requests that arrived before the previous was answered
}

// NoSuchAddress is where the simulated devices' address space ends: a
// request for registers or bits at or above it is answered with exception
// 2 (illegal data address), as a real device answers an unmapped one.
const NoSuchAddress = 0xF000

// Requests returns how many requests the simulator has answered, over TCP
// and serial lines; safe from any goroutine.
func (s *Server) Requests() uint64 { return s.requests.Load() }

// Overlaps returns how many serial requests arrived while an earlier one
// was still unanswered: on a real RS-485 line, two masters talking at once.
func (s *Server) Overlaps() uint64 { return s.overlaps.Load() }

// New prepares a simulator answering for devices, by unit id; listen is host:port.
func New(devices []modbus.Device, listen string, log *slog.Logger) (*Server, error) {
	s := &Server{
		listen:  listen,
		log:     log,
		now:     time.Now,
		units:   map[uint8][]modbus.Point{},
		written: map[uint8]map[modbus.Table]map[uint16]uint16{},
	}
	s.start = s.now()
	for _, d := range devices {
		for _, pc := range d.Points {
			p, err := modbus.ParsePoint(pc)
			if err != nil {
				return nil, err
			}
			s.units[uint8(d.UnitID)] = append(s.units[uint8(d.UnitID)], p)
		}
	}
	if len(s.units) == 0 {
		return nil, errors.New("simulator: the config has no Modbus device to simulate")
	}
	return s, nil
}

// Freeze holds the simulated time at d after the start: every read answers
// the same values from then on (golden tests). Call it before Run.
func (s *Server) Freeze(d time.Duration) {
	at := s.start.Add(d)
	s.now = func() time.Time { return at }
}

// Units returns how many unit ids the simulator answers.
func (s *Server) Units() int { return len(s.units) }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	srv, err := smodbus.NewServer(&smodbus.ServerConfiguration{
		URL:        "tcp://" + s.listen,
		Timeout:    5 * time.Minute,
		MaxClients: uint(cmp.Or(s.MaxClients, 16)),
		Logger:     log.New(io.Discard, "", 0),
	}, s)
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("simulator: listen on %s: %w", s.listen, err)
	}
	s.log.Info("simulator_listening", "address", s.listen, "units", len(s.units))
	<-ctx.Done()
	return srv.Stop()
}

// registers builds the current register image of [addr, addr+qty) of a table.
func (s *Server) registers(unit uint8, table modbus.Table, addr, qty uint16) ([]uint16, error) {
	points, ok := s.units[unit]
	if !ok {
		return nil, smodbus.ErrGWTargetFailedToRespond
	}
	if int(addr)+int(qty) > NoSuchAddress {
		return nil, smodbus.ErrIllegalDataAddress
	}
	t := s.now().Sub(s.start).Seconds()
	out := make([]uint16, qty)
	var buf [2 * modbus.MaxRegisters]byte
	for i := range points {
		p := &points[i]
		w := p.Width()
		if p.Table != table || int(p.Address)+w <= int(addr) || int(p.Address) >= int(addr)+int(qty) {
			continue
		}
		b := buf[:2*w]
		var err error
		if p.Type == drivers.String {
			err = p.EncodeString(b, "SIM-"+strings.ToUpper(p.Name))
			if err != nil {
				err = p.EncodeString(b, "SIM"[:min(3, 2*p.Length)])
			}
		} else {
			err = p.Encode(b, clampTo(p, value(p, t)))
		}
		if err != nil {
			continue
		}
		for r := range w {
			a := int(p.Address) + r - int(addr)
			if a >= 0 && a < int(qty) {
				out[a] = uint16(b[2*r])<<8 | uint16(b[2*r+1])
			}
		}
	}
	s.mu.Lock()
	for a, v := range s.written[unit][table] {
		if a >= addr && int(a) < int(addr)+int(qty) {
			out[a-addr] = v
		}
	}
	s.mu.Unlock()
	return out, nil
}

func (s *Server) write(unit uint8, table modbus.Table, addr uint16, vals []uint16) error {
	if _, ok := s.units[unit]; !ok {
		return smodbus.ErrGWTargetFailedToRespond
	}
	if int(addr)+len(vals) > NoSuchAddress {
		return smodbus.ErrIllegalDataAddress
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written[unit] == nil {
		s.written[unit] = map[modbus.Table]map[uint16]uint16{}
	}
	if s.written[unit][table] == nil {
		s.written[unit][table] = map[uint16]uint16{}
	}
	for i, v := range vals {
		s.written[unit][table][addr+uint16(i)] = v
	}
	return nil
}

// HandleHoldingRegisters answers FC3, FC6 and FC16.
func (s *Server) HandleHoldingRegisters(req *smodbus.HoldingRegistersRequest) ([]uint16, error) {
	s.requests.Add(1)
	if req.IsWrite {
		if err := s.write(req.UnitId, modbus.Holding, req.Addr, req.Args); err != nil {
			return nil, err
		}
	}
	return s.registers(req.UnitId, modbus.Holding, req.Addr, req.Quantity)
}

// HandleInputRegisters answers FC4.
func (s *Server) HandleInputRegisters(req *smodbus.InputRegistersRequest) ([]uint16, error) {
	s.requests.Add(1)
	return s.registers(req.UnitId, modbus.Input, req.Addr, req.Quantity)
}

// HandleCoils answers FC1, FC5 and FC15.
func (s *Server) HandleCoils(req *smodbus.CoilsRequest) ([]bool, error) {
	s.requests.Add(1)
	if req.IsWrite {
		vals := make([]uint16, len(req.Args))
		for i, b := range req.Args {
			if b {
				vals[i] = 1
			}
		}
		if err := s.write(req.UnitId, modbus.Coil, req.Addr, vals); err != nil {
			return nil, err
		}
	}
	return s.bits(req.UnitId, modbus.Coil, req.Addr, req.Quantity)
}

// HandleDiscreteInputs answers FC2.
func (s *Server) HandleDiscreteInputs(req *smodbus.DiscreteInputsRequest) ([]bool, error) {
	s.requests.Add(1)
	return s.bits(req.UnitId, modbus.Discrete, req.Addr, req.Quantity)
}

func (s *Server) bits(unit uint8, table modbus.Table, addr, qty uint16) ([]bool, error) {
	regs, err := s.registers(unit, table, addr, qty)
	if err != nil {
		return nil, err
	}
	out := make([]bool, qty)
	for i, r := range regs {
		out[i] = r != 0
	}
	return out, nil
}

// value is the simulated engineering value of p at t seconds.
func value(p *modbus.Point, t float64) float64 {
	phase := float64(p.Address) * 0.7
	wave := func(period float64) float64 { return math.Sin(2*math.Pi*t/period + phase) }
	if p.Type == drivers.Bool {
		if int(t/10+phase)%2 == 0 {
			return 0
		}
		return 1
	}
	n := strings.ToLower(p.Name)
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(n, w) {
				return true
			}
		}
		return false
	}
	// noise is ±1 of deterministic jitter, different for each point and second.
	noise := func() float64 {
		x := math.Sin(math.Floor(t)*12.9898+phase*78.233) * 43758.5453
		return 2*(x-math.Floor(x)) - 1
	}
	// load is a level that steps every 20-40 s, between 0.5 and 1.5.
	load := func() float64 {
		step := math.Floor((t + 10*math.Sin(t/97)) / 30)
		x := math.Sin(step*91.7+phase) * 43758.5453
		return 0.5 + (x - math.Floor(x))
	}
	switch {
	case has("energy", "kwh", "counter", "count", "charge"):
		return 1000 + t*0.0005
	case has("freq", "hz"):
		return 50 + 0.03*wave(120) + 0.002*noise()
	case has("thd"):
		return 3 + 0.5*wave(300) + 0.02*noise()
	case has("angle"):
		return 18 + 2*wave(90) + 0.1*noise()
	case has("demand"):
		return 1500 + 200*wave(900)
	case has("volt"):
		return 230 + 1.15*wave(60) + 0.1*noise()
	case has("curr", "amp"):
		return 6.5*load() + 0.01*noise()
	case has("pf", "factor", "cos"):
		return 0.95 + 0.03*wave(90) + 0.001*noise()
	case has("power", "watt"):
		return 1500*load() + 2*noise()
	case has("temp"):
		return 21 + 2*wave(300)
	case has("humid", "rh"):
		return 45 + 5*wave(400)
	case has("total"):
		return 1000 + t*0.0005
	}
	return 100 + 10*wave(60)
}

// clampTo keeps v within what p's type can carry after scale and offset.
func clampTo(p *modbus.Point, v float64) float64 {
	var lo, hi float64
	switch p.Type {
	case drivers.Int16:
		lo, hi = math.MinInt16, math.MaxInt16
	case drivers.Uint16:
		lo, hi = 0, math.MaxUint16
	case drivers.Int32:
		lo, hi = math.MinInt32, math.MaxInt32
	case drivers.Uint32:
		lo, hi = 0, math.MaxUint32
	default:
		return v
	}
	a, b := lo*p.Scale+p.Offset, hi*p.Scale+p.Offset
	return math.Max(math.Min(v, math.Max(a, b)), math.Min(a, b))
}
