package modbus

import (
	"encoding/binary"
	"errors"
	"math"
)

// ErrOutOfRange means a value does not fit the point's type.
var ErrOutOfRange = errors.New("modbus: value out of range for point type")

// Encode writes value, an engineering value (after scale and offset), as the
// registers of p into dst (2*Width() bytes, in p's byte order): the inverse
// of Decode. Integer types round to the nearest raw value.
func (p *Point) Encode(dst []byte, value float64) error {
	n := p.Width() * 2
	if len(dst) < n {
		return ErrShortData
	}
	raw := value
	if !p.unscaled() {
		if p.Scale == 0 {
			return ErrOutOfRange
		}
		raw = (value - p.Offset) / p.Scale
	}
	var buf [8]byte
	b := buf[:n]
	switch p.Type {
	case Bool:
		var w uint16
		if raw != 0 {
			w = 1
			if p.Bit > 0 && !p.Table.bits() {
				w <<= p.Bit
			}
		}
		binary.BigEndian.PutUint16(b, w)
	case Int16, Uint16, Int32, Uint32, Int64, Uint64:
		lo, hi := p.intRange()
		r := math.Round(raw)
		if math.IsNaN(r) || r < lo || r > hi {
			return ErrOutOfRange
		}
		switch n {
		case 2:
			binary.BigEndian.PutUint16(b, uint16(int64(r)))
		case 4:
			binary.BigEndian.PutUint32(b, uint32(int64(r)))
		default:
			if p.Type == Uint64 && r >= math.MaxInt64 {
				binary.BigEndian.PutUint64(b, uint64(r))
			} else {
				binary.BigEndian.PutUint64(b, uint64(int64(r)))
			}
		}
	case Float32:
		binary.BigEndian.PutUint32(b, math.Float32bits(float32(raw)))
	case Float64:
		binary.BigEndian.PutUint64(b, math.Float64bits(raw))
	default:
		return ErrOutOfRange // strings are encoded with EncodeString
	}
	reorder(dst[:n], b, p.Order) // every order is its own inverse
	return nil
}

// EncodeString writes s into the Length registers of a string point,
// padded with NULs.
func (p *Point) EncodeString(dst []byte, s string) error {
	n := p.Length * 2
	if len(dst) < n || len(s) > n {
		return ErrOutOfRange
	}
	b := make([]byte, n)
	copy(b, s)
	if p.Order == BADC || p.Order == DCBA {
		reorder(dst[:n], b, BADC)
	} else {
		copy(dst, b)
	}
	return nil
}

func (p *Point) intRange() (lo, hi float64) {
	switch p.Type {
	case Int16:
		return math.MinInt16, math.MaxInt16
	case Uint16:
		return 0, math.MaxUint16
	case Int32:
		return math.MinInt32, math.MaxInt32
	case Uint32:
		return 0, math.MaxUint32
	case Int64:
		return math.MinInt64, math.MaxInt64
	default:
		return 0, math.MaxUint64
	}
}
