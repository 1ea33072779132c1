package gateway

import (
	"edgegw/drivers"

	"bytes"
	"errors"
	"strconv"
	"unicode/utf8"
)

// entrySep separates the device name from the JSON body in a buffer entry.
// Device names never contain it (nameRe).
const entrySep = '\n'

// AppendEntry encodes r as a buffer entry: the device name, entrySep, then
// the JSON message without its seq, which is only known once the buffer has
// committed it: `"ts":…,"device":…,"values":{…},"errors":{…}}`.
func AppendEntry(dst []byte, r *drivers.Reading) []byte {
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

func appendValue(dst []byte, v drivers.Value) []byte {
	switch v.Kind {
	case drivers.KindFloat32:
		// Shortest form that reads back as the same float32: 230.1, not 230.10000610351562.
		return strconv.AppendFloat(dst, v.F, 'g', -1, 32)
	case drivers.KindFloat:
		// 15 significant digits hide the binary noise of scaling (2301*0.1).
		return strconv.AppendFloat(dst, v.F, 'g', 15, 64)
	case drivers.KindInt:
		return strconv.AppendInt(dst, v.I, 10)
	case drivers.KindUint:
		return strconv.AppendUint(dst, v.U, 10)
	case drivers.KindBool:
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
