// Package drivers is the vocabulary every driver shares: the reading a
// poll fills (values and point errors), the interfaces a driver implements,
// and its request counters. It imports nothing of the gateway, the buffer
// or MQTT: drivers/modbus and drivers/serial build on it, and the gateway
// consumes it.
package drivers

import (
	"context"
	"encoding/json"
	"time"
)

// Driver talks to the devices of one bus. The scheduler calls it from one
// goroutine only, because a bus carries one request at a time.
type Driver interface {
	// Read polls the named device once and fills r with a value or an
	// error for each of its points. It must return soon after ctx ends.
	Read(ctx context.Context, device string, r *Reading)
	// Close releases the bus.
	Close() error
}

// Writer is a Driver that can also set points (writable = true). Like Read,
// Write is called from the bus's goroutine only.
type Writer interface {
	// Write sets the point from a JSON value in engineering units, reads
	// it back and returns the value read. A read-back that differs from
	// what was written is a *ReadBackError.
	Write(ctx context.Context, device, point string, value json.RawMessage) (Value, error)
}

// ReadBackError is a write the device took but whose point reads back
// something else (a device that clamps, or ignores the write).
type ReadBackError struct {
	Written, Read Value
}

func (e *ReadBackError) Error() string {
	return "the device took the write but reads back " + e.Read.String() + " after " + e.Written.String() + " was written"
}

// BusStats are one device's request counters, from drivers that keep them.
type BusStats struct {
	Device   string
	Requests uint64
	// Errors counts failed requests by kind: timeout, exception, transport.
	Errors map[string]uint64
	// Responses is the number of replies and ResponseTime their total time.
	Responses    uint64
	ResponseTime time.Duration
}
