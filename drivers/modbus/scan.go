package modbus

import (
	"context"
	"errors"
	"fmt"
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
//
// The bus is o without its devices, polled with o.Timeout per request.
func Scan(ctx context.Context, o Options, units []int, found func(ScanResult)) error {
	timeout := o.Timeout
	o.Retries, o.Devices, o.Log = 0, nil, nil
	b, err := Open(o)
	if err != nil {
		return err
	}
	defer func() { _ = b.Close() }()
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
			if !errors.Is(err, errTimeout) && o.Mode != TCP {
				// The port itself fails: no point asking the other units.
				found(res)
				return fmt.Errorf("bus %s: %s", o.Name, res.Detail)
			}
		}
		found(res)
	}
	return nil
}
