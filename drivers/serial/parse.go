package serial

import (
	"edgegw/drivers"

	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
)

// maxLine bounds a line: longer ones are noise, dropped.
const maxLine = 4096

// framer cuts what arrives on the line into frames: lines ending in delim,
// or fixed frames of n bytes, which may start with header and end with a
// checksum.
type framer struct {
	delim    []byte
	n        int
	header   []byte
	checksum string
}

// split takes the whole frames off the front of buf and returns them with
// what is left for later. Noise is dropped: a line longer than maxLine, and
// for fixed frames, bytes before the header or a frame whose checksum fails
// (the framer then looks for the next frame one byte further).
func (f *framer) split(buf []byte, frames [][]byte) ([][]byte, []byte) {
	if f.n == 0 {
		return splitLines(buf, f.delim, frames)
	}
	for {
		if len(f.header) > 0 {
			i := bytes.Index(buf, f.header)
			if i < 0 {
				// Keep what could be the start of a header.
				keep := min(len(buf), len(f.header)-1)
				return frames, buf[len(buf)-keep:]
			}
			buf = buf[i:]
		}
		if len(buf) < f.n {
			return frames, buf
		}
		if !drivers.ChecksumOK(f.checksum, buf[:f.n]) {
			buf = buf[1:]
			continue
		}
		frames = append(frames, buf[:f.n])
		buf = buf[f.n:]
	}
}

func splitLines(buf, delim []byte, frames [][]byte) ([][]byte, []byte) {
	if len(delim) == 0 {
		delim = []byte{'\n'} // config forbids it; an empty one would never advance
	}
	for {
		i := bytes.Index(buf, delim)
		if i < 0 {
			if len(buf) > maxLine {
				return frames, buf[:0]
			}
			return frames, buf
		}
		if line := bytes.TrimRight(buf[:i], "\r\n"); len(line) > 0 && i <= maxLine {
			frames = append(frames, line)
		}
		buf = buf[i+len(delim):]
	}
}

// parser finds a point's field in a frame.
type parser interface {
	// field returns the text of the named field, or false when the frame
	// does not have it.
	field(frame []byte, name string) ([]byte, bool)
}

// kvParser reads key=value (or key:value) pairs separated by ',', ';',
// spaces or tabs.
type kvParser struct{}

func (kvParser) field(frame []byte, name string) ([]byte, bool) {
	for len(frame) > 0 {
		end := bytes.IndexAny(frame, ",; \t")
		pair := frame
		if end >= 0 {
			pair, frame = frame[:end], frame[end+1:]
		} else {
			frame = nil
		}
		sep := bytes.IndexAny(pair, "=:")
		if sep > 0 && string(pair[:sep]) == name {
			return pair[sep+1:], true
		}
	}
	return nil, false
}

// csvParser reads the column whose 0-based index is the field name; columns
// are separated by ',' or ';'.
type csvParser struct{}

func (csvParser) field(frame []byte, name string) ([]byte, bool) {
	col, err := strconv.Atoi(name)
	if err != nil || col < 0 {
		return nil, false
	}
	for i := 0; ; i++ {
		end := bytes.IndexAny(frame, ",;")
		if i == col {
			if end >= 0 {
				frame = frame[:end]
			}
			return bytes.TrimSpace(frame), true
		}
		if end < 0 {
			return nil, false
		}
		frame = frame[end+1:]
	}
}

// regexParser reads the named groups of a pattern.
type regexParser struct {
	re *regexp.Regexp
}

func (p regexParser) field(frame []byte, name string) ([]byte, bool) {
	i := p.re.SubexpIndex(name)
	if i < 0 {
		return nil, false
	}
	m := p.re.FindSubmatchIndex(frame)
	if m == nil || m[2*i] < 0 {
		return nil, false
	}
	return frame[m[2*i]:m[2*i+1]], true
}

func newParser(d Device) (parser, error) {
	switch d.Format {
	case "kv":
		return kvParser{}, nil
	case "csv":
		return csvParser{}, nil
	case "regex":
		re, err := regexp.Compile(d.Pattern)
		if err != nil {
			return nil, fmt.Errorf("serial: device %s: %w", d.Name, err)
		}
		return regexParser{re}, nil
	case "binary":
		return binaryParser{}, nil
	}
	return nil, fmt.Errorf("serial: device %s: format %q", d.Name, d.Format)
}

// binaryParser reads fields of a fixed frame at byte offsets: the field
// name is the offset, and the point's type says how many bytes.
type binaryParser struct{}

func (binaryParser) field(frame []byte, name string) ([]byte, bool) {
	off, err := strconv.Atoi(name)
	if err != nil || off < 0 || off >= len(frame) {
		return nil, false
	}
	return frame[off:], true
}

// binaryValue decodes a binary field (what binaryParser returned: the frame
// from the field's offset) with Modbus's types and byte orders; bools are a
// byte, non-zero for true.
func binaryValue(p *PointSpec, data []byte) (drivers.Value, error) {
	v := drivers.Value{Point: p.Name}
	if p.Type == "bool" {
		v.Kind, v.B = drivers.KindBool, data[0] != 0
		return v, nil
	}
	if p.Type == "string" {
		return v, errors.New("strings are not read from binary frames")
	}
	ty, ok1 := drivers.ParseType(p.Type)
	o, ok2 := drivers.ParseOrder(p.ByteOrder)
	if !ok1 || !ok2 {
		return v, fmt.Errorf("type %q or byte order %q not valid", p.Type, p.ByteOrder)
	}
	c := drivers.Codec{Type: ty, Order: o, Bit: -1, Scale: p.Scale, Offset: p.Offset}
	if w := 2 * c.Words(); len(data) < w {
		return v, fmt.Errorf("a %s needs %d bytes; the frame ends first", p.Type, w)
	}
	err := c.Decode(&v, data)
	return v, err
}

// value converts a field's text to the point's type, after scale and offset.
func value(p *PointSpec, text []byte) (drivers.Value, error) {
	v := drivers.Value{Point: p.Name}
	t := bytes.TrimSpace(text)
	switch p.Type {
	case "string":
		v.Kind, v.S = drivers.KindString, string(t)
		return v, nil
	case "bool":
		switch string(bytes.ToLower(t)) {
		case "1", "true", "on", "yes":
			v.Kind, v.B = drivers.KindBool, true
		case "0", "false", "off", "no":
			v.Kind = drivers.KindBool
		default:
			return v, fmt.Errorf("%q is not a bool", t)
		}
		return v, nil
	}
	unscaled := p.Scale == 1 && p.Offset == 0
	switch {
	case unscaled && (p.Type == "int16" || p.Type == "int32" || p.Type == "int64"):
		i, err := strconv.ParseInt(string(t), 10, 64)
		if err != nil {
			return v, fmt.Errorf("%q is not an integer", t)
		}
		v.Kind, v.I = drivers.KindInt, i
	case unscaled && (p.Type == "uint16" || p.Type == "uint32" || p.Type == "uint64"):
		u, err := strconv.ParseUint(string(t), 10, 64)
		if err != nil {
			return v, fmt.Errorf("%q is not an unsigned integer", t)
		}
		v.Kind, v.U = drivers.KindUint, u
	default:
		f, err := strconv.ParseFloat(string(t), 64)
		if err != nil {
			return v, fmt.Errorf("%q is not a number", t)
		}
		v.Kind, v.F = drivers.KindFloat, f*p.Scale+p.Offset
	}
	return v, nil
}
