package gateway

// The protocol map: the one place a protocol of sensors.toml meets its
// driver package. run, check, scan and simulate all go through it.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	bugserial "go.bug.st/serial"

	"edgegw/board"
	"edgegw/drivers"
	"edgegw/drivers/modbus"
	"edgegw/drivers/port"
	"edgegw/drivers/serial"
	"edgegw/gateway/config"
)

// ErrUnsupported is returned for a protocol this build cannot drive.
var ErrUnsupported = errors.New("protocol not supported by this build")

// protocols lists the protocols a bus may speak, as sensors.toml spells them.
var protocols = []string{"modbus-rtu", "modbus-ascii", "modbus-tcp", "serial"}

// driverBus is one bus and its devices in the words of its driver: exactly
// one of the two is set.
type driverBus struct {
	modbus *modbus.Options
	serial *serial.Options
}

// busFor is the protocol switch.
func busFor(bus config.Bus, devices []config.Device, log *slog.Logger) (driverBus, error) {
	switch bus.Protocol {
	case "modbus-tcp":
		return driverBus{modbus: modbusOptions(modbus.TCP, bus, devices, log)}, nil
	case "modbus-rtu":
		return driverBus{modbus: modbusOptions(modbus.RTU, bus, devices, log)}, nil
	case "modbus-ascii":
		return driverBus{modbus: modbusOptions(modbus.ASCII, bus, devices, log)}, nil
	case "serial":
		return driverBus{serial: serialOptions(bus, devices, log)}, nil
	}
	return driverBus{}, fmt.Errorf("%w: %q", ErrUnsupported, bus.Protocol)
}

// defaultPointType is the type of d's points that name none, as its
// bus's driver reads them.
func defaultPointType(c *config.Config, d config.Device) string {
	for _, b := range c.Buses {
		if b.Name == d.Bus && b.Protocol == "serial" {
			return serial.DefaultType
		}
	}
	return modbus.DefaultType
}

func (b driverBus) check(p drivers.Problems) {
	if b.modbus != nil {
		modbus.Check(b.modbus, p)
	} else {
		serial.Check(b.serial, p)
	}
}

func (b driverBus) open() (drivers.Driver, error) {
	if b.modbus != nil {
		return modbus.Open(*b.modbus)
	}
	return serial.Open(*b.serial)
}

// openDriver opens the driver of a bus for its devices; the default OpenFunc.
func openDriver(bus config.Bus, devices []config.Device, log *slog.Logger) (drivers.Driver, error) {
	b, err := busFor(bus, devices, log)
	if err != nil {
		return nil, err
	}
	return b.open()
}

// checkBus is the config's BusCheck: the driver of bus i checks its part.
func checkBus(c *config.Config, i int, p drivers.Problems) {
	bus := c.Buses[i]
	b, err := busFor(bus, devicesOn(c, bus.Name), nil)
	if err != nil {
		if bus.Protocol != "" {
			p.Errorf("protocol", "%q is not one of %s", bus.Protocol, strings.Join(protocols, ", "))
		}
		return
	}
	b.check(p)
}

// LoadConfig reads and checks the config at path, the drivers' parts
// included; every problem is a *config.Error.
func LoadConfig(path string) (*config.Config, error) { return config.Load(path, checkBus) }

// ParseConfig is LoadConfig for a config already read.
func ParseConfig(file string, data []byte) (*config.Config, error) {
	return config.Parse(file, data, checkBus)
}

func devicesOn(c *config.Config, bus string) []config.Device {
	var out []config.Device
	for _, i := range c.DevicesOn(bus) {
		out = append(out, c.Devices[i])
	}
	return out
}

func modbusOptions(mode modbus.Mode, bus config.Bus, devices []config.Device, log *slog.Logger) *modbus.Options {
	o := &modbus.Options{Name: bus.Name, Mode: mode, Address: bus.Address, Line: line(bus), Open: portOpener(bus),
		Timeout: bus.Timeout.D(), Retries: bus.Retries, MaxGap: bus.MaxGap, Log: log}
	for _, d := range devices {
		md := modbus.Device{Name: d.Name, UnitID: d.UnitID, Interval: d.Interval.D()}
		for _, p := range d.Points {
			md.Points = append(md.Points, modbus.PointSpec{Name: p.Name, Table: p.Table, Address: p.Address, Type: p.Type,
				ByteOrder: p.ByteOrder, Length: p.Length, Bit: p.Bit, Scale: p.Scale, Offset: p.Offset, Writable: p.Writable,
				Min: limit(p.Min), Max: limit(p.Max)})
		}
		o.Devices = append(o.Devices, md)
	}
	return o
}

// limit is a min or max as the driver takes it: nil for none (±Inf).
func limit(f float64) *float64 {
	if math.IsInf(f, 0) {
		return nil
	}
	return &f
}

func serialOptions(bus config.Bus, devices []config.Device, log *slog.Logger) *serial.Options {
	o := &serial.Options{Name: bus.Name, Line: line(bus), Open: portOpener(bus), Timeout: bus.Timeout.D(),
		Framing: bus.Framing, Delimiter: bus.Delimiter, FrameLength: bus.FrameLength, Header: bus.Header,
		Checksum: bus.Checksum, Log: log}
	for _, d := range devices {
		sd := serial.Device{Name: d.Name, Request: d.Request, Format: d.Format, Pattern: d.Pattern}
		for _, p := range d.Points {
			sd.Points = append(sd.Points, serial.PointSpec{Name: p.Name, Field: p.Field, Type: p.Type,
				ByteOrder: p.ByteOrder, Scale: p.Scale, Offset: p.Offset})
		}
		o.Devices = append(o.Devices, sd)
	}
	return o
}

func line(bus config.Bus) port.Line {
	return port.Line{Device: bus.Device, Baud: bus.Baud, DataBits: bus.DataBits, Parity: bus.Parity, StopBits: bus.StopBits}
}

// portOpener opens the bus's serial port, in the kernel's RS-485 mode when
// the bus asks for it: without it such a line cannot send, so its failure
// is the open's.
func portOpener(bus config.Bus) port.OpenFunc {
	return func(device string, mode *bugserial.Mode) (port.Port, error) {
		p, err := port.Open(device, mode)
		if err != nil || !bus.RS485 {
			return p, err
		}
		if err := board.EnableRS485(device); err != nil {
			_ = p.Close() // the RS-485 error is the one to report
			return nil, err
		}
		return p, nil
	}
}

// ErrNotModbus is returned by Scan for a bus that does not speak Modbus.
var ErrNotModbus = errors.New("not a Modbus bus")

// Scan asks each of units on the named bus of c whether it is there (see
// modbus.Scan), with timeout per unit, through the same driver options as
// run uses, RS-485 mode included.
func Scan(ctx context.Context, c *config.Config, busName string, units []int, timeout time.Duration, found func(modbus.ScanResult)) error {
	for _, bus := range c.Buses {
		if bus.Name != busName {
			continue
		}
		b, err := busFor(bus, nil, nil)
		if err != nil {
			return err
		}
		if b.modbus == nil {
			return fmt.Errorf("bus %s is %s: %w", bus.Name, bus.Protocol, ErrNotModbus)
		}
		o := *b.modbus
		o.Timeout = timeout
		return modbus.Scan(ctx, o, units, found)
	}
	return fmt.Errorf("no [[bus]] named %q in %s", busName, c.File)
}

// SimulatedBus is what `edgegw simulate` serves: the Modbus devices of a
// config, and the settings of the bus it imitates.
type SimulatedBus struct {
	Devices []modbus.Device
	// Address is the first modbus-tcp bus's address ("" without one).
	Address string
	// Line and ASCII are the first modbus-rtu or modbus-ascii bus's line
	// (Line.Device "" without one).
	Line  port.Line
	ASCII bool
}

// Simulated collects what a simulator of c's Modbus devices needs.
func Simulated(c *config.Config) SimulatedBus {
	var s SimulatedBus
	for _, bus := range c.Buses {
		b, err := busFor(bus, devicesOn(c, bus.Name), nil)
		if err != nil || b.modbus == nil {
			continue
		}
		s.Devices = append(s.Devices, b.modbus.Devices...)
		if b.modbus.Mode == modbus.TCP && s.Address == "" {
			s.Address = b.modbus.Address
		}
		if b.modbus.Mode != modbus.TCP && s.Line.Device == "" {
			s.Line, s.ASCII = b.modbus.Line, b.modbus.Mode == modbus.ASCII
		}
	}
	return s
}
