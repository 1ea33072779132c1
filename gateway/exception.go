package gateway

import (
	"math"
	"time"

	"edgegw/drivers"
	"edgegw/gateway/config"
)

// exception is report by exception for one device (report = "change"): it
// keeps what the consumer was last told of each point and lets a poll's
// reading through with only what changed beyond its deadband, plus the
// errors that appeared or changed. A full reading goes out first, every
// full_every, and after each (re)connect to a broker, so that a consumer
// who joins late or missed something learns every value.
type exception struct {
	fullEvery time.Duration
	points    map[string]*pointState
	lastFull  time.Time
	// conn is the uplink's connection count when the last full reading
	// was taken; a different count means a connect happened since.
	conn uint64
	full bool // the next reading is full
}

// pointState is what the consumer knows of one point.
type pointState struct {
	deadband, percent float64 // report changes of at least max(deadband, percent% of the last value)
	known             bool    // a value was reported since the last error
	last              drivers.Value
	err               string // the error reported, "" when none
}

func newException(dev config.Device) *exception {
	e := &exception{fullEvery: dev.FullEvery.D(), points: make(map[string]*pointState, len(dev.Points)), full: true}
	for _, p := range dev.Points {
		e.points[p.Name] = &pointState{deadband: p.Deadband, percent: p.DeadbandPercent}
	}
	return e
}

// filter reduces r to what the consumer must be told; conn is the uplink's
// connection count now. It reports whether the reading is full and
// whether there is anything to publish at all.
func (e *exception) filter(r *drivers.Reading, conn uint64) (full, send bool) {
	full = e.full || conn != e.conn || r.Time.Sub(e.lastFull) >= e.fullEvery || r.Time.Before(e.lastFull)
	if full {
		e.full, e.conn, e.lastFull = false, conn, r.Time
	}
	values := r.Values[:0]
	for _, v := range r.Values {
		ps := e.state(v.Point)
		if full || ps.changed(v) {
			values = append(values, v)
			ps.known, ps.last, ps.err = true, v, ""
		}
	}
	errs := r.Errors[:0]
	for _, pe := range r.Errors {
		ps := e.state(pe.Point)
		if full || ps.err != pe.Err {
			errs = append(errs, pe)
			ps.known, ps.err = false, pe.Err
		}
	}
	r.Values, r.Errors = values, errs
	return full, full || len(values) > 0 || len(errs) > 0
}

// state is the point's state, made for a point the config does not list
// (a driver's extra value): no deadband, any change reported.
func (e *exception) state(name string) *pointState {
	ps, ok := e.points[name]
	if !ok {
		ps = &pointState{}
		e.points[name] = ps
	}
	return ps
}

// changed reports whether v must be reported: booleans, strings and
// integers without a deadband on any change, numbers when they moved by
// at least the deadband (a change equal to it is reported), and any value
// after an error.
func (ps *pointState) changed(v drivers.Value) bool {
	if !ps.known || ps.err != "" || v.Kind != ps.last.Kind {
		return true
	}
	switch v.Kind {
	case drivers.KindBool:
		return v.B != ps.last.B
	case drivers.KindString:
		return v.S != ps.last.S
	case drivers.KindInt:
		if v.I == ps.last.I {
			return false
		}
	case drivers.KindUint:
		if v.U == ps.last.U {
			return false
		}
	default:
		if v.F == ps.last.F {
			return false
		}
	}
	if ps.deadband == 0 && ps.percent == 0 {
		return true
	}
	before := number(ps.last)
	threshold := math.Max(ps.deadband, ps.percent/100*math.Abs(before))
	// A change equal to the deadband is reported; the tolerance absorbs the
	// binary noise of scaling (2306*0.1 - 2301*0.1 is 0.49999999999997).
	return math.Abs(number(v)-before) >= threshold*(1-1e-9)
}

// number is a numeric value as a float64 (exact below 2^53, enough to
// compare against a deadband).
func number(v drivers.Value) float64 {
	switch v.Kind {
	case drivers.KindInt:
		return float64(v.I)
	case drivers.KindUint:
		return float64(v.U)
	}
	return v.F
}
