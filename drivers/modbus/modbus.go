// Package modbus reads and decodes Modbus devices for the gateway.
//
// It promises: the points of a device are read in as few requests as the
// protocol allows (Plan, computed once when the bus opens); every type and
// byte order of CONTRACT.md decodes without allocation (strings aside); a
// failed request marks only its own points as errors, with a readable reason;
// and one bus is used by one goroutine, one request at a time.
//
// The wire work is done by github.com/goburrow/modbus. This package knows
// nothing of MQTT or the buffer.
package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	gmodbus "github.com/goburrow/modbus"

	"edgegw/gateway"
)

// device is a device on a bus with its request plan.
type device struct {
	name   string
	unit   byte
	points []Point
	plan   []Request
	// results holds one poll's outcome per point, so the reading lists
	// points in config order whatever order the requests ran in.
	results []result
}

type result struct {
	value gateway.Value
	err   string
}

// Bus polls the devices of one Modbus bus. Read and Write must be called
// from one goroutine at a time: a bus carries one request at a time.
type Bus struct {
	name    string
	client  gmodbus.Client
	setUnit func(byte)   // addresses the next request
	reset   func()       // after a failed request: a TCP bus reconnects
	close   func() error // releases the connection or port
	timeout time.Duration
	retries int
	devices map[string]*device
	log     *slog.Logger
}

// OpenTCP prepares a Modbus TCP bus and plans its devices' requests. It does
// not connect: the first Read does, and Read reconnects after any failure.
func OpenTCP(bus gateway.BusConfig, devices []gateway.DeviceConfig, log *slog.Logger) (*Bus, error) {
	h := gmodbus.NewTCPClientHandler(bus.Address)
	h.Timeout = bus.Timeout.D()
	b := &Bus{client: gmodbus.NewClient(h), setUnit: func(u byte) { h.SlaveId = u },
		// A timeout or broken connection may leave a late reply in the
		// socket; a fresh connection keeps it from answering the next request.
		reset: func() { h.Close() }, close: h.Close}
	return b.plan(bus, devices, log)
}

// OpenSerial prepares a Modbus RTU or ASCII bus on a serial port: goburrow's
// packagers frame and check the requests and replies, lineTransport moves
// them on the wire. The port opens at the first request and reopens after a
// failure (an unplugged USB adapter), via open (OpenPort outside tests).
func OpenSerial(bus gateway.BusConfig, devices []gateway.DeviceConfig, log *slog.Logger, open OpenPortFunc) (*Bus, error) {
	t := newLineTransport(bus, open)
	b := &Bus{reset: func() {}, close: t.Close}
	if bus.Protocol == gateway.ProtoModbusASCII {
		h := gmodbus.NewASCIIClientHandler(bus.Device)
		b.client, b.setUnit = gmodbus.NewClient2(h, t), func(u byte) { h.SlaveId = u }
	} else {
		h := gmodbus.NewRTUClientHandler(bus.Device)
		b.client, b.setUnit = gmodbus.NewClient2(h, t), func(u byte) { h.SlaveId = u }
	}
	return b.plan(bus, devices, log)
}

// plan finishes a Bus: its devices and their request plans.
func (b *Bus) plan(bus gateway.BusConfig, devices []gateway.DeviceConfig, log *slog.Logger) (*Bus, error) {
	b.name, b.timeout, b.retries, b.log = bus.Name, bus.Timeout.D(), bus.Retries, log
	b.devices = map[string]*device{}
	for _, dc := range devices {
		d := &device{name: dc.Name, unit: byte(dc.UnitID)}
		for _, pc := range dc.Points {
			p, err := PointFromConfig(pc)
			if err != nil {
				return nil, err
			}
			d.points = append(d.points, p)
		}
		d.plan = Plan(d.points, DefaultMaxGap)
		d.results = make([]result, len(d.points))
		b.devices[dc.Name] = d
	}
	return b, nil
}

// Requests returns how many requests one poll of the named device makes.
func (b *Bus) Requests(device string) int {
	if d, ok := b.devices[device]; ok {
		return len(d.plan)
	}
	return 0
}

// Read polls the named device once, filling r with a value or an error for
// every point. It returns early, with the rest of the points under errors,
// when ctx ends.
func (b *Bus) Read(ctx context.Context, name string, r *gateway.Reading) {
	d, ok := b.devices[name]
	if !ok {
		return
	}
	for _, req := range d.plan {
		var data []byte
		err := ctx.Err()
		for try := 0; err == nil && try <= b.retries; try++ {
			data, err = b.read(d.unit, req)
			if err == nil || isException(err) || ctx.Err() != nil {
				break
			}
		}
		for _, i := range req.Points {
			res := &d.results[i]
			if err != nil {
				res.err = describe(err, b.timeout)
				continue
			}
			v, derr := d.points[i].Decode(data, req.Start)
			res.value, res.err = v, ""
			if derr != nil {
				res.err = derr.Error()
			}
		}
	}
	for i := range d.results {
		if res := &d.results[i]; res.err != "" {
			r.AddError(d.points[i].Name, res.err)
		} else {
			r.Add(res.value)
		}
	}
}

func (b *Bus) read(unit byte, req Request) ([]byte, error) {
	b.setUnit(unit)
	var data []byte
	var err error
	switch req.Table {
	case Holding:
		data, err = b.client.ReadHoldingRegisters(req.Start, req.Count)
	case Input:
		data, err = b.client.ReadInputRegisters(req.Start, req.Count)
	case Coil:
		data, err = b.client.ReadCoils(req.Start, req.Count)
	default:
		data, err = b.client.ReadDiscreteInputs(req.Start, req.Count)
	}
	if err != nil && !isException(err) {
		b.reset()
	}
	return data, err
}

// Close closes the bus connection or port.
func (b *Bus) Close() error { return b.close() }

func isException(err error) bool {
	var me *gmodbus.ModbusError
	return errors.As(err, &me)
}

var exceptionNames = map[byte]string{
	1: "illegal function", 2: "illegal data address", 3: "illegal data value",
	4: "server device failure", 5: "acknowledge", 6: "server device busy",
	8: "memory parity error", 10: "gateway path unavailable",
	11: "gateway target device failed to respond",
}

// describe turns a request error into the short reason published under errors.
func describe(err error, timeout time.Duration) string {
	var me *gmodbus.ModbusError
	if errors.As(err, &me) {
		name, ok := exceptionNames[me.ExceptionCode]
		if !ok {
			name = "unknown exception"
		}
		return fmt.Sprintf("modbus exception %d: %s", me.ExceptionCode, name)
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("timeout: no reply within %s", timeout)
	}
	return err.Error()
}
