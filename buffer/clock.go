package buffer

import "time"

// bufClock is the buffer's own time, in nanoseconds, by which the age of a
// record is judged. It advances with Options.Now while the buffer is open
// (time.Now's monotonic reading, which an NTP step does not move) and
// stands still while it is closed; every log batch and checkpoint keeps it,
// and the next Open goes on from there. So a Pi without a real-time clock
// that was off for a month, and whose clock NTP then steps, does not find
// its backlog a month old: MaxAge counts time the gateway was running.
type bufClock struct {
	base  int64 // the clock at start
	start time.Time
	now   func() time.Time
}

// startClock starts the clock at base, or, for a new buffer (base 0), at
// the wall time: stamps then read as times for whoever looks at a file.
func startClock(base int64, now func() time.Time) bufClock {
	t := now()
	if base == 0 {
		base = t.UnixNano()
	}
	return bufClock{base: base, start: t, now: now}
}

// stamp is the clock now.
func (c *bufClock) stamp() int64 { return c.base + int64(c.now().Sub(c.start)) }
