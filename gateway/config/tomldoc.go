package config

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// tomlKind tells which field of a tomlValue holds the value.
type tomlKind int

const (
	kindTable tomlKind = iota
	kindArray
	kindString
	kindInteger
	kindFloat
	kindBool
	kindDateTime
)

func (k tomlKind) String() string {
	return [...]string{"table", "array", "string", "integer", "float", "boolean", "date/time"}[k]
}

// tomlValue is one value of a TOML document with the line it was written on.
// We build our own tree rather than decode into structs with a library so that
// every key keeps its line, and so that every problem can be reported at once.
type tomlValue struct {
	kind tomlKind
	line int

	table map[string]*tomlValue
	keys  []string // table keys in document order, for stable error order

	array []*tomlValue
	// arrayOfTables marks an array made by [[header]] tables, which may
	// be extended by later headers; inline arrays may not.
	arrayOfTables bool
	// explicit marks a table made by its own [header], which may appear once.
	explicit bool
	// inline marks inline tables and values, which later keys may not extend.
	inline bool

	str string
	i   int64
	f   float64
	b   bool
}

func newTable(line int) *tomlValue {
	return &tomlValue{kind: kindTable, line: line, table: map[string]*tomlValue{}}
}

func (t *tomlValue) set(key string, v *tomlValue) {
	t.table[key] = v
	t.keys = append(t.keys, key)
}

// docError is a syntax or structure problem in the document itself.
type docError struct {
	line int
	key  string
	msg  string
}

// parseTOML reads a whole TOML document into a tree of values with lines.
// It returns the first syntax error; structure errors stop parsing too,
// because what follows a broken header cannot be placed reliably.
func parseTOML(data []byte) (root *tomlValue, err *docError) {
	defer func() {
		// The parser is third-party code fed with outside bytes: a panic
		// there must become a config error, never a crash.
		if r := recover(); r != nil {
			root, err = nil, &docError{line: 1, msg: fmt.Sprintf("cannot parse document: %v", r)}
		}
	}()
	p := &unstable.Parser{}
	p.Reset(data)
	// Offsets of line starts, once: counting newlines from the top for
	// every key made a 1,000-point config take half a second to load.
	lineStarts := []int{0}
	for i, c := range data {
		if c == '\n' {
			lineStarts = append(lineStarts, i+1)
		}
	}
	lineOf := func(r unstable.Range) int {
		return sort.Search(len(lineStarts), func(i int) bool { return lineStarts[i] > int(r.Offset) })
	}
	root = newTable(1)
	current, currentPath := root, ""
	for p.NextExpression() {
		expr := p.Expression()
		switch expr.Kind {
		case unstable.KeyValue:
			if e := setKeyValue(current, expr, lineOf); e != nil {
				if currentPath != "" {
					e.key = currentPath + "." + e.key
				}
				return nil, e
			}
		case unstable.Table, unstable.ArrayTable:
			parts, line := keyParts(expr.Key(), lineOf)
			t, e := openTable(root, parts, line, expr.Kind == unstable.ArrayTable)
			if e != nil {
				return nil, e
			}
			current, currentPath = t, strings.Join(parts, ".")
		}
	}
	if perr := p.Error(); perr != nil {
		line := 1
		msg := perr.Error()
		if pe, ok := perr.(*unstable.ParserError); ok {
			if len(pe.Highlight) > 0 {
				line = lineOfHighlight(data, pe.Highlight)
			}
			msg = pe.Message
		}
		return nil, &docError{line: line, msg: "syntax error: " + msg}
	}
	return root, nil
}

// lineOfHighlight finds the line of a sub-slice of data.
func lineOfHighlight(data, highlight []byte) int {
	off := cap(data) - cap(highlight)
	if off < 0 || off > len(data) {
		return 1
	}
	return 1 + strings.Count(string(data[:off]), "\n")
}

func keyParts(it unstable.Iterator, lineOf func(unstable.Range) int) ([]string, int) {
	var parts []string
	line := 0
	for it.Next() {
		n := it.Node()
		if line == 0 {
			line = lineOf(n.Raw)
		}
		parts = append(parts, string(n.Data))
	}
	return parts, line
}

// openTable finds or creates the table a [header] or [[header]] names.
func openTable(root *tomlValue, parts []string, line int, arrayTable bool) (*tomlValue, *docError) {
	t := root
	for i, part := range parts {
		last := i == len(parts)-1
		key := strings.Join(parts[:i+1], ".")
		next, ok := t.table[part]
		switch {
		case last && arrayTable:
			if !ok {
				next = &tomlValue{kind: kindArray, line: line, arrayOfTables: true}
				t.set(part, next)
			} else if next.kind != kindArray || !next.arrayOfTables {
				return nil, &docError{line: line, key: key, msg: fmt.Sprintf("already defined as a %s on line %d", next.kind, next.line)}
			}
			elem := newTable(line)
			elem.explicit = true
			next.array = append(next.array, elem)
			return elem, nil
		case last:
			if !ok {
				next = newTable(line)
				next.explicit = true
				t.set(part, next)
				return next, nil
			}
			if next.kind != kindTable || next.inline {
				return nil, &docError{line: line, key: key, msg: fmt.Sprintf("already defined as a %s on line %d", next.kind, next.line)}
			}
			if next.explicit {
				return nil, &docError{line: line, key: key, msg: fmt.Sprintf("table defined twice (first on line %d)", next.line)}
			}
			next.explicit = true
			next.line = line
			return next, nil
		default:
			if !ok {
				next = newTable(line)
				t.set(part, next)
			}
			switch {
			case next.kind == kindArray && next.arrayOfTables && len(next.array) > 0:
				next = next.array[len(next.array)-1]
			case next.kind != kindTable || next.inline:
				return nil, &docError{line: line, key: key, msg: fmt.Sprintf("already defined as a %s on line %d", next.kind, next.line)}
			}
			t = next
		}
	}
	return t, nil
}

// setKeyValue stores key = value (keys may be dotted) in table t.
func setKeyValue(t *tomlValue, expr *unstable.Node, lineOf func(unstable.Range) int) *docError {
	parts, line := keyParts(expr.Key(), lineOf)
	for i, part := range parts[:len(parts)-1] {
		next, ok := t.table[part]
		if !ok {
			next = newTable(line)
			t.set(part, next)
		} else if next.kind != kindTable || next.inline || next.explicit {
			return &docError{line: line, key: strings.Join(parts[:i+1], "."), msg: fmt.Sprintf("already defined as a %s on line %d", next.kind, next.line)}
		}
		t = next
	}
	last := parts[len(parts)-1]
	if prev, ok := t.table[last]; ok {
		return &docError{line: line, key: strings.Join(parts, "."), msg: fmt.Sprintf("duplicate key (first on line %d)", prev.line)}
	}
	v, err := convertValue(expr.Value(), line, lineOf)
	if err != nil {
		err.key = strings.Join(parts, ".")
		return err
	}
	t.set(last, v)
	return nil
}

// convertValue turns an AST value node into a tomlValue.
func convertValue(n *unstable.Node, line int, lineOf func(unstable.Range) int) (*tomlValue, *docError) {
	if n.Raw.Length > 0 {
		line = lineOf(n.Raw)
	}
	v := &tomlValue{line: line, inline: true}
	switch n.Kind {
	case unstable.String:
		v.kind, v.str = kindString, string(n.Data)
	case unstable.Bool:
		v.kind, v.b = kindBool, string(n.Data) == "true"
	case unstable.Integer:
		i, err := parseTOMLInt(string(n.Data))
		if err != nil {
			return nil, &docError{line: line, msg: fmt.Sprintf("bad integer %q", n.Data)}
		}
		v.kind, v.i = kindInteger, i
	case unstable.Float:
		f, err := parseTOMLFloat(string(n.Data))
		if err != nil {
			return nil, &docError{line: line, msg: fmt.Sprintf("bad float %q", n.Data)}
		}
		v.kind, v.f = kindFloat, f
	case unstable.LocalDate, unstable.LocalTime, unstable.LocalDateTime, unstable.DateTime:
		v.kind, v.str = kindDateTime, string(n.Data)
	case unstable.Array:
		v.kind = kindArray
		it := n.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			e, err := convertValue(c, line, lineOf)
			if err != nil {
				return nil, err
			}
			v.array = append(v.array, e)
		}
	case unstable.InlineTable:
		v.kind, v.table = kindTable, map[string]*tomlValue{}
		it := n.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind != unstable.KeyValue {
				continue
			}
			if err := setKeyValue(v, c, lineOf); err != nil {
				return nil, err
			}
		}
		markInline(v)
	default:
		return nil, &docError{line: line, msg: fmt.Sprintf("unsupported value of kind %s", n.Kind)}
	}
	return v, nil
}

// markInline freezes an inline table and the tables dotted keys made inside it.
func markInline(v *tomlValue) {
	v.inline = true
	for _, c := range v.table {
		if c.kind == kindTable {
			markInline(c)
		}
	}
}

func parseTOMLInt(s string) (int64, error) {
	// strconv with base 0 knows 0x, 0o, 0b and underscores, as TOML does;
	// TOML forbids leading zeros, which base 0 would read as octal.
	digits := strings.TrimLeft(s, "+-")
	if len(digits) > 1 && digits[0] == '0' && digits[1] >= '0' && digits[1] <= '9' {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseInt(s, 0, 64)
}

func parseTOMLFloat(s string) (float64, error) {
	switch strings.TrimLeft(s, "+-") {
	case "inf":
		if strings.HasPrefix(s, "-") {
			return math.Inf(-1), nil
		}
		return math.Inf(1), nil
	case "nan":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
}
