package gateway

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
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

// entrySep separates the device name from the JSON body in a buffer entry.
// Device names never contain it (nameRe).
const entrySep = '\n'

// AppendEntry encodes r as a buffer entry: the device name, entrySep, then
// the JSON message without its seq, which is only known once the buffer has
// committed it: `"ts":…,"device":…,"values":{…},"errors":{…}}`.
func AppendEntry(dst []byte, r *Reading) []byte {
	dst = append(dst, r.Device...)
	dst = append(dst, entrySep)
	dst = append(dst, `"ts":"`...)
	dst = r.Time.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, `","device":`...)
	dst = appendJSONString(dst, r.Device)
	dst = append(dst, `,"values":{`...)
	for i, v := range r.Values {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, v.Point)
		dst = append(dst, ':')
		dst = appendValue(dst, v)
	}
	dst = append(dst, `},"errors":{`...)
	for i, e := range r.Errors {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, e.Point)
		dst = append(dst, ':')
		dst = appendJSONString(dst, e.Err)
	}
	return append(dst, "}}"...)
}

// ErrBadEntry means a buffer entry was not written by AppendEntry.
var ErrBadEntry = errors.New("gateway: malformed buffer entry")

// Message turns a committed buffer entry into the topic and payload that
// docs/MQTT.md specifies: {prefix}/{gateway}/{device} and {"seq":N,…}.
// The payload is appended to dst.
func Message(dst []byte, topicBase string, seq uint64, entry []byte) (topic string, payload []byte, err error) {
	i := bytes.IndexByte(entry, entrySep)
	if i <= 0 {
		return "", dst, ErrBadEntry
	}
	topic = topicBase + "/" + string(entry[:i])
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ',')
	dst = append(dst, entry[i+1:]...)
	return topic, dst, nil
}

func appendValue(dst []byte, v Value) []byte {
	switch v.Kind {
	case KindFloat32:
		// Shortest form that reads back as the same float32: 230.1, not 230.10000610351562.
		return strconv.AppendFloat(dst, v.F, 'g', -1, 32)
	case KindFloat:
		// 15 significant digits hide the binary noise of scaling (2301*0.1).
		return strconv.AppendFloat(dst, v.F, 'g', 15, 64)
	case KindInt:
		return strconv.AppendInt(dst, v.I, 10)
	case KindUint:
		return strconv.AppendUint(dst, v.U, 10)
	case KindBool:
		return strconv.AppendBool(dst, v.B)
	default:
		return appendJSONString(dst, v.S)
	}
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
