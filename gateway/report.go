package gateway

import (
	"errors"
	"sync"
	"time"

	"edgegw/buffer"
	mbserver "edgegw/drivers/modbus/server"
	"edgegw/gateway/status"
)

// What the gateway tells: the status server, the watchdog and the
// commissioning page read it here.

// report is the gateway's state for the status server and the watchdog.
func (g *gateway) report() status.Report {
	var r status.Report
	buf, _ := g.state.get()
	r.BufferErr = g.state.Err()
	if buf != nil {
		st := buf.Stats()
		r.Buffer = &st
		r.Loops = append(r.Loops, status.Liveness{Name: "buffer", Last: buf.Heartbeat(), Limit: 2 * time.Minute})
	}
	f := g.current() // nil until the first fleet starts
	var pollers []*poller
	var servers []*mbserver.Server
	if f != nil {
		pollers, servers = f.pollers, f.servers
	}
	for _, p := range pollers {
		for _, d := range p.devices {
			ds := p.stats[d.Name]
			r.Devices = append(r.Devices, status.DeviceCounts{Device: d.Name, Readings: ds.Readings.Load(), ReadErrors: ds.ReadErrors.Load()})
		}
		r.Buses = append(r.Buses, p.busStats()...)
		r.Loops = append(r.Loops, p.liveness())
		r.BusInfo = append(r.BusInfo, p.busInfo())
	}
	for _, s := range servers {
		c := s.Counts()
		m := status.ModbusServer{Name: s.Name(), Requests: map[string]uint64{}, QueueWait: c.QueueWait, QueueWaits: c.QueueWaits, Clients: c.Clients}
		for o, n := range c.Requests {
			m.Requests[mbserver.Outcome(o).String()] = n
		}
		r.ModbusServers = append(r.ModbusServers, m)
	}
	if up := g.uplink(); up != nil {
		lastErr, lastErrAt := up.LastError()
		r.Uplink = &status.Uplink{Published: up.Published(), Rejected: up.Rejected(), TooLarge: up.TooLarge(), CommandsDropped: up.CommandsDropped(),
			Broker: up.Broker(), Protocol: up.Protocol(), ConnectedSince: up.ConnectedSince(), LastError: lastErr, LastErrorAt: lastErrAt}
		r.Loops = append(r.Loops, status.Liveness{Name: "uplink", Last: up.Heartbeat(), Limit: 10 * time.Second})
	}
	if cfg := g.config(); cfg != nil {
		r.Brokers = cfg.MQTT.Brokers
		r.Gateway = status.Gateway{ID: cfg.Gateway.ID, Version: g.opts.Version, Board: g.board, Config: cfg.File, Started: g.started}
	}
	g.mu.Lock()
	if g.reloaded != nil {
		rl := *g.reloaded
		r.Gateway.Reload = &rl
	}
	g.mu.Unlock()
	return r
}

// live is every device now, for people (the page's API); raw adds the
// registers behind each value.
func (g *gateway) live(raw bool) []status.Device {
	var out []status.Device
	for _, p := range g.pollers() {
		out = append(out, p.liveDevices(raw)...)
	}
	return out
}

// bufferState is the buffer as the status server sees it: while its
// storage is unavailable at start, the reason; then the buffer.
type bufferState struct {
	mu      sync.Mutex
	buf     *buffer.Buffer
	openErr error
}

func (b *bufferState) set(buf *buffer.Buffer, err error) {
	b.mu.Lock()
	b.buf, b.openErr = buf, err
	b.mu.Unlock()
}

func (b *bufferState) get() (*buffer.Buffer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf, b.openErr
}

// Err is why readings cannot be stored now; nil when they can.
func (b *bufferState) Err() error {
	buf, err := b.get()
	if buf == nil {
		if err == nil {
			err = errors.New("opening")
		}
		return err
	}
	return buf.Err()
}

// noteReload keeps a reload's outcome for people: "" when it took effect.
func (g *gateway) noteReload(err string) {
	g.mu.Lock()
	g.reloaded = &status.Reload{At: time.Now(), Err: err}
	g.mu.Unlock()
}
