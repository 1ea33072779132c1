// Package modbus reads and writes Modbus devices over TCP, RTU and ASCII.
//
// It promises: the points of a device are read in as few requests as the
// protocol allows (Plan, computed once when the bus opens); every type and
// byte order of docs/CONFIG.md decodes without allocation (strings aside); a
// failed request marks only its own points as errors, with a readable reason;
// and one bus is used by one goroutine, one request at a time. Every read
// reply is kept, raw, in the bus's register Image, which other goroutines
// may read; Transact carries a raw request for a server in front of the bus.
//
// The wire work is done by github.com/goburrow/modbus. This package knows
// nothing of MQTT or the buffer.
package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"

	gmodbus "github.com/goburrow/modbus"

	"edgegw/drivers"
	"edgegw/internal/backoff"
)

// device is a device on a bus with its request plan.
type device struct {
	name     string
	unit     byte
	interval time.Duration
	points   []Point
	plan     []Request
	// failing counts polls in a row where nothing answered; while
	// retryAt is ahead, the device is not asked, so it cannot eat the bus
	// time of the others.
	failing int
	retryAt time.Time
	stats   busStats
	// results holds one poll's outcome per point, so the reading lists
	// points in config order whatever order the requests ran in.
	results []result
}

type result struct {
	value drivers.Value
	err   string
}

// Bus polls the devices of one Modbus bus. Read and Write must be called
// from one goroutine at a time: a bus carries one request at a time.
type Bus struct {
	name    string
	client  gmodbus.Client
	setUnit func(byte)   // addresses the next request
	reset   func()       // after a failed request: a TCP bus reconnects
	close   func() error // releases the connection or port
	// packager and transporter carry Transact's requests, which the
	// goburrow client has no call for.
	packager    gmodbus.Packager
	transporter gmodbus.Transporter
	// image holds every read reply, polls' and Transact's.
	image   *Image
	timeout time.Duration
	retries int
	devices map[string]*device
	log     *slog.Logger
}

// Open prepares a Modbus bus and plans its devices' requests; it touches
// no wire. On TCP the first Read connects, and Read reconnects after any
// failure. On RTU and ASCII goburrow's packagers frame and check the
// requests and replies and lineTransport moves them on the wire; the port
// opens at the first request and reopens after a failure (an unplugged USB
// adapter).
func Open(o Options) (*Bus, error) {
	var b *Bus
	switch o.Mode {
	case TCP:
		t := newTCPTransport(o)
		h := gmodbus.NewTCPClientHandler(o.Address)
		b = &Bus{client: gmodbus.NewClient2(h, t), setUnit: func(u byte) { h.SlaveId = u },
			// A timeout or broken connection may leave a late reply in the
			// socket; a fresh connection keeps it from answering the next request.
			reset: func() { _ = t.Close() }, close: t.Close, packager: h, transporter: t}
	case RTU:
		t := newLineTransport(o)
		h := gmodbus.NewRTUClientHandler(o.Line.Device)
		b = &Bus{client: gmodbus.NewClient2(h, t), setUnit: func(u byte) { h.SlaveId = u }, reset: func() {}, close: t.Close, packager: h, transporter: t}
	case ASCII:
		t := newLineTransport(o)
		h := gmodbus.NewASCIIClientHandler(o.Line.Device)
		b = &Bus{client: gmodbus.NewClient2(h, t), setUnit: func(u byte) { h.SlaveId = u }, reset: func() {}, close: t.Close, packager: h, transporter: t}
	default:
		return nil, fmt.Errorf("modbus: bus %s: unknown mode %d", o.Name, o.Mode)
	}
	return b.plan(o)
}

// plan finishes a Bus: its devices and their request plans.
func (b *Bus) plan(o Options) (*Bus, error) {
	b.name, b.timeout, b.retries, b.log, b.image = o.Name, o.Timeout, o.Retries, o.Log, NewImage()
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.devices = map[string]*device{}
	for _, dc := range o.Devices {
		d := &device{name: dc.Name, unit: byte(dc.UnitID), interval: dc.Interval}
		for _, pc := range dc.Points {
			p, err := ParsePoint(pc)
			if err != nil {
				return nil, err
			}
			d.points = append(d.points, p)
		}
		d.plan = Plan(d.points, MaxGapFor(o))
		d.results = make([]result, len(d.points))
		b.devices[dc.Name] = d
	}
	return b, nil
}

// Requests returns how many requests one poll of the named device makes.
func (b *Bus) Requests(device string) int {
	if d, ok := b.devices[device]; ok {
		return len(d.plan)
	}
	return 0
}

// Read polls the named device once, filling r with a value or an error for
// every point. It returns early, with the rest of the points under errors,
// when ctx ends.
func (b *Bus) Read(ctx context.Context, name string, r *drivers.Reading) {
	d, ok := b.devices[name]
	if !ok {
		return
	}
	if now := time.Now(); now.Before(d.retryAt) {
		msg := fmt.Sprintf("device not answering (%d polls); next try in %s", d.failing, d.retryAt.Sub(now).Round(time.Second))
		for _, p := range d.points {
			r.AddError(p.Name, msg)
		}
		return
	}
	answered := false
	for i := 0; i < len(d.plan); i++ {
		req := d.plan[i]
		var data []byte
		var err error
		for try := 0; try <= b.retries; try++ {
			if err = ctx.Err(); err != nil {
				break
			}
			start := time.Now()
			data, err = b.read(d.unit, req)
			d.stats.note(err, time.Since(start))
			if err == nil || isException(err) || ctx.Err() != nil {
				break
			}
		}
		if err == nil || isException(err) {
			answered = true
		}
		if code := exceptionCode(err); code == 2 && len(req.Points) > 1 {
			// One address the device does not have fails the whole request:
			// split it, for good, and try the halves now.
			parts := split(req, d.points)
			d.plan = slices.Concat(d.plan[:i], parts, d.plan[i+1:])
			b.log.Info("modbus_request_split", "device", d.name, "table", req.Table.String(), "start", req.Start, "count", req.Count, "into", len(parts))
			i--
			continue
		}
		for _, i := range req.Points {
			res := &d.results[i]
			if err != nil {
				res.err = describe(err, b.timeout)
				continue
			}
			v, derr := d.points[i].Decode(data, req.Start)
			res.value, res.err = v, ""
			if derr != nil {
				res.err = derr.Error()
			}
		}
	}
	for i := range d.results {
		if res := &d.results[i]; res.err != "" {
			r.AddError(d.points[i].Name, res.err)
		} else {
			r.Add(res.value)
		}
	}
	b.noteAnswer(d, answered || ctx.Err() != nil)
}

// busStats count a device's requests; read by Stats from other goroutines.
type busStats struct {
	requests, timeouts, exceptions, transport, answered atomic.Uint64
	responseNanos                                       atomic.Int64
}

func (s *busStats) note(err error, took time.Duration) {
	s.requests.Add(1)
	switch {
	case err == nil:
	case isException(err):
		s.exceptions.Add(1)
	case errors.Is(err, os.ErrDeadlineExceeded) || isNetTimeout(err):
		s.timeouts.Add(1)
		return // no response to time
	default:
		s.transport.Add(1)
		return
	}
	s.answered.Add(1)
	s.responseNanos.Add(int64(took))
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Stats reports each device's requests, errors by kind (timeout: no reply;
// exception: the device refused; transport: a broken or garbled reply, or
// the port failed) and the time replies took. Safe while Read runs.
func (b *Bus) Stats() []drivers.BusStats {
	out := make([]drivers.BusStats, 0, len(b.devices))
	for _, d := range b.devices {
		s := &d.stats
		out = append(out, drivers.BusStats{
			Device: d.name, Requests: s.requests.Load(),
			Errors:    map[string]uint64{"timeout": s.timeouts.Load(), "exception": s.exceptions.Load(), "transport": s.transport.Load()},
			Responses: s.answered.Load(), ResponseTime: time.Duration(s.responseNanos.Load()),
		})
	}
	return out
}

// maxBackoff bounds how long a silent device goes unasked.
const maxBackoff = 5 * time.Minute

// noteAnswer backs off a device that did not answer at all: it is next asked
// after 2, 4, 8… intervals, at most maxBackoff; logged when it starts and
// when the device answers again.
func (b *Bus) noteAnswer(d *device, answered bool) {
	if answered {
		if d.failing > 0 {
			b.log.Info("device_answering_again", "device", d.name, "unit", d.unit, "silent_polls", d.failing)
		}
		d.failing, d.retryAt = 0, time.Time{}
		return
	}
	d.failing++
	if d.failing == 1 {
		b.log.Warn("device_not_answering", "device", d.name, "unit", d.unit, "hint", "check wiring, unit id and line settings; asked less often until it answers")
	}
	// No jitter: the bus's own schedule is the only one it could meet.
	wait := backoff.Policy{First: 2 * d.interval, Max: maxBackoff}.Delay(d.failing)
	d.retryAt = time.Now().Add(wait)
}

// split cuts a request in two: the first half of its points, by address,
// and the rest, each reading only the span its points need.
func split(req Request, points []Point) []Request {
	idx := slices.Clone(req.Points)
	slices.SortFunc(idx, func(a, b int) int { return int(points[a].Address) - int(points[b].Address) })
	half := len(idx) / 2
	var out []Request
	for _, part := range [][]int{idx[:half], idx[half:]} {
		start, end := int(points[part[0]].Address), 0
		for _, i := range part {
			end = max(end, int(points[i].Address)+points[i].Width())
		}
		out = append(out, Request{Table: req.Table, Start: uint16(start), Count: uint16(end - start), Points: part})
	}
	return out
}

// exceptionCode is the Modbus exception code of err, 0 if it is none.
func exceptionCode(err error) byte {
	if err == nil {
		return 0 // and no allocation for errors.As's target
	}
	var me *gmodbus.ModbusError
	if errors.As(err, &me) {
		return me.ExceptionCode
	}
	return 0
}

func (b *Bus) read(unit byte, req Request) ([]byte, error) {
	b.setUnit(unit)
	var data []byte
	var err error
	switch req.Table {
	case Holding:
		data, err = b.client.ReadHoldingRegisters(req.Start, req.Count)
	case Input:
		data, err = b.client.ReadInputRegisters(req.Start, req.Count)
	case Coil:
		data, err = b.client.ReadCoils(req.Start, req.Count)
	default:
		data, err = b.client.ReadDiscreteInputs(req.Start, req.Count)
	}
	switch {
	case err == nil:
		b.image.Store(unit, req.Table, req.Start, req.Count, data, time.Now())
	case !isException(err):
		b.reset()
	}
	return data, err
}

// Image returns the bus's register image: every read reply, as the device
// sent it. Safe from any goroutine.
func (b *Bus) Image() *Image { return b.image }

// Close closes the bus connection or port.
func (b *Bus) Close() error { return b.close() }

func isException(err error) bool { return exceptionCode(err) != 0 }

var exceptionNames = map[byte]string{
	1: "illegal function", 2: "illegal data address", 3: "illegal data value",
	4: "server device failure", 5: "acknowledge", 6: "server device busy",
	8: "memory parity error", 10: "gateway path unavailable",
	11: "gateway target device failed to respond",
}

// describe turns a request error into the short reason published under errors.
func describe(err error, timeout time.Duration) string {
	var me *gmodbus.ModbusError
	if errors.As(err, &me) {
		name, ok := exceptionNames[me.ExceptionCode]
		if !ok {
			name = "unknown exception"
		}
		return fmt.Sprintf("modbus exception %d: %s", me.ExceptionCode, name)
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("timeout: no reply within %s", timeout)
	}
	return err.Error()
}
