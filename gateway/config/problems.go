package config

import (
	"fmt"

	"edgegw/drivers"
)

// origin is where a point was written: the config, or a device profile.
type origin struct {
	f    *source
	path string // "device[2].point[0]" or, in a profile, "point[0]"
}

// BusCheck checks the protocol-specific part of bus i and its devices (the
// gateway's drivers do: this package knows no wire protocol), reporting
// through p.
type BusCheck func(c *Config, bus int, p drivers.Problems)

// busProblems is where the driver of bus i reports: its Device(j) is the
// j-th device of DevicesOn(bus i).
func (v *validator) busProblems(i int) drivers.Problems {
	return &scope{v: v, f: v.c.file, path: fmt.Sprintf("bus[%d]", i), devices: v.c.DevicesOn(v.c.Buses[i].Name)}
}

// scope is one bus, device or point of a Check.
type scope struct {
	v       *validator
	f       *source
	path    string
	devices []int // a bus's devices, as indexes into Config.Devices
	device  int   // a device's index, for Point
}

func (s *scope) Errorf(key, format string, args ...any) {
	s.v.errs = append(s.v.errs, s.f.errorf(s.path+"."+key, format, args...))
}

func (s *scope) Set(key string) bool { return s.f.set(s.path + "." + key) }

func (s *scope) Device(i int) drivers.Problems {
	d := s.devices[i]
	return &scope{v: s.v, f: s.f, path: fmt.Sprintf("device[%d]", d), device: d}
}

func (s *scope) Point(i int) drivers.Problems {
	o := s.v.c.origins[s.device][i]
	return &scope{v: s.v, f: o.f, path: o.path, device: s.device}
}

// DevicesOn returns the indexes into Devices of the devices on the named bus,
// in file order.
func (c *Config) DevicesOn(bus string) []int {
	var out []int
	for i := range c.Devices {
		if c.Devices[i].Bus == bus {
			out = append(out, i)
		}
	}
	return out
}
