// Package port opens serial ports with go.bug.st/serial for every driver
// that talks on a serial line (Modbus RTU and ASCII, plain serial sensors),
// and checks a line's settings.
package port

import (
	"io"
	"time"

	"go.bug.st/serial"

	"edgegw/drivers"
)

// Port is what drivers need of a serial port: go.bug.st/serial's Port.
// Its Read returns 0, nil when the read timeout passes.
type Port interface {
	io.ReadWriter
	SetReadTimeout(time.Duration) error
	ResetInputBuffer() error
	Close() error
}

// OpenFunc opens a serial port; Open outside tests.
type OpenFunc func(device string, mode *serial.Mode) (Port, error)

// Open opens a serial port with go.bug.st/serial.
func Open(device string, mode *serial.Mode) (Port, error) { return serial.Open(device, mode) }

// Line is a serial line's settings, as a [[bus]] gives them.
type Line struct {
	// Device is the port, like /dev/ttyUSB0.
	Device   string
	Baud     int
	DataBits int
	// Parity is none, even or odd.
	Parity   string
	StopBits int
}

// Mode turns the line settings into go.bug.st/serial's.
func (l Line) Mode() *serial.Mode {
	m := &serial.Mode{BaudRate: l.Baud, DataBits: l.DataBits, StopBits: serial.OneStopBit, Parity: serial.NoParity}
	if l.StopBits == 2 {
		m.StopBits = serial.TwoStopBits
	}
	switch l.Parity {
	case "even":
		m.Parity = serial.EvenParity
	case "odd":
		m.Parity = serial.OddParity
	}
	return m
}

// Check reports what is wrong with the line's settings, and an address
// (which only a TCP bus has); protocol names the bus's protocol for messages.
func (l Line) Check(p drivers.Problems, protocol string) {
	if p.Set("address") {
		p.Errorf("address", "applies to modbus-tcp only; a serial bus uses device")
	}
	if l.Device == "" {
		p.Errorf("device", "required for %s (the serial port, like /dev/ttyUSB0)", protocol)
	}
	drivers.IntRange(p, "baud", l.Baud, 50, 4000000)
	drivers.IntRange(p, "data_bits", l.DataBits, 5, 8)
	drivers.OneOf(p, "parity", l.Parity, []string{"none", "even", "odd"})
	drivers.IntRange(p, "stop_bits", l.StopBits, 1, 2)
}

// Keys are the sensors.toml keys of a line's settings, for buses that have
// no serial line.
var Keys = []string{"device", "baud", "data_bits", "parity", "stop_bits", "rs485"}
