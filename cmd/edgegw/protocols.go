package main

// The protocol switch: which driver package speaks which protocol of
// sensors.toml. (It moves into gateway once the drivers take their own
// options and no longer import gateway.)

import (
	"fmt"
	"log/slog"

	bugserial "go.bug.st/serial"

	"edgegw/board"
	"edgegw/drivers"
	"edgegw/drivers/modbus"
	"edgegw/drivers/serial"
	"edgegw/drivers/serial/port"
	"edgegw/gateway"
)

// ErrUnsupported is returned for a protocol this build cannot drive yet.
var ErrUnsupported = fmt.Errorf("drivers: protocol not supported by this build")

// openDriver opens the driver for a bus and its devices; it is a gateway.OpenFunc.
func openDriver(bus gateway.BusConfig, devices []gateway.DeviceConfig, log *slog.Logger) (drivers.Driver, error) {
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
