package drivers

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
)

// Type is the data type of a point's raw value.
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

var typeNames = [...]string{"bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"}

func (t Type) String() string { return typeNames[t] }

// TypeNames lists the point types as sensors.toml spells them.
func TypeNames() []string { return typeNames[:] }

// ParseType returns the type named s.
func ParseType(s string) (Type, bool) {
	for i, n := range typeNames {
		if n == s {
			return Type(i), true
		}
	}
	return 0, false
}

// Order is how the bytes of a value are laid out over 16-bit words, named
// after a 32-bit value ABCD (A the most significant byte).
type Order uint8

// Byte orders.
const (
	ABCD Order = iota // big-endian words, most significant word first (Modbus standard)
	DCBA              // fully little-endian
	BADC              // bytes swapped in each word, most significant word first
	CDAB              // big-endian words, least significant word first ("word swap")
)

var orderNames = [...]string{"ABCD", "DCBA", "BADC", "CDAB"}

func (o Order) String() string { return orderNames[o] }

// OrderNames lists the byte orders as sensors.toml spells them.
func OrderNames() []string { return orderNames[:] }

// ParseOrder returns the byte order named s.
func ParseOrder(s string) (Order, bool) {
	for i, n := range orderNames {
		if n == s {
			return Order(i), true
		}
	}
	return 0, false
}

// Codec turns the raw bytes of one value into its engineering value and
// back: the type, byte order, scale and offset that Modbus registers and
// binary serial frames share.
type Codec struct {
	Type  Type
	Order Order
	// Length is a string's length in 16-bit words.
	Length int
	// Bit is 0..15 for a bool taken from one bit of a word, else -1.
	Bit    int
	Scale  float64
	Offset float64
}

// Words is how many 16-bit words a value of c spans.
func (c *Codec) Words() int {
	switch c.Type {
	case Int32, Uint32, Float32:
		return 2
	case Int64, Uint64, Float64:
		return 4
	case String:
		return c.Length
	}
	return 1
}

// ErrShortData means there are fewer bytes than the value needs.
var ErrShortData = errors.New("drivers: too few bytes for the value")

// ErrOutOfRange means a value does not fit the point's type.
var ErrOutOfRange = errors.New("value out of range for the point's type")

// Decode sets v's kind and value from raw, at least 2*Words() bytes in c's
// byte order. It does not allocate, except for strings.
func (c *Codec) Decode(v *Value, raw []byte) error {
	n := c.Words() * 2
	if len(raw) < n {
		return ErrShortData
	}
	raw = raw[:n]
	if c.Type == String {
		v.Kind, v.S = KindString, decodeString(raw, c.Order)
		return nil
	}
	var buf [8]byte
	b := buf[:n]
	reorder(b, raw, c.Order)
	switch c.Type {
	case Bool:
		v.Kind, v.B = KindBool, binary.BigEndian.Uint16(b)>>max(c.Bit, 0)&1 == 1
	case Int16:
		c.scaleInt(v, int64(int16(binary.BigEndian.Uint16(b))))
	case Uint16:
		c.scaleUint(v, uint64(binary.BigEndian.Uint16(b)))
	case Int32:
		c.scaleInt(v, int64(int32(binary.BigEndian.Uint32(b))))
	case Uint32:
		c.scaleUint(v, uint64(binary.BigEndian.Uint32(b)))
	case Int64:
		c.scaleInt(v, int64(binary.BigEndian.Uint64(b)))
	case Uint64:
		c.scaleUint(v, binary.BigEndian.Uint64(b))
	case Float32:
		f := float64(math.Float32frombits(binary.BigEndian.Uint32(b)))
		if c.unscaled() {
			v.Kind, v.F = KindFloat32, f
		} else {
			v.Kind, v.F = KindFloat, f*c.Scale+c.Offset
		}
	default: // Float64
		v.Kind, v.F = KindFloat, math.Float64frombits(binary.BigEndian.Uint64(b))*c.Scale+c.Offset
	}
	return nil
}

func (c *Codec) unscaled() bool { return c.Scale == 1 && c.Offset == 0 }

func (c *Codec) scaleInt(v *Value, i int64) {
	if c.unscaled() {
		v.Kind, v.I = KindInt, i
	} else {
		v.Kind, v.F = KindFloat, float64(i)*c.Scale+c.Offset
	}
}

func (c *Codec) scaleUint(v *Value, u uint64) {
	if c.unscaled() {
		v.Kind, v.U = KindUint, u
	} else {
		v.Kind, v.F = KindFloat, float64(u)*c.Scale+c.Offset
	}
}

// Encode writes value, an engineering value (after scale and offset), as
// 2*Words() bytes in c's byte order into dst: the inverse of Decode.
// Integer types round to the nearest raw value; a bool sets bit Bit.
func (c *Codec) Encode(dst []byte, value float64) error {
	n := c.Words() * 2
	if len(dst) < n {
		return ErrShortData
	}
	raw := value
	if !c.unscaled() {
		if c.Scale == 0 {
			return ErrOutOfRange
		}
		raw = (value - c.Offset) / c.Scale
	}
	var buf [8]byte
	b := buf[:n]
	switch c.Type {
	case Bool:
		var w uint16
		if raw != 0 {
			w = 1 << max(c.Bit, 0)
		}
		binary.BigEndian.PutUint16(b, w)
	case Int16, Uint16, Int32, Uint32, Int64, Uint64:
		if err := c.putInt(b, raw); err != nil {
			return err
		}
	case Float32:
		f := float32(raw)
		if math.IsInf(float64(f), 0) || math.IsNaN(raw) {
			return ErrOutOfRange // never written as Inf
		}
		binary.BigEndian.PutUint32(b, math.Float32bits(f))
	case Float64:
		if math.IsInf(raw, 0) || math.IsNaN(raw) {
			return ErrOutOfRange
		}
		binary.BigEndian.PutUint64(b, math.Float64bits(raw))
	default:
		return ErrOutOfRange // strings are encoded with EncodeString
	}
	reorder(dst[:n], b, c.Order) // every order is its own inverse
	return nil
}

// putInt writes raw rounded to c's integer type, big-endian, into b.
func (c *Codec) putInt(b []byte, raw float64) error {
	lo, hi := c.intRange()
	r := math.Round(raw)
	// hi+1 is exact for every width: 2^16, 2^32, and for the 64-bit types
	// float64(hi) is already 2^63 or 2^64, which does not fit.
	if math.IsNaN(r) || r < lo || r >= hi+1 {
		return ErrOutOfRange
	}
	switch len(b) {
	case 2:
		binary.BigEndian.PutUint16(b, uint16(int64(r)))
	case 4:
		binary.BigEndian.PutUint32(b, uint32(int64(r)))
	default:
		if c.Type == Uint64 && r >= 1<<63 {
			binary.BigEndian.PutUint64(b, uint64(r))
		} else {
			binary.BigEndian.PutUint64(b, uint64(int64(r)))
		}
	}
	return nil
}

// EncodeNumber writes a JSON number, in engineering units, like Encode;
// an unscaled integer written without fraction or exponent is taken
// exactly, not through a float64, whose 53 bits would round it.
func (c *Codec) EncodeNumber(dst []byte, n string) error {
	if c.unscaled() && !strings.ContainsAny(n, ".eE") {
		switch c.Type {
		case Int16, Int32, Int64:
			i, err := strconv.ParseInt(n, 10, 16*c.Words())
			if err != nil {
				return ErrOutOfRange
			}
			return c.putExact(dst, uint64(i))
		case Uint16, Uint32, Uint64:
			u, err := strconv.ParseUint(n, 10, 16*c.Words())
			if err != nil {
				return ErrOutOfRange
			}
			return c.putExact(dst, u)
		}
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil {
		return ErrNotFinite
	}
	return c.Encode(dst, f)
}

// putExact writes the low 16*Words() bits of u in c's byte order.
func (c *Codec) putExact(dst []byte, u uint64) error {
	n := c.Words() * 2
	if len(dst) < n {
		return ErrShortData
	}
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], u)
	reorder(dst[:n], buf[8-n:], c.Order)
	return nil
}

// ErrNotFinite means a number is too large for any float64: JSON has no
// Inf or NaN, so 1e999 is how a client sends one.
var ErrNotFinite = errors.New("not a finite number")

// EncodeString writes s into the Length words of a string, padded with NULs.
func (c *Codec) EncodeString(dst []byte, s string) error {
	n := c.Length * 2
	if len(dst) < n || len(s) > n {
		return ErrOutOfRange
	}
	b := make([]byte, n)
	copy(b, s)
	if c.Order == BADC || c.Order == DCBA {
		reorder(dst[:n], b, BADC)
	} else {
		copy(dst, b)
	}
	return nil
}

func (c *Codec) intRange() (lo, hi float64) {
	switch c.Type {
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

// decodeString reads two characters per word, high byte first (or low
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

// CheckScale reports a scale or offset that is not a finite number.
func CheckScale(p Problems, scale, offset float64) {
	if math.IsNaN(scale) || math.IsInf(scale, 0) || math.IsNaN(offset) || math.IsInf(offset, 0) {
		p.Errorf("scale", "scale and offset must be finite numbers")
	}
}
