package uplink

import (
	"time"
)

// Rate caps the uplink: at most Bytes (MQTT packets) or Readings a second,
// on average; both 0 is no cap.
type Rate struct {
	Bytes    float64
	Readings float64
}

func (r Rate) on() bool { return r.Bytes > 0 || r.Readings > 0 }

// pacer keeps the uplink within a Rate. Every message sent is charged;
// only the backlog waits for the charges to be paid, so live readings go
// at once and the backlog gets what they leave of the rate. It is a
// virtual clock (GCRA): next is when the messages sent so far will have
// been paid for, and the backlog may send while next is at most burst
// ahead of now. Only the publishing goroutine uses it.
type pacer struct {
	rate  Rate
	burst time.Duration
	next  time.Time
	now   func() time.Time
}

// paceBurst is how far ahead of the rate the uplink may run: a second's
// worth, so a cap of 20 KiB/s sends a 2 KiB reading at once.
const paceBurst = time.Second

func newPacer(r Rate) *pacer { return &pacer{rate: r, burst: paceBurst, now: time.Now} }

// charge records that a message of size bytes on the wire, holding
// readings records, was sent.
func (p *pacer) charge(size, readings int) {
	var cost time.Duration
	if p.rate.Bytes > 0 {
		cost = time.Duration(float64(size) / p.rate.Bytes * float64(time.Second))
	} else {
		cost = time.Duration(float64(readings) / p.rate.Readings * float64(time.Second))
	}
	if now := p.now(); p.next.Before(now) {
		p.next = now // idle time earns nothing beyond the burst
	}
	p.next = p.next.Add(cost)
}

// delay is how long the backlog must wait before its next message.
func (p *pacer) delay() time.Duration {
	return max(0, p.next.Sub(p.now().Add(p.burst)))
}
