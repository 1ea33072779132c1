package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"edgegw/drivers/modbus"
	mbserver "edgegw/drivers/modbus/server"
	"edgegw/gateway/config"
)

// transactor is a Driver that carries raw Modbus requests (modbus.Bus).
type transactor interface {
	Transact(ctx context.Context, unit byte, pdu []byte) ([]byte, error)
	Image() *modbus.Image
}

// passRequest is a Modbus server client's request, waiting for its bus.
type passRequest struct {
	ctx    context.Context // the client's: a request whose client went is not sent
	unit   byte
	pdu    []byte
	queued time.Time
	done   chan passResult // buffered: run and refuse never block
}

type passResult struct {
	reply  []byte
	waited time.Duration
	err    error
}

func (r *passRequest) run(ctx context.Context, p *poller, conn *busConn) {
	waited := p.now().Sub(r.queued)
	if err := r.ctx.Err(); err != nil {
		r.done <- passResult{waited: waited, err: err}
		return
	}
	t, ok := conn.drv.(transactor)
	if !ok {
		err := conn.openErr
		if err == nil {
			err = fmt.Errorf("%s buses carry no Modbus requests", p.bus.Protocol)
		}
		r.done <- passResult{waited: waited, err: err}
		return
	}
	reply, err := t.Transact(ctx, r.unit, r.pdu)
	r.done <- passResult{reply: reply, waited: waited, err: err}
}

func (r *passRequest) refuse(err error) { r.done <- passResult{err: err} }

// serverBus is a poller as its Modbus server sees it (mbserver.Bus).
type serverBus struct{ p *poller }

func (b serverBus) Do(ctx context.Context, unit byte, pdu []byte) ([]byte, time.Duration, error) {
	r := &passRequest{ctx: ctx, unit: unit, pdu: pdu, queued: b.p.now(), done: make(chan passResult, 1)}
	if !b.p.offer(r) {
		return nil, 0, mbserver.ErrBusy
	}
	select {
	case res := <-r.done:
		return res.reply, res.waited, res.err
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

func (b serverBus) Fresh(out []byte, unit byte, table modbus.Table, start, count uint16, since time.Time) ([]byte, bool) {
	d := b.p.driver.Load()
	if d == nil {
		return out, false
	}
	t, ok := (*d).(transactor)
	if !ok {
		return out, false
	}
	return t.Image().Fresh(out, unit, table, start, count, since)
}

// perClient is how many requests one client may have waiting at once.
const perClient = 4

// newModbusServers prepares the [[modbus_server]]s of cfg in front of
// their buses' pollers.
func newModbusServers(cfg *config.Config, pollers []*poller, log *slog.Logger) ([]*mbserver.Server, error) {
	var out []*mbserver.Server
	for i := range cfg.ModbusServers {
		m := &cfg.ModbusServers[i]
		var p *poller
		for _, q := range pollers {
			if q.bus.Name == m.Bus {
				p = q
			}
		}
		if p == nil {
			return nil, errors.New("modbus_server: no poller for bus " + m.Bus) // validation prevents it
		}
		out = append(out, mbserver.New(mbserver.Config{
			Name: m.Listen, Listen: m.Listen, Units: cfg.ServedUnits(m), Cache: m.Cache.D(), Writes: m.Writes,
			MaxClients: m.MaxClients, PerClient: perClient, Log: log.With("bus", m.Bus),
		}, serverBus{p}))
	}
	return out, nil
}

// jobQueue is the capacity of a bus's job queue: the commands it always
// had room for, and every request its Modbus servers' clients may have
// waiting, so that a flood is answered "busy" by the server, per client,
// and never crowds out the commands.
func jobQueue(cfg *config.Config, bus string) int {
	n := 16
	for _, m := range cfg.ModbusServers {
		if m.Bus == bus {
			n += m.MaxClients * perClient
		}
	}
	return n
}
