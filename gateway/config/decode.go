package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"
)

// decoder maps a TOML tree onto the config structs, collecting every problem
// and the line of every key it saw.
type decoder struct {
	file  string
	lines map[string]int // "device[1].point[0].address" -> line
	errs  []error
}

var (
	durationType = reflect.TypeOf(Duration(0))
	sizeType     = reflect.TypeOf(Size(0))
)

// defaulter is implemented by config tables whose fields have defaults other
// than the zero value; each new array element starts from them.
type defaulter interface{ setDefaults() }

func (d *decoder) errorf(path string, line int, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: displayKey(path), Msg: fmt.Sprintf(format, args...)})
}

// displayKey drops array indices: the line already says which element.
func displayKey(path string) string {
	var b strings.Builder
	skip := false
	for _, r := range path {
		switch {
		case r == '[':
			skip = true
		case r == ']':
			skip = false
		case !skip:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *decoder) decodeTable(t *tomlValue, rv reflect.Value, path string) {
	rt := rv.Type()
	fields := map[string]int{}
	for i := 0; i < rt.NumField(); i++ {
		if tag := rt.Field(i).Tag.Get("toml"); tag != "" && tag != "-" {
			fields[tag] = i
		}
	}
	for _, key := range t.keys {
		v := t.table[key]
		kpath := join(path, key)
		idx, ok := fields[key]
		if !ok {
			d.errorf(kpath, v.line, "unknown key%s", suggest(key, fields))
			continue
		}
		d.lines[kpath] = v.line
		d.decodeValue(v, rv.Field(idx), kpath)
	}
}

// suggest names the known key closest to a typo, if one is close.
func suggest(key string, fields map[string]int) string {
	best, bestDist := "", 3
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if dist := editDistance(key, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) wrongType(v *tomlValue, path, want string) {
	article := "a"
	if v.kind == kindInteger || v.kind == kindArray {
		article = "an"
	}
	d.errorf(path, v.line, "want %s, got %s %s", want, article, v.kind)
}

func (d *decoder) decodeValue(v *tomlValue, fv reflect.Value, path string) {
	switch fv.Type() {
	case durationType:
		d.decodeDuration(v, fv, path)
		return
	case sizeType:
		d.decodeSize(v, fv, path)
		return
	}
	switch fv.Kind() {
	case reflect.String:
		if v.kind != kindString {
			d.wrongType(v, path, "a string")
			return
		}
		fv.SetString(v.str)
	case reflect.Bool:
		if v.kind != kindBool {
			d.wrongType(v, path, "true or false")
			return
		}
		fv.SetBool(v.b)
	case reflect.Int, reflect.Int64:
		if v.kind != kindInteger {
			d.wrongType(v, path, "an integer")
			return
		}
		if fv.OverflowInt(v.i) {
			d.errorf(path, v.line, "%d is out of range", v.i)
			return
		}
		fv.SetInt(v.i)
	case reflect.Float64:
		switch v.kind {
		case kindFloat:
			fv.SetFloat(v.f)
		case kindInteger:
			fv.SetFloat(float64(v.i))
		default:
			d.wrongType(v, path, "a number")
		}
	case reflect.Struct:
		if v.kind != kindTable {
			d.wrongType(v, path, "a table")
			return
		}
		d.decodeTable(v, fv, path)
	case reflect.Slice:
		d.decodeSlice(v, fv, path)
	default:
		// Unreachable for the config structs; a new field type must be added above.
		d.errorf(path, v.line, "internal: no decoder for %s", fv.Type())
	}
}

func (d *decoder) decodeDuration(v *tomlValue, fv reflect.Value, path string) {
	if v.kind != kindString {
		d.wrongType(v, path, `a duration string like "5s"`)
		return
	}
	dur, err := time.ParseDuration(v.str)
	if err != nil {
		d.errorf(path, v.line, "bad duration %q: want a number with a unit, like \"250ms\", \"5s\" or \"168h\"", v.str)
		return
	}
	if dur < 0 {
		d.errorf(path, v.line, "duration %q must not be negative", v.str)
		return
	}
	fv.SetInt(int64(dur))
}

func (d *decoder) decodeSize(v *tomlValue, fv reflect.Value, path string) {
	switch v.kind {
	case kindString:
		n, err := parseSize(v.str)
		if err != nil {
			d.errorf(path, v.line, "%v", err)
			return
		}
		fv.SetInt(n)
	case kindInteger:
		if v.i < 0 {
			d.errorf(path, v.line, "size must not be negative")
			return
		}
		fv.SetInt(v.i)
	default:
		d.wrongType(v, path, `a size like "128MiB" or a byte count`)
	}
}

func (d *decoder) decodeSlice(v *tomlValue, fv reflect.Value, path string) {
	elemType := fv.Type().Elem()
	if elemType.Kind() == reflect.Struct {
		if v.kind != kindArray {
			d.wrongType(v, path, "an array of tables ([["+displayKey(path)+"]])")
			return
		}
	} else if v.kind != kindArray {
		d.wrongType(v, path, "an array")
		return
	}
	out := reflect.MakeSlice(fv.Type(), 0, len(v.array))
	for i, e := range v.array {
		epath := fmt.Sprintf("%s[%d]", path, i)
		ev := reflect.New(elemType)
		if df, ok := ev.Interface().(defaulter); ok {
			df.setDefaults()
		}
		d.lines[epath] = e.line
		d.decodeValue(e, ev.Elem(), epath)
		out = reflect.Append(out, ev.Elem())
	}
	fv.Set(out)
}
