// Package status shows how the gateway is: /metrics (Prometheus text) and
// /healthz over HTTP, and the service manager's watchdog and STATUS= line.
// It is the only package that imports the Prometheus client. It decides
// nothing: the gateway reports what it has (a Report, read when asked) and
// each long-lived loop's sign of life with its own limit (Liveness); one
// rule, Stuck, turns those into /healthz failures and withheld pings alike.
package status

import (
	"fmt"
	"time"

	"edgegw/buffer"
	"edgegw/drivers"
)

// Liveness is one long-lived loop's sign of life: it shows it is not stuck
// (Last) at least every Limit while it runs.
type Liveness struct {
	Name  string // "bus rs485", "uplink", "buffer"
	Last  time.Time
	Limit time.Duration
}

// Stuck lists the loops whose sign of life is older than their limit, as
// "bus rs485 for 2m0s". Before started no loop counts as late: a loop that
// has not yet beaten is timed from the start.
func Stuck(now, started time.Time, loops []Liveness) []string {
	var stuck []string
	for _, l := range loops {
		last := l.Last
		if last.Before(started) {
			last = started
		}
		if lag := now.Sub(last); lag > l.Limit {
			stuck = append(stuck, fmt.Sprintf("%s for %s", l.Name, lag.Round(time.Second)))
		}
	}
	return stuck
}

// DeviceCounts are one device's reading counters.
type DeviceCounts struct {
	Device     string
	Readings   uint64
	ReadErrors uint64
}

// Uplink is what the MQTT side reports.
type Uplink struct {
	Published uint64 // readings acknowledged
	Rejected  uint64 // readings refused for good
	TooLarge  uint64 // readings larger than the broker's Maximum Packet Size
	// CommandsDropped counts commands dropped because too many waited.
	CommandsDropped uint64
	Broker          string // the broker in use; "" while disconnected
	Protocol        string // the MQTT version spoken to it: "5" or "3.1.1"
	// ConnectedSince is when the connection in use came up (zero while
	// disconnected); LastError the newest failure to connect or loss of a
	// connection, at LastErrorAt.
	ConnectedSince time.Time
	LastError      string
	LastErrorAt    time.Time
}

// ModbusServer is one [[modbus_server]]'s counters.
type ModbusServer struct {
	Name string // its listen address
	// Requests counts requests by how they were answered: cache, bus,
	// refused, error.
	Requests map[string]uint64
	// QueueWait is the total time QueueWaits requests waited for the bus.
	QueueWait  time.Duration
	QueueWaits uint64
	Clients    int
}

// Report is the gateway at one moment.
type Report struct {
	// Buffer is nil while the buffer is not open; BufferErr is why
	// readings cannot be stored now (nil when they can).
	Buffer    *buffer.Stats
	BufferErr error
	Devices   []DeviceCounts
	Buses     []drivers.BusStats
	// Uplink is nil until the uplink has started.
	Uplink        *Uplink
	Brokers       []string
	Loops         []Liveness
	ModbusServers []ModbusServer
	// Gateway and BusInfo are for people: the commissioning page and
	// /api/v1/status (with the devices of a LiveSource).
	Gateway Gateway
	BusInfo []Bus
}

// LiveSource reports every device as its polls left it, with the raw
// registers behind each value when raw is set; safe from any goroutine.
type LiveSource func(raw bool) []Device

// Gateway says what is running.
type Gateway struct {
	ID, Version, Board, Config string
	Started                    time.Time
	// Reload is the last reload's outcome; nil before any.
	Reload *Reload
}

// Reload is a reload's outcome: Err is "" when it took effect.
type Reload struct {
	At  time.Time
	Err string
}

// Device is a device as its last poll left it.
type Device struct {
	Name, Bus string
	Interval  time.Duration
	// Polls counts the polls since the gateway started.
	Polls uint64
	// LastPoll is when the last poll began (zero before the first) and
	// PollTook how long it took.
	LastPoll time.Time
	PollTook time.Duration
	// FailingSince is when the device stopped answering any point (zero
	// while it answers); LastError is the newest point error, at
	// LastErrorAt.
	FailingSince time.Time
	LastError    string
	LastErrorAt  time.Time
	// PointsJSON is the points' names and units, config order: a JSON
	// array of {"name", "unit"}; Layout a hash of it and the name, which
	// changes when they do.
	PointsJSON []byte
	Layout     uint64
	// Reading and Previous are the newest two readings as published (JSON,
	// docs/MQTT.md; read-only), when the gateway keeps them; Points then holds only
	// the points in error, with their last value (and every point, when
	// raw registers were asked for). Without them Points holds every point.
	Reading, Previous []byte
	Points            []Point
}

// Point is one point as the device's polls left it.
type Point struct {
	Name, Unit string
	// Value is the newest value read, as JSON (a number, true/false or a
	// string), read at At; "" when none ever was. Previous is the value
	// read before it ("" when none).
	Value, Previous string
	At              time.Time
	// Error is why the last poll did not read the point; "" when it did.
	Error string
	// Raw is the registers or bytes the value came from, hex; "" when
	// the driver does not say.
	Raw string
}

// Bus is one bus's traffic.
type Bus struct {
	Name, Protocol string
	Requests       uint64
	Errors         uint64
	// WireTime is the total time requests took from request to reply.
	WireTime time.Duration
	// Queue is the outside work (commands, Modbus server requests) waiting.
	Queue int
}

// Source reports the gateway's state; it must be safe to call from any
// goroutine and return quickly.
type Source func() Report
