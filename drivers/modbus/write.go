package modbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"edgegw/drivers"
)

// Errors of Write.
var (
	// ErrNotWritable means the point is not writable = true in the config.
	ErrNotWritable = errors.New("point is not writable")
	// ErrNoSuchPoint means the device has no point of that name.
	ErrNoSuchPoint = errors.New("no such point")
)

// Write sets a writable point of the named device from a JSON value: a
// number (engineering units: scale and offset are undone), true/false for
// bools, a string for strings. Coils are written with FC5, registers with
// FC6 (one) or FC16 (several) in the point's type and byte order; a bool in
// one bit of a register is refused (writing it would clobber its siblings).
// Like Read, it must be called from the bus's goroutine.
func (b *Bus) Write(ctx context.Context, device, point string, value json.RawMessage) error {
	d, ok := b.devices[device]
	if !ok {
		return fmt.Errorf("no such device %q", device)
	}
	var p *Point
	for i := range d.points {
		if d.points[i].Name == point {
			p = &d.points[i]
		}
	}
	switch {
	case p == nil:
		return fmt.Errorf("%w %q on %s", ErrNoSuchPoint, point, device)
	case !p.Writable:
		return fmt.Errorf("%s.%s: %w", device, point, ErrNotWritable)
	case ctx.Err() != nil:
		return ctx.Err()
	}
	b.setUnit(d.unit)
	var err error
	switch {
	case p.Table == Coil:
		var on bool
		if err := json.Unmarshal(value, &on); err != nil {
			return fmt.Errorf("%s.%s is a coil: want true or false", device, point)
		}
		var v uint16
		if on {
			v = 0xFF00
		}
		_, err = b.client.WriteSingleCoil(p.Address, v)
	case p.Type == drivers.Bool:
		return fmt.Errorf("%s.%s is one bit of a register: writing it would overwrite the other bits", device, point)
	default:
		regs := make([]byte, 2*p.Width())
		if err := p.encodeJSON(regs, value); err != nil {
			return fmt.Errorf("%s.%s: %w", device, point, err)
		}
		if len(regs) == 2 {
			_, err = b.client.WriteSingleRegister(p.Address, uint16(regs[0])<<8|uint16(regs[1]))
		} else {
			_, err = b.client.WriteMultipleRegisters(p.Address, uint16(len(regs)/2), regs)
		}
	}
	if err != nil {
		if !isException(err) {
			b.reset()
		}
		return fmt.Errorf("write %s.%s: %s", device, point, describe(err, b.timeout))
	}
	return nil
}

// encodeJSON encodes a JSON number or string for the point's registers.
func (p *Point) encodeJSON(dst []byte, value json.RawMessage) error {
	if p.Type == drivers.String {
		var s string
		if err := json.Unmarshal(value, &s); err != nil {
			return errors.New("want a JSON string")
		}
		return p.EncodeString(dst, s)
	}
	var f float64
	if err := json.Unmarshal(value, &f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("want a JSON number, got %s", strings.TrimSpace(string(value)))
	}
	if err := p.Encode(dst, f); err != nil {
		return fmt.Errorf("%v does not fit a %s: %w", f, p.Type, err)
	}
	return nil
}
