package drivers

import (
	"fmt"
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

// Check is a Problems for tests and for callers without a file: it keeps
// every problem as "key: message", keys in full ("device[0].point[1].type").
type Check struct {
	prefix string
	set    func(key string) bool
	errs   *[]string
}

// NewCheck returns an empty Check; set says which keys count as written
// (nil: none).
func NewCheck(set func(key string) bool) *Check {
	return &Check{set: set, errs: new([]string)}
}

// Errorf implements Problems.
func (c *Check) Errorf(key, format string, args ...any) {
	*c.errs = append(*c.errs, c.prefix+key+": "+fmt.Sprintf(format, args...))
}

// Set implements Problems.
func (c *Check) Set(key string) bool { return c.set != nil && c.set(c.prefix+key) }

// Device implements Problems.
func (c *Check) Device(i int) Problems { return c.scope(fmt.Sprintf("device[%d].", i)) }

// Point implements Problems.
func (c *Check) Point(i int) Problems { return c.scope(fmt.Sprintf("point[%d].", i)) }

func (c *Check) scope(s string) *Check { return &Check{prefix: c.prefix + s, set: c.set, errs: c.errs} }

// Errs returns the problems found so far.
func (c *Check) Errs() []string { return *c.errs }
