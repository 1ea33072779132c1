// Package drivers wires each bus protocol of sensors.toml to its driver.
// It is the one place that knows which package speaks which protocol.
package drivers

import (
	"fmt"
	"log/slog"

	bugserial "go.bug.st/serial"

	"edgegw/board"
	"edgegw/drivers/modbus"
	"edgegw/drivers/serial"
	"edgegw/drivers/serial/port"
	"edgegw/gateway"
)

// ErrUnsupported is returned for a protocol this build cannot drive yet.
var ErrUnsupported = fmt.Errorf("drivers: protocol not supported by this build")

// Open opens the driver for a bus and its devices; it is a gateway.OpenFunc.
func Open(bus gateway.BusConfig, devices []gateway.DeviceConfig, log *slog.Logger) (gateway.Driver, error) {
	switch bus.Protocol {
	case gateway.ProtoModbusTCP:
		return modbus.OpenTCP(bus, devices, log)
	case gateway.ProtoModbusRTU, gateway.ProtoModbusASCII:
		return modbus.OpenSerial(bus, devices, log, portOpener(bus))
	case gateway.ProtoSerial:
		return serial.Open(bus, devices, log, portOpener(bus))
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnsupported, bus.Protocol)
	}
}

// portOpener opens the bus's serial port, in the kernel's RS-485 mode when
// the bus asks for it: without it such a line cannot send, so its failure
// is the open's.
func portOpener(bus gateway.BusConfig) port.OpenFunc {
	return func(device string, mode *bugserial.Mode) (port.Port, error) {
		p, err := port.Open(device, mode)
		if err != nil || !bus.RS485 {
			return p, err
		}
		if err := board.EnableRS485(device); err != nil {
			p.Close()
			return nil, err
		}
		return p, nil
	}
}
