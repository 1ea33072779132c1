package modbus

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"time"

	"edgegw/drivers"
	"edgegw/drivers/port"
)

// Mode is how a bus carries Modbus.
type Mode uint8

// Modes, with their sensors.toml protocol names.
const (
	TCP   Mode = iota // modbus-tcp
	RTU               // modbus-rtu
	ASCII             // modbus-ascii
)

func (m Mode) String() string { return [...]string{"modbus-tcp", "modbus-rtu", "modbus-ascii"}[m] }

// Options describe one Modbus bus and its devices.
type Options struct {
	Name string
	Mode Mode
	// Address is host:port (TCP).
	Address string
	// Line is the serial line (RTU, ASCII).
	Line port.Line
	// Open opens the serial port (RTU, ASCII); port.Open when nil.
	Open port.OpenFunc
	// Timeout bounds one request; Retries is how many more tries a failed
	// request gets.
	Timeout time.Duration
	Retries int
	// MaxGap is how many unused registers (16 times as many bits) one
	// request may read to save another; -1 picks by mode (see MaxGapFor).
	MaxGap  int
	Devices []Device
	// Log receives the bus's events; nil discards them.
	Log *slog.Logger
}

// Device is one unit on the bus.
type Device struct {
	Name   string
	UnitID int
	// Interval is the poll period: a device that stops answering is
	// retried after 2, 4, 8… intervals.
	Interval time.Duration
	Points   []PointSpec
}

// PointSpec is one point as sensors.toml writes it. An empty Table means
// holding; an empty Type means bool on a bit table or with a Bit, else uint16.
type PointSpec struct {
	Name      string
	Table     string
	Address   int
	Type      string
	ByteOrder string
	// Length is in registers, for type string only.
	Length int
	// Bit is 0..15 to read one bit of a register as a bool; -1 means none.
	Bit      int
	Scale    float64
	Offset   float64
	Writable bool
	// Min and Max bound what Write accepts, in engineering units; nil is
	// no limit.
	Min, Max *float64
}

// DefaultType is the type of a register point that names none; a coil, a
// discrete input or a bit is "bool".
const DefaultType = "uint16"

// withDefaults fills the table and type a point left empty.
func (s PointSpec) withDefaults() PointSpec {
	if s.Table == "" {
		s.Table = "holding"
	}
	if s.Type == "" {
		s.Type = DefaultType
		if s.Table == "coil" || s.Table == "discrete" || s.Bit >= 0 {
			s.Type = "bool"
		}
	}
	return s
}

// ParsePoint turns a point as written into the Point that Plan and Decode
// use; Check reports the same problems with their keys.
func ParsePoint(s PointSpec) (Point, error) {
	s = s.withDefaults()
	t, ok1 := tableNames[s.Table]
	ty, ok2 := drivers.ParseType(s.Type)
	o, ok3 := drivers.ParseOrder(s.ByteOrder)
	if !ok1 || !ok2 || !ok3 || s.Address < 0 || s.Address > math.MaxUint16 {
		return Point{}, fmt.Errorf("modbus: point %q: table %q, type %q or byte order %q not valid", s.Name, s.Table, s.Type, s.ByteOrder)
	}
	return Point{Name: s.Name, Table: t, Address: uint16(s.Address), Type: ty, Order: o, Length: s.Length, Bit: s.Bit,
		Scale: s.Scale, Offset: s.Offset, Writable: s.Writable, Min: s.Min, Max: s.Max}, nil
}

// The keys of protocol serial, wrong on a Modbus bus or device.
var (
	serialBusKeys    = []string{"framing", "delimiter", "frame_length", "header", "checksum"}
	serialDeviceKeys = []string{"request", "format", "pattern"}
)

// Check reports every problem of o through p, before anything opens.
func Check(o *Options, p drivers.Problems) {
	if o.Mode == TCP {
		if _, port, err := net.SplitHostPort(o.Address); err != nil || port == "" {
			p.Errorf("address", "%q is not host:port (modbus-tcp needs address)", o.Address)
		}
		for _, k := range port.Keys {
			if p.Set(k) {
				p.Errorf(k, "applies to serial buses only, not %s", o.Mode)
			}
		}
	} else {
		o.Line.Check(p, o.Mode.String())
	}
	drivers.IntRange(p, "retries", o.Retries, 0, 10)
	drivers.IntRange(p, "max_gap", o.MaxGap, -1, MaxRegisters)
	for _, k := range serialBusKeys {
		if p.Set(k) {
			p.Errorf(k, "applies to protocol serial only, not %s", o.Mode)
		}
	}
	for i := range o.Devices {
		d, dp := &o.Devices[i], p.Device(i)
		drivers.IntRange(dp, "unit_id", d.UnitID, 0, 247)
		drivers.NotSet(dp, "devices on a serial bus only", serialDeviceKeys...)
		for j := range d.Points {
			checkPoint(d.Points[j], dp.Point(j))
			drivers.CheckScale(dp.Point(j), d.Points[j].Scale, d.Points[j].Offset)
		}
	}
}

// checkPoint reports what is wrong with one point: its table, type, byte
// order, address and width, bit, length and writability.
func checkPoint(s PointSpec, p drivers.Problems) {
	if p.Set("field") {
		p.Errorf("field", "applies to serial points only")
	}
	s = s.withDefaults()
	drivers.OneOf(p, "table", s.Table, []string{"holding", "input", "coil", "discrete"})
	drivers.OneOf(p, "type", s.Type, drivers.TypeNames())
	drivers.OneOf(p, "byte_order", s.ByteOrder, drivers.OrderNames())
	drivers.IntRange(p, "address", s.Address, 0, math.MaxUint16)
	bitTable := s.Table == "coil" || s.Table == "discrete"
	switch {
	case bitTable && s.Type != "bool":
		p.Errorf("type", "a %s point is a bool, not %s", s.Table, s.Type)
	case bitTable && s.Bit >= 0:
		p.Errorf("bit", "applies to register tables only, not %s", s.Table)
	case !bitTable && s.Type == "bool" && s.Bit < 0:
		p.Errorf("bit", "a bool from a %s register needs bit = 0..15", s.Table)
	case s.Bit >= 0 && s.Type != "bool":
		p.Errorf("bit", "applies to type bool only")
	}
	drivers.IntRange(p, "bit", s.Bit, -1, 15)
	if s.Type == "string" {
		drivers.IntRange(p, "length", s.Length, 1, MaxRegisters)
	} else if s.Length != 0 {
		p.Errorf("length", "applies to type string only")
	}
	if ty, ok := drivers.ParseType(s.Type); ok && !bitTable {
		c := drivers.Codec{Type: ty, Length: s.Length}
		if end := s.Address + c.Words() - 1; end > math.MaxUint16 && s.Address <= math.MaxUint16 {
			p.Errorf("address", "a %s at %d runs past register 65535", s.Type, s.Address)
		}
	}
	if s.Writable && (s.Table == "input" || s.Table == "discrete") {
		p.Errorf("writable", "%s is read-only in Modbus: only holding and coil points are writable", s.Table)
	}
	checkLimits(s, p)
}

// checkLimits reports min and max where they cannot apply: they bound the
// writes of numeric points.
func checkLimits(s PointSpec, p drivers.Problems) {
	for _, k := range []string{"min", "max"} {
		switch {
		case !p.Set(k):
		case !s.Writable:
			p.Errorf(k, "applies to writable points only: it bounds writes, not readings")
		case s.Type == "bool" || s.Type == "string":
			p.Errorf(k, "applies to numeric points only, not %s", s.Type)
		}
	}
	if s.Min != nil && s.Max != nil && *s.Min > *s.Max {
		p.Errorf("max", "%g is below min = %g", *s.Max, *s.Min)
	}
}
