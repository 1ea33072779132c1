package drivers

import (
	"slices"
	"strings"
)

// Problems collects what is wrong with one bus's settings, for a driver's
// Check. Keys are spelled as in sensors.toml and are relative to the table
// in scope ("timeout" on the bus, "unit_id" on a device, "type" on a
// point); the caller knows the file and the line. Check must report every
// problem it finds, not stop at the first.
type Problems interface {
	// Errorf records a problem with key.
	Errorf(key, format string, args ...any)
	// Set reports whether the file wrote key, rather than leaving its default.
	Set(key string) bool
	// Device scopes to the i-th device of the options being checked.
	Device(i int) Problems
	// Point scopes a device's Problems to its i-th point.
	Point(i int) Problems
}

// OneOf reports key unless val is one of allowed.
func OneOf(p Problems, key, val string, allowed []string) {
	if !slices.Contains(allowed, val) {
		p.Errorf(key, "%q is not one of %s", val, strings.Join(quoteEmpty(allowed), ", "))
	}
}

func quoteEmpty(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n
		if n == "" {
			out[i] = `""`
		}
	}
	return out
}

// IntRange reports key unless lo <= val <= hi.
func IntRange(p Problems, key string, val, lo, hi int) {
	if val < lo || val > hi {
		p.Errorf(key, "%d is out of range %d..%d", val, lo, hi)
	}
}

// NotSet reports each of keys the file wrote although it does not apply;
// why completes "applies to …".
func NotSet(p Problems, why string, keys ...string) {
	for _, k := range keys {
		if p.Set(k) {
			p.Errorf(k, "applies to %s", why)
		}
	}
}
