package serial

import (
	"slices"

	"edgegw/drivers"

	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"edgegw/drivers/port"
)

// Bus reads the sensors of one serial line. Read must be called from one
// goroutine at a time.
type Bus struct {
	name    string
	device  string
	framer  framer
	timeout time.Duration
	log     *slog.Logger
	devices map[string]*sensor
	push    []*sensor

	keep     *port.Keeper
	port     port.Port // the open port, nil while it is not
	skipNext bool      // the first frame after opening may be cut: drop it
	buf      []byte
	frames   [][]byte
	chunk    []byte
}

// sensor is a device on the line.
type sensor struct {
	cfg     Device
	parser  parser
	request []byte
	latest  []byte // the newest frame of a push sensor…
	fresh   bool   // …when it came since the last Read
}

// Open prepares a serial bus for its devices; the port opens at the first
// Read, and again after it fails (an unplugged USB adapter), via open.
func Open(o Options) (*Bus, error) {
	b := &Bus{name: o.Name, device: o.Line.Device, timeout: o.Timeout, log: o.Log,
		devices: map[string]*sensor{}, chunk: make([]byte, 1024)}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.keep = &port.Keeper{Bus: o.Name, Device: o.Line.Device, Mode: o.Line.Mode(), Open: o.Open, Log: b.log}
	if o.Framing == "fixed" {
		header, err := hex.DecodeString(o.Header)
		if err != nil {
			return nil, fmt.Errorf("serial: bus %s: header: %w", o.Name, err)
		}
		b.framer = framer{n: o.FrameLength, header: header, checksum: o.Checksum}
	} else {
		b.framer = framer{delim: []byte(o.Delimiter)}
	}
	for _, d := range o.Devices {
		d.Points = slices.Clone(d.Points)
		for i := range d.Points {
			d.Points[i] = d.Points[i].withDefaults()
		}
		p, err := newParser(d)
		if err != nil {
			return nil, err
		}
		s := &sensor{cfg: d, parser: p}
		if d.Request != "" {
			s.request = []byte(d.Request)
		} else {
			b.push = append(b.push, s)
		}
		b.devices[d.Name] = s
	}
	return b, nil
}

// Read takes one reading of the named device: a push sensor's newest frame
// since the last Read (or every point stale), a polled sensor's reply.
func (b *Bus) Read(ctx context.Context, name string, r *drivers.Reading) {
	s, ok := b.devices[name]
	if !ok {
		return
	}
	if err := b.ensureOpen(); err != nil {
		s.fail(r, "port "+b.device+" not available: "+err.Error())
		return
	}
	if s.request != nil {
		b.poll(ctx, s, r)
		return
	}
	b.drain(ctx)
	if !s.fresh {
		s.fail(r, "no frame since the last reading")
		return
	}
	s.parse(s.latest, r)
	s.fresh = false
}

func (s *sensor) fail(r *drivers.Reading, msg string) {
	for _, p := range s.cfg.Points {
		r.AddError(p.Name, msg)
	}
}

// matches reports whether a frame holds at least one of the sensor's fields.
func (s *sensor) matches(frame []byte) bool {
	for i := range s.cfg.Points {
		if _, ok := s.parser.field(frame, s.cfg.Points[i].Field); ok {
			return true
		}
	}
	return false
}

// parse fills r from a frame: a value per point, or why not.
func (s *sensor) parse(frame []byte, r *drivers.Reading) {
	for i := range s.cfg.Points {
		p := &s.cfg.Points[i]
		text, ok := s.parser.field(frame, p.Field)
		if !ok {
			r.AddError(p.Name, "field "+p.Field+" missing from the frame")
			continue
		}
		var v drivers.Value
		var err error
		if s.cfg.Format == "binary" {
			v, err = binaryValue(p, text)
		} else {
			v, err = value(p, text)
		}
		if err != nil {
			r.AddError(p.Name, err.Error())
			continue
		}
		r.Add(v)
	}
}

// drainFor bounds a drain: a line that streams without a pause is never
// empty, and the frames that keep coming are newer ones of the same kind.
const drainFor = 50 * time.Millisecond

// drain reads what the line holds now, without waiting, and keeps each push
// sensor's newest frame; it stops after drainFor, or when ctx ends.
func (b *Bus) drain(ctx context.Context) {
	deadline := time.Now().Add(drainFor)
	for b.port != nil && ctx.Err() == nil && time.Now().Before(deadline) {
		if err := b.port.SetReadTimeout(time.Millisecond); err != nil {
			b.portFailed(err)
			return
		}
		n, err := b.port.Read(b.chunk)
		if err != nil {
			b.portFailed(err)
			return
		}
		if n == 0 {
			return
		}
		b.take(b.chunk[:n], nil)
	}
}

// take adds bytes from the line and hands out whole frames: to want when it
// matches, else to the push sensors they match. It reports a frame for want.
func (b *Bus) take(data []byte, want *sensor) []byte {
	b.buf = append(b.buf, data...)
	var rest []byte
	b.frames, rest = b.framer.split(b.buf, b.frames[:0])
	defer func() {
		// The partial frame moves to the front of the same buffer, once
		// the frames (which alias it) are handled.
		b.buf = b.buf[:copy(b.buf, rest)]
	}()
	var got []byte
	for _, f := range b.frames {
		if b.skipNext {
			b.skipNext = false
			continue
		}
		if want != nil && got == nil && want.matches(f) {
			got = append([]byte(nil), f...)
			continue
		}
		for _, s := range b.push {
			if s.matches(f) {
				s.latest, s.fresh = append(s.latest[:0], f...), true
			}
		}
	}
	return got
}

// poll sends a polled sensor's request and waits, up to the bus timeout,
// for a frame it can read.
func (b *Bus) poll(ctx context.Context, s *sensor, r *drivers.Reading) {
	b.drain(ctx) // frames of push sensors that came meanwhile
	if b.port == nil {
		s.fail(r, "port "+b.device+" failed")
		return
	}
	if err := b.port.ResetInputBuffer(); err != nil {
		b.portFailed(err)
		s.fail(r, "flush: "+err.Error())
		return
	}
	b.buf = b.buf[:0]
	b.skipNext = false
	if _, err := b.port.Write(s.request); err != nil {
		b.portFailed(err)
		s.fail(r, "write: "+err.Error())
		return
	}
	deadline := time.Now().Add(b.timeout)
	for ctx.Err() == nil {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if err := b.port.SetReadTimeout(left); err != nil {
			b.portFailed(err)
			break
		}
		n, err := b.port.Read(b.chunk)
		if err != nil {
			b.portFailed(err)
			s.fail(r, "read: "+err.Error())
			return
		}
		if frame := b.take(b.chunk[:n], s); frame != nil {
			s.parse(frame, r)
			return
		}
	}
	s.fail(r, fmt.Sprintf("timeout: no reply within %s", b.timeout))
}

// ensureOpen opens the port if it is closed (see port.Keeper).
func (b *Bus) ensureOpen() error {
	p, fresh, err := b.keep.Get()
	if err != nil {
		return err
	}
	b.port = p
	if fresh {
		b.buf, b.skipNext = b.buf[:0], len(b.push) > 0 && b.framer.n == 0
	}
	return nil
}

// portFailed closes a port that failed, to be reopened.
func (b *Bus) portFailed(err error) {
	b.keep.Failed(err)
	b.port = nil
}

// Close closes the port.
func (b *Bus) Close() error {
	b.port = nil
	return b.keep.Close()
}
