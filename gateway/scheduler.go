package gateway

import (
	"edgegw/drivers"
	"edgegw/gateway/config"
	"edgegw/gateway/status"
	"edgegw/gateway/uplink"
	"edgegw/internal/beat"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// job is outside work for a bus: a write asked for over MQTT, or a request
// of a Modbus server's client. The poller runs jobs between polls, one at a
// time, taking turns with the polls.
type job interface {
	// run does the work on the bus; conn is open (or says why not).
	run(ctx context.Context, p *poller, conn *busConn)
	// refuse answers a job that will not run.
	refuse(err error)
}

// command is a write asked for over MQTT, waiting for its bus.
type command struct {
	uplink.Command
	done func(uplink.Result)
}

func (c command) run(ctx context.Context, p *poller, conn *busConn) {
	c.done(p.write(ctx, conn.drv, conn.openErr, c))
}

// refuse answers a command that is not written.
func (c command) refuse(err error) { c.done(uplink.Result{Err: err}) }

// statsReporter is a Driver that counts its requests (Modbus does).
type statsReporter interface {
	Stats() []drivers.BusStats
}

// OpenFunc opens the driver of one bus for its devices. It is the one place
// where protocols are wired to drivers (package drivers in the binary).
type OpenFunc func(bus config.Bus, devices []config.Device, log *slog.Logger) (drivers.Driver, error)

// Appender takes encoded readings: the flash buffer.
type Appender interface {
	Append(entry []byte) error
	// AppendNow is Append for an entry to be committed at once, not
	// within the commit interval.
	AppendNow(entry []byte) error
}

// DeviceStats are a device's counters, safe for concurrent reads.
type DeviceStats struct {
	Readings   atomic.Uint64 // readings taken
	ReadErrors atomic.Uint64 // points that failed
}

// poller polls the devices of one bus on their intervals.
type poller struct {
	bus     config.Bus
	devices []config.Device
	open    OpenFunc
	out     Appender
	log     *slog.Logger
	stats   map[string]*DeviceStats
	// live is each device as its polls leave it, for people.
	live map[string]*liveDevice
	now  func() time.Time
	// jobs are outside work for this bus (commands, Modbus server
	// requests); the poller runs them between polls, as the bus carries
	// one request at a time. jobsMu and stopped make sure every submitted
	// job is answered, also at stop.
	jobs    chan job
	jobsMu  sync.Mutex
	stopped bool
	// exceptions are the report-by-exception states of the devices with
	// report = "change"; connects is the count of broker connections,
	// after each of which they send a full reading.
	exceptions map[string]*exception
	connects   func() uint64
	// observe, when set, is told every reading as polled, whole (the
	// Sparkplug edge node's births carry the newest values).
	observe func(*drivers.Reading)
	// driver is the open driver, for its statistics.
	driver atomic.Pointer[drivers.Driver]
	// beat is the loop's sign of life: it works during a poll or a write
	// and rests while it waits for the next, with no ticker.
	beat beat.Beat
	// nextPoll is when the poller polls next (Unix ns; MaxInt64: never);
	// quiet, when set, says after a poll whether no bus polls again soon:
	// its reading is then committed at once.
	nextPoll atomic.Int64
	quiet    func() bool
}

// busStats returns the open driver's request counters, if it keeps any.
func (p *poller) busStats() []drivers.BusStats {
	if d := p.driver.Load(); d != nil {
		if sr, ok := (*d).(statsReporter); ok {
			return sr.Stats()
		}
	}
	return nil
}

// busInfo is the bus's traffic, for people.
func (p *poller) busInfo() status.Bus {
	b := busTraffic(p.bus, p.busStats())
	b.Queue = len(p.jobs)
	return b
}

// busTraffic sums a bus's per-device counters.
func busTraffic(bus config.Bus, stats []drivers.BusStats) status.Bus {
	b := status.Bus{Name: bus.Name, Protocol: bus.Protocol}
	for _, s := range stats {
		b.Requests += s.Requests
		for _, n := range s.Errors {
			b.Errors += n
		}
		b.WireTime += s.ResponseTime
	}
	return b
}

// liveDevices are the poller's devices now, with the raw registers behind
// every value when raw is set.
func (p *poller) liveDevices(raw bool) []status.Device {
	var rr rawReader
	if d := p.driver.Load(); d != nil && raw {
		rr, _ = (*d).(rawReader)
	}
	out := make([]status.Device, 0, len(p.devices))
	for _, d := range p.devices {
		if l := p.live[d.Name]; l != nil {
			out = append(out, l.snapshot(rr, true))
		}
	}
	return out
}

// liveness is the poller's sign of life: its heartbeat may pause for the
// longest a round of polls may take with every request timing out on every
// try (at most 16 requests per device), plus two seconds for scheduling.
func (p *poller) liveness() status.Liveness {
	perRequest := p.bus.Timeout.D() * time.Duration(p.bus.Retries+1)
	return status.Liveness{Name: "bus " + p.bus.Name, Last: p.beat.Last(),
		Limit: 16*perRequest*time.Duration(len(p.devices)) + 2*time.Second}
}

// Run polls until ctx ends. A reading in progress when ctx ends is finished
// (with its missing points under errors) and appended, so a clean stop keeps it.
func (p *poller) Run(ctx context.Context) error {
	conn := &busConn{p: p, log: p.log.With("bus", p.bus.Name)}
	defer func() {
		if conn.drv != nil {
			_ = conn.drv.Close()
		}
		p.refuseJobs()
	}()
	due := make([]time.Time, len(p.devices))
	start := p.now()
	for i := range due {
		due[i] = start
	}
	var r drivers.Reading
	var entry []byte
	timer := time.NewTimer(0)
	defer timer.Stop()
	p.beat.Work()
	runJob := func(j job) {
		conn.ensureOpen()
		j.run(ctx, p, conn)
	}
	polled := false
	for {
		// Fair turns: after a poll, a job that waits goes before the next
		// poll, however late the polls run; while no poll is due, jobs
		// run as they come.
		if polled {
			polled = false
			select {
			case j := <-p.jobs:
				runJob(j)
				continue
			default:
			}
		}
		next, wait := 0, time.Duration(math.MaxInt64) // no devices: jobs only
		for i := range due {
			if due[i].Before(due[next]) {
				next = i
			}
		}
		if len(due) > 0 {
			wait = due[next].Sub(p.now())
		}
		switch p.idle(ctx, wait, timer, runJob) {
		case stopped:
			return nil
		case ranJob:
			continue // the next due poll may have changed
		}
		polled = true
		conn.ensureOpen()
		dev := &p.devices[next]
		var store bool
		entry, store = p.poll(ctx, conn, dev, &r, entry)
		// Keep the cadence; after an overrun (slow bus) start afresh
		// rather than fire a burst of late polls.
		iv := dev.Interval.D()
		due[next] = due[next].Add(iv)
		if now := p.now(); due[next].Before(now) {
			due[next] = now.Add(iv)
		}
		first := due[0]
		for _, d := range due {
			if d.Before(first) {
				first = d
			}
		}
		p.nextPoll.Store(first.UnixNano())
		if store {
			p.store(conn, dev.Name, entry)
		}
	}
}

// store appends a poll's entry to the buffer, to be committed at once when
// no bus polls again soon.
func (p *poller) store(conn *busConn, device string, entry []byte) {
	data := append([]byte(nil), entry...)
	var err error
	if p.quiet != nil && p.quiet() {
		err = p.out.AppendNow(data)
	} else {
		err = p.out.Append(data)
	}
	if err != nil {
		conn.log.Error("reading_not_stored", "device", device, "err", err)
	}
}

// busConn is a poller's driver, opened when first needed and again after
// it failed to open; failures are logged when they start and end.
type busConn struct {
	p        *poller
	log      *slog.Logger
	drv      drivers.Driver
	openErr  error
	failures int
}

func (c *busConn) ensureOpen() {
	if c.drv != nil {
		return
	}
	c.drv, c.openErr = c.p.open(c.p.bus, c.p.devices, c.log)
	switch {
	case c.openErr != nil:
		c.drv = nil
		if c.failures == 0 {
			c.log.Error("bus_open_failed", "err", c.openErr)
		}
		c.failures++
	case c.failures > 0:
		c.log.Info("bus_open_recovered", "failed_attempts", c.failures)
		c.failures = 0
	}
	if c.drv != nil {
		opened := c.drv // a copy: c.drv itself changes when the bus reopens
		c.p.driver.Store(&opened)
	}
}

// poll reads dev into r, counts it and returns its entry (encoded into
// entry's storage); store says whether the entry is to be stored.
func (p *poller) poll(ctx context.Context, conn *busConn, dev *config.Device, r *drivers.Reading, entry []byte) (_ []byte, store bool) {
	start := p.now()
	r.Reset(dev.Name, start)
	if conn.drv != nil {
		conn.drv.Read(ctx, dev.Name, r)
	} else {
		for _, pt := range dev.Points {
			r.AddError(pt.Name, "bus "+p.bus.Name+" is not open: "+conn.openErr.Error())
		}
	}
	if l := p.live[dev.Name]; l != nil {
		l.note(r, start, p.now().Sub(start))
	}
	st := p.stats[dev.Name]
	st.Readings.Add(1)
	st.ReadErrors.Add(uint64(len(r.Errors)))
	if p.observe != nil {
		p.observe(r)
	}
	if ex := p.exceptions[dev.Name]; ex != nil {
		full, send := ex.filter(r, p.connects())
		if !send {
			return entry, false // nothing changed: nothing to store or publish
		}
		entry = AppendReport(entry[:0], r, full)
	} else {
		entry = AppendEntry(entry[:0], r)
		if l := p.live[dev.Name]; l != nil {
			l.keep(entry[len(dev.Name)+1:]) // the JSON after the name and entrySep
		}
	}
	return entry, true
}

// idleOutcome is how an idle wait ended.
type idleOutcome int

const (
	pollDue idleOutcome = iota // the next poll is due
	ranJob                     // a job ran on the bus meanwhile
	stopped                    // ctx ended
)

// idle waits up to wait for the next poll, resting meanwhile, and runs at
// most one job that arrives meanwhile; the loop works again when it
// returns.
func (p *poller) idle(ctx context.Context, wait time.Duration, timer *time.Timer, run func(job)) idleOutcome {
	defer p.beat.Work()
	if wait <= 0 {
		if ctx.Err() != nil {
			return stopped
		}
		return pollDue
	}
	timer.Reset(wait)
	p.beat.Rest()
	select {
	case <-ctx.Done():
		return stopped
	case j := <-p.jobs:
		timer.Stop()
		p.beat.Work()
		run(j)
		return ranJob
	case <-timer.C:
		return pollDue
	}
}

// write runs one command on the bus, unless it expired on the way, and
// returns its outcome with the value read back.
func (p *poller) write(ctx context.Context, drv drivers.Driver, openErr error, cmd command) uplink.Result {
	if !cmd.Expires.IsZero() && p.now().After(cmd.Expires) {
		late := p.now().Sub(cmd.Expires).Round(time.Millisecond)
		p.log.Warn("write_expired", "bus", p.bus.Name, "device", cmd.Device, "point", cmd.Point, "late_by", late)
		return uplink.Result{Err: fmt.Errorf("expired: the command waited past its expiry (command_ttl or Message Expiry) by %s; not written", late)}
	}
	if drv == nil {
		if openErr == nil {
			openErr = errors.New("not opened yet")
		}
		return uplink.Result{Err: fmt.Errorf("bus %s is not open: %w", p.bus.Name, openErr)}
	}
	w, ok := drv.(drivers.Writer)
	if !ok {
		return uplink.Result{Err: fmt.Errorf("%s buses do not take writes", p.bus.Protocol)}
	}
	got, err := w.Write(ctx, cmd.Device, cmd.Point, cmd.Value)
	var rb *drivers.ReadBackError
	switch {
	case errors.As(err, &rb):
		p.log.Warn("write_not_confirmed", "bus", p.bus.Name, "device", cmd.Device, "point", cmd.Point, "written", rb.Written.String(), "read_back", rb.Read.String())
		return uplink.Result{Err: err, Value: rb.Read.AppendJSON(nil), Written: rb.Written.AppendJSON(nil)}
	case err != nil:
		p.log.Warn("write_failed", "bus", p.bus.Name, "device", cmd.Device, "point", cmd.Point, "err", err)
		return uplink.Result{Err: err}
	}
	p.log.Info("written", "bus", p.bus.Name, "device", cmd.Device, "point", cmd.Point, "value", got.String())
	return uplink.Result{Value: got.AppendJSON(nil)}
}

// submit queues a command for the bus, refusing it when the queue is full or
// the bus has stopped.
func (p *poller) submit(cmd command) {
	if !p.offer(cmd) {
		cmd.refuse(fmt.Errorf("bus %s is busy with earlier writes; try again", p.bus.Name))
	}
}

// offer queues a job for the bus and reports whether it was taken: false
// when the queue is full. A job offered to a stopped bus is taken and
// refused.
func (p *poller) offer(j job) bool {
	p.jobsMu.Lock()
	defer p.jobsMu.Unlock()
	if p.stopped {
		j.refuse(errStopped)
		return true
	}
	select {
	case p.jobs <- j:
		return true
	default:
		return false
	}
}

// errStopped answers jobs for a bus that stopped.
var errStopped = errors.New("the bus stopped (config reload or shutdown); try again")

// refuseJobs answers what is still queued when the poller stops.
func (p *poller) refuseJobs() {
	p.jobsMu.Lock()
	defer p.jobsMu.Unlock()
	p.stopped = true
	for {
		select {
		case j := <-p.jobs:
			j.refuse(errStopped)
		default:
			return
		}
	}
}
