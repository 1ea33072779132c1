package serial

import (
	"encoding/hex"
	"log/slog"
	"regexp"
	"slices"
	"time"

	"edgegw/drivers"
	"edgegw/drivers/port"
)

// Options describe one serial line and the sensors on it.
type Options struct {
	Name string
	Line port.Line
	// Open opens the port; port.Open when nil.
	Open port.OpenFunc
	// Timeout bounds a polled sensor's reply.
	Timeout time.Duration
	// Framing is "line" (frames end in Delimiter) or "fixed" (FrameLength
	// bytes, starting with Header, ending in a Checksum: sum8, xor8, crc16
	// or "").
	Framing     string
	Delimiter   string
	FrameLength int
	// Header is hex ("AA55").
	Header   string
	Checksum string
	Devices  []Device
	// Log receives the line's events; nil discards them.
	Log *slog.Logger
}

// Device is one sensor on the line: it pushes frames, or answers Request.
type Device struct {
	Name    string
	Request string
	// Format is kv, csv, regex (Pattern's named groups) or binary.
	Format  string
	Pattern string
	Points  []PointSpec
}

// PointSpec is one value of a sensor's frames, as sensors.toml writes it.
type PointSpec struct {
	Name string
	// Field is the kv key, csv column, regex group or binary byte offset.
	Field string
	// Type is a drivers type name; empty means float64.
	Type      string
	ByteOrder string
	Scale     float64
	Offset    float64
}

// DefaultType is the type of a point that names none.
const DefaultType = "float64"

func (s PointSpec) withDefaults() PointSpec {
	if s.Type == "" {
		s.Type = DefaultType
	}
	return s
}

// modbusKeys are the keys of Modbus buses, devices and points, wrong on a
// serial one.
var (
	modbusDeviceKeys = []string{"unit_id"}
	modbusPointKeys  = []string{"table", "address", "length", "bit", "writable", "min", "max"}
)

// Check reports every problem of o through p, before anything opens.
func Check(o *Options, p drivers.Problems) {
	o.Line.Check(p, "serial")
	if p.Set("max_gap") {
		p.Errorf("max_gap", "applies to Modbus buses only")
	}
	checkFraming(o, p)
	for i := range o.Devices {
		d, dp := &o.Devices[i], p.Device(i)
		drivers.NotSet(dp, "Modbus devices only", modbusDeviceKeys...)
		checkFormat(d, dp)
		if d.Format == "binary" && o.Framing != "fixed" {
			dp.Errorf("format", "binary needs a bus with framing = \"fixed\"")
		}
		for j := range d.Points {
			pt, pp := d.Points[j].withDefaults(), dp.Point(j)
			drivers.CheckScale(pp, pt.Scale, pt.Offset)
			drivers.OneOf(pp, "type", pt.Type, drivers.TypeNames())
			if pt.Field == "" {
				pp.Errorf("field", "required on a serial device (kv key, csv column, regex group or binary byte offset)")
			}
			drivers.OneOf(pp, "byte_order", pt.ByteOrder, drivers.OrderNames())
			drivers.NotSet(pp, "Modbus points only", modbusPointKeys...)
		}
	}
}

func checkFraming(o *Options, p drivers.Problems) {
	drivers.OneOf(p, "framing", o.Framing, []string{"line", "fixed"})
	if o.Framing == "line" && o.Delimiter == "" {
		p.Errorf("delimiter", "must not be empty for line framing")
	}
	if o.Framing != "fixed" {
		drivers.NotSet(p, `framing = "fixed" only`, "header", "checksum")
		return
	}
	drivers.IntRange(p, "frame_length", o.FrameLength, 1, 4096)
	drivers.OneOf(p, "checksum", o.Checksum, drivers.ChecksumNames())
	if h, err := hex.DecodeString(o.Header); err != nil {
		p.Errorf("header", "%q is not hex bytes, like \"AA55\"", o.Header)
	} else if len(h)+drivers.ChecksumSize(o.Checksum) >= o.FrameLength && o.FrameLength > 0 {
		p.Errorf("header", "header and checksum leave no room in a %d-byte frame", o.FrameLength)
	}
}

func checkFormat(d *Device, p drivers.Problems) {
	drivers.OneOf(p, "format", d.Format, []string{"kv", "csv", "regex", "binary"})
	if d.Format != "regex" {
		drivers.NotSet(p, "format regex only", "pattern")
		return
	}
	re, err := regexp.Compile(d.Pattern)
	switch {
	case d.Pattern == "":
		p.Errorf("pattern", "required for format regex")
	case err != nil:
		p.Errorf("pattern", "bad regular expression: %v", err)
	case len(re.SubexpNames()) < 2 || slices.Equal(re.SubexpNames()[1:], make([]string, len(re.SubexpNames())-1)):
		p.Errorf("pattern", "needs named groups, like (?P<temp>[0-9.]+)")
	}
}
