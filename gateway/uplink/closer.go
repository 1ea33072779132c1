package uplink

import (
	"sync"
	"time"
)

// A broker may close the connection on a packet larger than it takes
// without having said its limit: MQTT 3.1.1 has no Maximum Packet Size
// (Mosquitto's max_packet_size closes a 3.1.1 client), and an MQTT 5
// broker need not announce one. The message would be first again on every
// connection, and nothing would ever be published. So the uplink learns a
// limit per address: when the connection is lost three times in a row just
// after the same message was written and before it was acknowledged, and
// the message is clearly larger than anything the address has acknowledged, the
// address's maximum packet size is taken to be below it: its size less one
// for a single reading, half its size for a batch (so batches are cut in
// halves, never losing a reading). Once an address has such a limit, one
// loss of that kind lowers it again. The existing rules then apply: a batch
// is cut smaller, a single reading that cannot fit is dropped and counted
// too_large.

// Three losses: one could be a restart, two a coincidence.
const closesToLearn = 3

// clearlyLarger is the size a message must pass to be suspected when the
// address acknowledged acked bytes: readings of one device differ by a few
// bytes, and a connection lost for another reason (a client-id clash)
// must not make one of them look too large.
func clearlyLarger(acked int) int { return acked + max(acked/4, 256) }

// closeWindow is how soon after the write a loss counts: a broker refusing
// a packet closes on reading it.
const closeWindow = 2 * time.Second

// outcomes is what the publishes of one connection showed about sizes.
type outcomes struct {
	mu       sync.Mutex
	ackedMax int                // the largest packet acknowledged
	pending  map[uint64]sentMsg // written and not acknowledged, by first seq
}

// sentMsg is a message written on the connection.
type sentMsg struct {
	size, readings int
	at             time.Time
}

// sending records a message of readings records from seq on, size bytes,
// about to be written.
func (o *outcomes) sending(seq uint64, size, readings int) {
	o.mu.Lock()
	if o.pending == nil {
		o.pending = map[uint64]sentMsg{}
	}
	o.pending[seq] = sentMsg{size: size, readings: readings, at: time.Now()}
	o.mu.Unlock()
}

// done records the end of the message from seq: acknowledged, or not.
func (o *outcomes) done(seq uint64, acked bool) {
	o.mu.Lock()
	if acked {
		o.ackedMax = max(o.ackedMax, o.pending[seq].size)
		delete(o.pending, seq)
	}
	o.mu.Unlock()
}

// suspect is the oldest message unacknowledged when the connection was
// lost at lostAt, if it was written shortly before: what the broker may
// have closed the connection on.
func (o *outcomes) suspect(lostAt time.Time) (seq uint64, m sentMsg, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for s, p := range o.pending {
		if !ok || s < seq {
			seq, m, ok = s, p, true
		}
	}
	return seq, m, ok && lostAt.Sub(m.at) < closeWindow
}

// closes follows, across connections, the message that keeps getting them
// closed. Only the publish loop touches it.
type closes struct {
	addr  string
	seq   uint64
	times int
	// ackedMax is the largest packet each address acknowledged.
	ackedMax map[string]int
}

// learnLimit looks at what connection c, now lost, showed: after
// closesToLearn losses in a row on the same message, larger than anything
// the address took, the address's limit is set below it.
func (u *Uplink) learnLimit(c *connection) {
	cl := &u.closes
	if cl.ackedMax == nil {
		cl.ackedMax = map[string]int{}
	}
	o := &c.outcomes
	o.mu.Lock()
	acked := o.ackedMax
	o.mu.Unlock()
	seq, m, ok := o.suspect(c.lostAt)
	size, readings := m.size, m.readings
	addr := c.cand.addr
	cl.ackedMax[addr] = max(cl.ackedMax[addr], acked)
	if !ok || c.left.Load() || size <= clearlyLarger(cl.ackedMax[addr]) {
		*cl = closes{ackedMax: cl.ackedMax}
		return
	}
	if cl.addr == addr && cl.seq == seq {
		cl.times++
	} else {
		cl.addr, cl.seq, cl.times = addr, seq, 1
	}
	known := u.learnedLimit(addr) > 0
	if cl.times < closesToLearn && !known {
		return
	}
	limit := uint32(size - 1)
	if readings > 1 {
		limit = uint32(max(size/2, cl.ackedMax[addr]))
	}
	u.mu.Lock()
	if old, ok := u.learned[addr]; !ok || limit < old {
		u.learned[addr] = limit
	}
	u.mu.Unlock()
	u.log.Warn("mqtt_packet_limit_learned", "broker", c.url, "address", addr, "seq", seq, "size", size, "limit", limit,
		"largest_acknowledged", cl.ackedMax[addr], "protocol", c.proto.String(),
		"hint", "the broker closed the connection on this message and took smaller ones: its maximum packet size is taken to be below it; larger batches are cut, larger readings dropped and counted too_large")
	*cl = closes{ackedMax: cl.ackedMax}
}

// learnedLimit is the packet limit learned for addr, 0 when none.
func (u *Uplink) learnedLimit(addr string) uint32 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.learned[addr]
}
