package serial

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"

	"edgegw/gateway"
)

// maxLine bounds a line: longer ones are noise, dropped.
const maxLine = 4096

// splitFrames takes the whole frames off the front of buf: lines ending in
// delim, or fixed frames of n bytes. It returns the frames and what is left
// for later; noise (a line longer than maxLine) is dropped.
func splitFrames(buf, delim []byte, n int, frames [][]byte) ([][]byte, []byte) {
	if n > 0 {
		for len(buf) >= n {
			frames = append(frames, buf[:n])
			buf = buf[n:]
		}
		return frames, buf
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

func newParser(d gateway.DeviceConfig) (parser, error) {
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
	}
	return nil, fmt.Errorf("serial: device %s: format %q", d.Name, d.Format)
}

// value converts a field's text to the point's type, after scale and offset.
func value(p *gateway.PointConfig, text []byte) (gateway.Value, error) {
	v := gateway.Value{Point: p.Name}
	t := bytes.TrimSpace(text)
	switch p.Type {
	case "string":
		v.Kind, v.S = gateway.KindString, string(t)
		return v, nil
	case "bool":
		switch string(bytes.ToLower(t)) {
		case "1", "true", "on", "yes":
			v.Kind, v.B = gateway.KindBool, true
		case "0", "false", "off", "no":
			v.Kind = gateway.KindBool
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
		v.Kind, v.I = gateway.KindInt, i
	case unscaled && (p.Type == "uint16" || p.Type == "uint32" || p.Type == "uint64"):
		u, err := strconv.ParseUint(string(t), 10, 64)
		if err != nil {
			return v, fmt.Errorf("%q is not an unsigned integer", t)
		}
		v.Kind, v.U = gateway.KindUint, u
	default:
		f, err := strconv.ParseFloat(string(t), 64)
		if err != nil {
			return v, fmt.Errorf("%q is not a number", t)
		}
		v.Kind, v.F = gateway.KindFloat, f*p.Scale+p.Offset
	}
	return v, nil
}
