package modbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"edgegw/drivers"
)

// Errors of Write.
var (
	// ErrNotWritable means the point is not writable = true in the config.
	ErrNotWritable = errors.New("point is not writable")
	// ErrNoSuchPoint means the device has no point of that name.
	ErrNoSuchPoint = errors.New("no such point")
)

// Write sets a writable point of the named device from a JSON value, then
// reads it back and returns the value read. The value must be what the
// point holds: true/false for bools, a string for strings, a finite number
// (engineering units: scale and offset are undone) within min and max that
// the register type holds without wrapping or rounding to Inf; anything
// else, null included, is refused before the bus is used. Coils are written
// with FC5, registers with FC6 (one) or FC16 (several) in the point's type
// and byte order; a bool in one bit of a register is refused (writing it
// would clobber its siblings). Like Read, it must be called from the bus's
// goroutine.
func (b *Bus) Write(ctx context.Context, device, point string, value json.RawMessage) (drivers.Value, error) {
	d, p, err := b.writable(device, point)
	if err != nil {
		return drivers.Value{}, err
	}
	regs, err := p.encodeJSON(value)
	if err != nil {
		return drivers.Value{}, fmt.Errorf("%s.%s: %w", device, point, err)
	}
	if err := ctx.Err(); err != nil {
		return drivers.Value{}, err
	}
	b.setUnit(d.unit)
	if p.Table == Coil {
		var v uint16
		if regs[0] != 0 {
			v = 0xFF00
		}
		_, err = b.client.WriteSingleCoil(p.Address, v)
	} else if len(regs) == 2 {
		_, err = b.client.WriteSingleRegister(p.Address, uint16(regs[0])<<8|uint16(regs[1]))
	} else {
		_, err = b.client.WriteMultipleRegisters(p.Address, uint16(len(regs)/2), regs)
	}
	b.image.Drop(d.unit, p.Table, p.Address, uint16(p.Width()))
	if err != nil {
		if !isException(err) {
			b.reset()
		}
		return drivers.Value{}, fmt.Errorf("write %s.%s: %s", device, point, describe(err, b.timeout))
	}
	return b.readBack(d, p, regs)
}

// writable finds a point that may be written.
func (b *Bus) writable(device, point string) (*device, *Point, error) {
	d, ok := b.devices[device]
	if !ok {
		return nil, nil, fmt.Errorf("no such device %q", device)
	}
	for i := range d.points {
		p := &d.points[i]
		if p.Name != point {
			continue
		}
		switch {
		case !p.Writable:
			return nil, nil, fmt.Errorf("%s.%s: %w", device, point, ErrNotWritable)
		case p.Table != Coil && p.Type == drivers.Bool:
			return nil, nil, fmt.Errorf("%s.%s is one bit of a register: writing it would overwrite the other bits", device, point)
		}
		return d, p, nil
	}
	return nil, nil, fmt.Errorf("%w %q on %s", ErrNoSuchPoint, point, device)
}

// readBack reads the point just written: a device that took the write but
// holds something else (it clamps, or ignores it) is a *ReadBackError.
func (b *Bus) readBack(d *device, p *Point, written []byte) (drivers.Value, error) {
	data, err := b.read(d.unit, Request{Table: p.Table, Start: p.Address, Count: uint16(p.Width())})
	if err != nil {
		return drivers.Value{}, fmt.Errorf("%s.%s was written, but reading it back failed: %s", d.name, p.Name, describe(err, b.timeout))
	}
	got, err := p.Decode(data, p.Address)
	if err != nil {
		return drivers.Value{}, fmt.Errorf("%s.%s was written, but its read-back is unreadable: %w", d.name, p.Name, err)
	}
	if p.Table == Coil {
		if want := written[0] != 0; got.B != want {
			return got, &drivers.ReadBackError{Written: drivers.Value{Point: p.Name, Kind: drivers.KindBool, B: want}, Read: got}
		}
		return got, nil
	}
	if !bytes.Equal(data[:len(written)], written) {
		want, _ := p.Decode(written, p.Address)
		return got, &drivers.ReadBackError{Written: want, Read: got}
	}
	return got, nil
}

// encodeJSON checks a JSON value against the point and returns what is
// written: 2 bytes per register, or one byte (0 or 1) for a coil.
func (p *Point) encodeJSON(value json.RawMessage) ([]byte, error) {
	v, err := decodeStrict(value)
	if err != nil {
		return nil, err
	}
	switch {
	case p.Table == Coil:
		on, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("a coil takes true or false, not %s", describeJSON(value))
		}
		if on {
			return []byte{1}, nil
		}
		return []byte{0}, nil
	case p.Type == drivers.String:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("want a JSON string, not %s", describeJSON(value))
		}
		regs := make([]byte, 2*p.Width())
		if err := p.EncodeString(regs, s); err != nil {
			return nil, fmt.Errorf("%q does not fit %d registers", s, p.Length)
		}
		return regs, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return nil, fmt.Errorf("want a JSON number, not %s", describeJSON(value))
	}
	f, err := strconv.ParseFloat(n.String(), 64)
	if err != nil {
		return nil, fmt.Errorf("%s is not a finite number", n)
	}
	if p.Min != nil && f < *p.Min || p.Max != nil && f > *p.Max {
		return nil, fmt.Errorf("%s is outside min..max (%s): refused", n, p.limits())
	}
	regs := make([]byte, 2*p.Width())
	c := p.codec()
	if err := c.EncodeNumber(regs, n.String()); err != nil {
		return nil, fmt.Errorf("%s does not fit a %s: %w", n, p.Type, err)
	}
	return regs, nil
}

// limits describes min..max, open sides as "any".
func (p *Point) limits() string {
	lo, hi := "any", "any"
	if p.Min != nil {
		lo = strconv.FormatFloat(*p.Min, 'g', -1, 64)
	}
	if p.Max != nil {
		hi = strconv.FormatFloat(*p.Max, 'g', -1, 64)
	}
	return lo + ".." + hi
}

// decodeStrict decodes one JSON value, numbers as json.Number; null and
// trailing data are refused.
func decodeStrict(value json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not a JSON value: %s", describeJSON(value))
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one JSON value: %s", describeJSON(value))
	}
	if v == nil {
		return nil, errors.New("null is not a value to write: send true/false, a number or a string")
	}
	return v, nil
}

// describeJSON quotes a client's value for an error, at most 40 bytes of it.
func describeJSON(value json.RawMessage) string {
	s := string(bytes.TrimSpace(value))
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}
