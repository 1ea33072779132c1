package modbus

import (
	"edgegw/drivers"

	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"edgegw/gateway"
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

// Type is the data type of a point.
type Type uint8

// Point types.
const (
	Bool Type = iota
	Int16
	Uint16
	Int32
	Uint32
	Int64
	Uint64
	Float32
	Float64
	String
)

var typeNames = map[string]Type{
	"bool": Bool, "int16": Int16, "uint16": Uint16, "int32": Int32, "uint32": Uint32,
	"int64": Int64, "uint64": Uint64, "float32": Float32, "float64": Float64, "string": String,
}

// Order is how the bytes of a value are laid out over its registers, named
// after a 32-bit value ABCD (A the most significant byte).
type Order uint8

// Byte orders.
const (
	ABCD Order = iota // big-endian words, most significant word first (Modbus standard)
	DCBA              // fully little-endian
	BADC              // bytes swapped in each word, most significant word first
	CDAB              // big-endian words, least significant word first ("word swap")
)

var orderNames = map[string]Order{"ABCD": ABCD, "DCBA": DCBA, "BADC": BADC, "CDAB": CDAB}

// Point is one value of a device, as planned and decoded.
type Point struct {
	Name    string
	Table   Table
	Address uint16
	Type    Type
	Order   Order
	// Length is the string length in registers.
	Length int
	// Bit is 0..15 for a bool taken from one bit of a register, else -1.
	Bit    int
	Scale  float64
	Offset float64
	// Writable points may be set with Write.
	Writable bool
}

// PointFromConfig converts a validated config point.
func PointFromConfig(c gateway.PointConfig) (Point, error) {
	t, ok1 := tableNames[c.Table]
	ty, ok2 := typeNames[c.Type]
	o, ok3 := orderNames[c.ByteOrder]
	if !ok1 || !ok2 || !ok3 || c.Address < 0 || c.Address > math.MaxUint16 {
		return Point{}, fmt.Errorf("modbus: point %q: table %q, type %q or byte order %q not valid", c.Name, c.Table, c.Type, c.ByteOrder)
	}
	return Point{Name: c.Name, Table: t, Address: uint16(c.Address), Type: ty, Order: o, Length: c.Length, Bit: c.Bit,
		Scale: c.Scale, Offset: c.Offset, Writable: c.Writable}, nil
}

// Width is the number of registers (or bits, for coil and discrete) the point spans.
func (p *Point) Width() int {
	if p.Table.bits() {
		return 1
	}
	switch p.Type {
	case Int32, Uint32, Float32:
		return 2
	case Int64, Uint64, Float64:
		return 4
	case String:
		return p.Length
	}
	return 1
}

// ErrShortData means a reply held fewer bytes than the point needs.
var ErrShortData = errors.New("modbus: reply too short for point")

// Decode turns the raw reply of a request starting at start into p's value.
// For register tables data holds 2 bytes per register; for bit tables one
// bit per coil, least significant bit first. It does not allocate, except
// for strings.
func (p *Point) Decode(data []byte, start uint16) (drivers.Value, error) {
	v := drivers.Value{Point: p.Name}
	off := int(p.Address - start)
	if p.Table.bits() {
		if off/8 >= len(data) {
			return v, ErrShortData
		}
		v.Kind, v.B = drivers.KindBool, data[off/8]>>(off%8)&1 == 1
		return v, nil
	}
	n := p.Width() * 2
	if off*2+n > len(data) {
		return v, ErrShortData
	}
	raw := data[off*2 : off*2+n]
	if p.Type == String {
		v.Kind, v.S = drivers.KindString, decodeString(raw, p.Order)
		return v, nil
	}
	var buf [8]byte
	b := buf[:n]
	reorder(b, raw, p.Order)
	switch p.Type {
	case Bool:
		v.Kind, v.B = drivers.KindBool, binary.BigEndian.Uint16(b)>>p.Bit&1 == 1
		return v, nil
	case Int16:
		return p.scaleInt(v, int64(int16(binary.BigEndian.Uint16(b)))), nil
	case Uint16:
		return p.scaleUint(v, uint64(binary.BigEndian.Uint16(b))), nil
	case Int32:
		return p.scaleInt(v, int64(int32(binary.BigEndian.Uint32(b)))), nil
	case Uint32:
		return p.scaleUint(v, uint64(binary.BigEndian.Uint32(b))), nil
	case Int64:
		return p.scaleInt(v, int64(binary.BigEndian.Uint64(b))), nil
	case Uint64:
		return p.scaleUint(v, binary.BigEndian.Uint64(b)), nil
	case Float32:
		f := float64(math.Float32frombits(binary.BigEndian.Uint32(b)))
		if p.unscaled() {
			v.Kind, v.F = drivers.KindFloat32, f
		} else {
			v.Kind, v.F = drivers.KindFloat, f*p.Scale+p.Offset
		}
		return v, nil
	default: // Float64
		v.Kind, v.F = drivers.KindFloat, math.Float64frombits(binary.BigEndian.Uint64(b))*p.Scale+p.Offset
		return v, nil
	}
}

func (p *Point) unscaled() bool { return p.Scale == 1 && p.Offset == 0 }

func (p *Point) scaleInt(v drivers.Value, i int64) drivers.Value {
	if p.unscaled() {
		v.Kind, v.I = drivers.KindInt, i
	} else {
		v.Kind, v.F = drivers.KindFloat, float64(i)*p.Scale+p.Offset
	}
	return v
}

func (p *Point) scaleUint(v drivers.Value, u uint64) drivers.Value {
	if p.unscaled() {
		v.Kind, v.U = drivers.KindUint, u
	} else {
		v.Kind, v.F = drivers.KindFloat, float64(u)*p.Scale+p.Offset
	}
	return v
}

// reorder copies src, laid out in order o, into dst as big-endian bytes.
// It generalises the 32-bit names to any even width: DCBA reverses all
// bytes, BADC swaps the bytes of each word, CDAB reverses the word order.
func reorder(dst, src []byte, o Order) {
	n := len(src)
	switch o {
	case DCBA:
		for i := range n {
			dst[i] = src[n-1-i]
		}
	case BADC:
		for i := 0; i+1 < n; i += 2 {
			dst[i], dst[i+1] = src[i+1], src[i]
		}
	case CDAB:
		for i := 0; i+1 < n; i += 2 {
			dst[i], dst[i+1] = src[n-2-i], src[n-1-i]
		}
	default:
		copy(dst, src)
	}
}

// decodeString reads two characters per register, high byte first (or low
// byte first for the byte-swapped orders), trimming NULs and spaces.
func decodeString(raw []byte, o Order) string {
	b := make([]byte, len(raw))
	if o == BADC || o == DCBA {
		reorder(b, raw, BADC)
	} else {
		copy(b, raw)
	}
	return strings.Trim(string(b), "\x00 ")
}
