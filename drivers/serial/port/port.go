// Package port opens serial ports with go.bug.st/serial, for every driver
// that talks on a serial line (Modbus RTU and ASCII, plain serial sensors),
// with the line settings of a [[bus]].
package port

import (
	"io"
	"time"

	"go.bug.st/serial"

	"edgegw/gateway"
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

// Mode turns a bus's line settings into go.bug.st/serial's.
func Mode(bus gateway.BusConfig) *serial.Mode {
	m := &serial.Mode{BaudRate: bus.Baud, DataBits: bus.DataBits, StopBits: serial.OneStopBit, Parity: serial.NoParity}
	if bus.StopBits == 2 {
		m.StopBits = serial.TwoStopBits
	}
	switch bus.Parity {
	case "even":
		m.Parity = serial.EvenParity
	case "odd":
		m.Parity = serial.OddParity
	}
	return m
}
