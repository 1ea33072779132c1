package modbus

import (
	"edgegw/drivers"
)

// Table is a Modbus data table.
type Table uint8

// The four Modbus tables.
const (
	Holding Table = iota
	Input
	Coil
	Discrete
)

var tableNames = map[string]Table{"holding": Holding, "input": Input, "coil": Coil, "discrete": Discrete}

func (t Table) String() string { return [...]string{"holding", "input", "coil", "discrete"}[t] }

// bits reports whether t is a table of single bits.
func (t Table) bits() bool { return t == Coil || t == Discrete }

// Point is one value of a device, as planned and decoded.
type Point struct {
	Name    string
	Table   Table
	Address uint16
	Type    drivers.Type
	Order   drivers.Order
	// Length is the string length in registers.
	Length int
	// Bit is 0..15 for a bool taken from one bit of a register, else -1.
	Bit    int
	Scale  float64
	Offset float64
	// Writable points may be set with Write, within Min and Max
	// (engineering units; nil is no limit).
	Writable bool
	Min, Max *float64
}

// codec is how the point's registers become its value.
func (p *Point) codec() drivers.Codec {
	return drivers.Codec{Type: p.Type, Order: p.Order, Length: p.Length, Bit: p.Bit, Scale: p.Scale, Offset: p.Offset}
}

// Width is the number of registers (or bits, for coil and discrete) the point spans.
func (p *Point) Width() int {
	if p.Table.bits() {
		return 1
	}
	c := p.codec()
	return c.Words()
}

// Decode turns the raw reply of a request starting at start into p's value.
// For register tables data holds 2 bytes per register; for bit tables one
// bit per coil, least significant bit first. It does not allocate, except
// for strings.
func (p *Point) Decode(data []byte, start uint16) (drivers.Value, error) {
	v := drivers.Value{Point: p.Name}
	off := int(p.Address - start)
	if p.Table.bits() {
		if off/8 >= len(data) {
			return v, drivers.ErrShortData
		}
		v.Kind, v.B = drivers.KindBool, data[off/8]>>(off%8)&1 == 1
		return v, nil
	}
	if off*2 > len(data) {
		return v, drivers.ErrShortData
	}
	c := p.codec()
	err := c.Decode(&v, data[off*2:])
	return v, err
}
