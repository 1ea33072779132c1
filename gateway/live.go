package gateway

import (
	"encoding/hex"
	"hash/fnv"
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
	lastErr      drivers.PointError // the newest point error; joined into words only when asked
	lastErrAt    time.Time
	points       []livePoint // config order
	byName       map[string]int
	// static is the points' names and units as JSON, made once; layout
	// is its hash with the device's name.
	static []byte
	layout uint64
	// entry and prevEntry are the newest two readings as published (the
	// JSON encoded once for the buffer), kept for devices that publish
	// whole readings: the page then costs neither an encoding nor a copy.
	// A snapshot lends them out (entryLent, prevLent); a lent buffer is
	// never written again but left to its borrower, so that nobody
	// watching costs no allocation and somebody watching one a poll.
	entry, prevEntry    []byte
	entryLent, prevLent bool
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
	l.static = append(l.static, '[')
	for i, p := range d.Points {
		l.byName[p.Name] = len(l.points)
		l.points = append(l.points, livePoint{name: p.Name, unit: p.Unit})
		if i > 0 {
			l.static = append(l.static, ',')
		}
		l.static = append(l.static, `{"name":`...)
		l.static = drivers.AppendJSONString(l.static, p.Name)
		if p.Unit != "" {
			l.static = append(l.static, `,"unit":`...)
			l.static = drivers.AppendJSONString(l.static, p.Unit)
		}
		l.static = append(l.static, '}')
	}
	l.static = append(l.static, ']')
	h := fnv.New64a()
	h.Write([]byte(d.Name))
	h.Write(l.static)
	l.layout = h.Sum64()
	return l
}

// keep stores a whole reading as published, from its buffer entry's body
// (the JSON without its opening brace, see AppendEntry); the one before
// becomes the previous.
func (l *liveDevice) keep(body []byte) {
	l.mu.Lock()
	buf := l.prevEntry[:0]
	if l.prevLent {
		buf = make([]byte, 0, len(body)+1)
	}
	l.prevEntry, l.prevLent = l.entry, l.entryLent
	l.entry, l.entryLent = append(append(buf, '{'), body...), false
	l.mu.Unlock()
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

// pointAt is the named point, looked for at *next first; *next moves past it.
func (l *liveDevice) pointAt(next *int, name string) *livePoint {
	i := *next
	if i >= len(l.points) || l.points[i].name != name {
		p := l.point(name)
		i = l.byName[name]
		*next = i + 1
		return p
	}
	*next = i + 1
	return &l.points[i]
}

// note records a poll that began at start and took took; r is whole (before
// report by exception filters it).
func (l *liveDevice) note(r *drivers.Reading, start time.Time, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.polls++
	l.lastPoll, l.took = start, took
	next := 0 // drivers list values in config order: most need no lookup
	for _, v := range r.Values {
		p := l.pointAt(&next, v.Point)
		p.prev, p.had = p.cur, p.has
		p.cur, p.has, p.at, p.err = v, true, r.Time, ""
	}
	next = 0
	for _, e := range r.Errors {
		l.pointAt(&next, e.Point).err = e.Err
	}
	if len(r.Errors) > 0 {
		l.lastErr, l.lastErrAt = r.Errors[0], start
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
// each value. With readings, a device whose whole readings are kept gives
// them (Reading, Previous) and formats only its points in error (their
// last value); otherwise every point is formatted.
func (l *liveDevice) snapshot(raw rawReader, readings bool) status.Device {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := status.Device{Name: l.name, Bus: l.bus, Interval: l.interval, Polls: l.polls, LastPoll: l.lastPoll, PollTook: l.took,
		FailingSince: l.failingSince, LastErrorAt: l.lastErrAt, PointsJSON: l.static, Layout: l.layout}
	if l.lastErr.Point != "" {
		d.LastError = l.lastErr.Point + ": " + l.lastErr.Err
	}
	whole := readings && l.entry != nil
	if whole {
		d.Reading, d.Previous = l.entry, l.prevEntry // read-only from here on
		l.entryLent, l.prevLent = true, true
	} else {
		d.Points = make([]status.Point, 0, len(l.points))
	}
	var buf []byte
	for i := range l.points {
		p := &l.points[i]
		if whole && (p.err == "" || !p.has) && raw == nil {
			continue // in the reading
		}
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
