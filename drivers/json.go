package drivers

import (
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends v as a JSON value, as readings and command results
// carry it.
func (v Value) AppendJSON(dst []byte) []byte {
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
		return AppendJSONString(dst, v.S)
	}
}

// String is v as JSON: 230.5, true, "EDGE01".
func (v Value) String() string { return string(v.AppendJSON(nil)) }

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	if plainJSON(s) { // point and device names, nearly always: one copy
		dst = append(dst, s...)
		return append(dst, '"')
	}
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

// plainJSON says whether s goes into a JSON string as it is: printable
// ASCII without quote or backslash.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
