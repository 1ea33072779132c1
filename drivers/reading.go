package drivers

import (
	"math"
	"strconv"
	"time"
)

// Reading is one poll of one device: what every point read, or why not.
// A driver fills it; the scheduler encodes it once and hands it to the buffer.
type Reading struct {
	Device string
	// Time is when the values were read.
	Time   time.Time
	Values []Value
	Errors []PointError
}

// Kind says which field of a Value holds it.
type Kind uint8

// Value kinds.
const (
	KindFloat Kind = iota
	KindFloat32
	KindInt
	KindUint
	KindBool
	KindString
)

// Value is one point's value after scale and offset.
type Value struct {
	Point string
	Kind  Kind
	F     float64 // KindFloat, KindFloat32 (a float32 widened)
	I     int64
	U     uint64
	B     bool
	S     string
}

// PointError is a point that failed this poll, and why.
type PointError struct {
	Point string
	Err   string
}

// Reset empties r for reuse, keeping its storage.
func (r *Reading) Reset(device string, t time.Time) {
	r.Device, r.Time = device, t
	r.Values, r.Errors = r.Values[:0], r.Errors[:0]
}

// AddFloat records a numeric value; NaN and Inf, which JSON cannot carry,
// go under errors instead.
func (r *Reading) AddFloat(point string, f float64) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		r.AddError(point, "value is not a finite number: "+strconv.FormatFloat(f, 'g', -1, 64))
		return
	}
	r.Values = append(r.Values, Value{Point: point, Kind: KindFloat, F: f})
}

// Add records a value of any kind; floats go through AddFloat's check.
func (r *Reading) Add(v Value) {
	if (v.Kind == KindFloat || v.Kind == KindFloat32) && (math.IsNaN(v.F) || math.IsInf(v.F, 0)) {
		r.AddFloat(v.Point, v.F)
		return
	}
	r.Values = append(r.Values, v)
}

// AddError records a point that failed.
func (r *Reading) AddError(point, err string) {
	r.Errors = append(r.Errors, PointError{Point: point, Err: err})
}
