package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"edgegw/drivers/serial/port"
	"edgegw/gateway"
)

// ScanResult is what one unit id did when asked.
type ScanResult struct {
	Unit     int
	Answered bool
	// Detail says how: "holding register 0 = 1234", or the exception;
	// for units that did not answer, the error.
	Detail string
}

// Scan asks each unit id of units for holding register 0, with timeout per
// request and no retries, and reports through found as it goes: a reply, or
// an exception reply, means a device has that unit id. It stops when ctx ends.
func Scan(ctx context.Context, bus gateway.BusConfig, units []int, timeout time.Duration, found func(ScanResult)) error {
	bus.Timeout, bus.Retries = gateway.Duration(timeout), 0
	var b *Bus
	var err error
	switch bus.Protocol {
	case gateway.ProtoModbusTCP:
		b, err = OpenTCP(bus, nil, slog.New(slog.DiscardHandler))
	case gateway.ProtoModbusRTU, gateway.ProtoModbusASCII:
		b, err = OpenSerial(bus, nil, slog.New(slog.DiscardHandler), port.Open)
	default:
		return fmt.Errorf("bus %s is %s, not Modbus", bus.Name, bus.Protocol)
	}
	if err != nil {
		return err
	}
	defer b.Close()
	for _, u := range units {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.setUnit(byte(u))
		data, err := b.client.ReadHoldingRegisters(0, 1)
		res := ScanResult{Unit: u}
		switch {
		case err == nil && len(data) >= 2:
			res.Answered, res.Detail = true, fmt.Sprintf("holding register 0 = %d", uint16(data[0])<<8|uint16(data[1]))
		case isException(err):
			res.Answered, res.Detail = true, describe(err, timeout)
		default:
			res.Detail = describe(err, timeout)
			b.reset()
			if !errors.Is(err, errTimeout) && bus.Protocol != gateway.ProtoModbusTCP {
				// The port itself fails: no point asking the other units.
				found(res)
				return fmt.Errorf("bus %s: %s", bus.Name, res.Detail)
			}
		}
		found(res)
	}
	return nil
}
