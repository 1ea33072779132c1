package gateway

import (
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"edgegw/drivers"
	"edgegw/gateway/config"
	"edgegw/gateway/status"
)

// liveDevice is a device as its polls leave it, for people: the
// commissioning page, /api/v1/status and `edgegw poll` read it (status.Device).
// A poll stores its values as they are (no formatting): reading it is what
// costs, and only when someone asks.
type liveDevice struct {
	name, bus string
	interval  time.Duration

	mu           sync.Mutex
	polls        uint64
	lastPoll     time.Time
	took         time.Duration
	failingSince time.Time
	lastErr      string
	lastErrAt    time.Time
	points       []livePoint // config order
	byName       map[string]int
}

type livePoint struct {
	name, unit string
	cur, prev  drivers.Value
	has, had   bool // cur and prev hold values
	at         time.Time
	err        string
}

func newLiveDevice(d config.Device) *liveDevice {
	l := &liveDevice{name: d.Name, bus: d.Bus, interval: d.Interval.D(), byName: make(map[string]int, len(d.Points))}
	for _, p := range d.Points {
		l.byName[p.Name] = len(l.points)
		l.points = append(l.points, livePoint{name: p.Name, unit: p.Unit})
	}
	return l
}

// point is the named point's state, added for a value the config does not
// list (a driver's extra value).
func (l *liveDevice) point(name string) *livePoint {
	i, ok := l.byName[name]
	if !ok {
		i = len(l.points)
		l.byName[name] = i
		l.points = append(l.points, livePoint{name: name})
	}
	return &l.points[i]
}

// note records a poll that began at start and took took; r is whole (before
// report by exception filters it).
func (l *liveDevice) note(r *drivers.Reading, start time.Time, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.polls++
	l.lastPoll, l.took = start, took
	for _, v := range r.Values {
		p := l.point(v.Point)
		p.prev, p.had = p.cur, p.has
		p.cur, p.has, p.at, p.err = v, true, r.Time, ""
	}
	for _, e := range r.Errors {
		l.point(e.Point).err = e.Err
	}
	if len(r.Errors) > 0 {
		l.lastErr, l.lastErrAt = r.Errors[0].Point+": "+r.Errors[0].Err, start
	}
	switch {
	case len(r.Values) > 0 || len(r.Errors) == 0:
		l.failingSince = time.Time{}
	case l.failingSince.IsZero():
		l.failingSince = start
	}
}

// rawReader is a driver that can show the bytes behind a point (Modbus).
type rawReader interface {
	Raw(out []byte, device, point string) ([]byte, bool)
}

// snapshot is the device now; raw, when not nil, shows the bytes behind
// each value.
func (l *liveDevice) snapshot(raw rawReader) status.Device {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := status.Device{Name: l.name, Bus: l.bus, Interval: l.interval, Polls: l.polls, LastPoll: l.lastPoll, PollTook: l.took,
		FailingSince: l.failingSince, LastError: l.lastErr, LastErrorAt: l.lastErrAt, Points: make([]status.Point, 0, len(l.points))}
	var buf []byte
	for i := range l.points {
		p := &l.points[i]
		sp := status.Point{Name: p.name, Unit: p.unit, At: p.at, Error: p.err}
		if p.has {
			sp.Value = string(p.cur.AppendJSON(buf[:0]))
		}
		if p.had {
			sp.Previous = string(p.prev.AppendJSON(buf[:0]))
		}
		if raw != nil {
			if b, ok := raw.Raw(buf[:0], l.name, p.name); ok {
				sp.Raw = hexRegisters(b)
			}
		}
		d.Points = append(d.Points, sp)
	}
	return d
}

// hexRegisters spells bytes as hex, a space between registers (two bytes).
func hexRegisters(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); i += 2 {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(hex.EncodeToString(b[i:min(i+2, len(b))]))
	}
	return sb.String()
}
