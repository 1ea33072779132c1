// Package drivers wires each bus protocol of sensors.toml to its driver.
// It is the one place that knows which package speaks which protocol.
package drivers

import (
	"fmt"
	"log/slog"

	"edgegw/drivers/modbus"
	"edgegw/drivers/serial"
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
		return modbus.OpenSerial(bus, devices, log, modbus.OpenPort)
	case gateway.ProtoSerial:
		return serial.Open(bus, devices, log, serial.OpenPort)
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnsupported, bus.Protocol)
	}
}
