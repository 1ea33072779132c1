package modbus

import (
	"sync"
	"time"
)

// Image is the raw register image of one bus: what each unit's registers
// and bits last read as, exactly as the device sent them, and when. The
// bus's goroutine fills it as its read requests are answered; a Modbus
// server answers other masters from it without touching the bus. It keeps
// each request's reply whole (a poll reads the same spans every time, so a
// store reuses the span's memory), at most maxSpans per unit and table.
// Safe for concurrent use.
type Image struct {
	mu    sync.RWMutex
	spans map[unitTable][]span
}

type unitTable struct {
	unit  byte
	table Table
}

// span is one reply: registers (two bytes each, big-endian) or bits (one
// byte each, 0 or 1) from start, read at at.
type span struct {
	start uint16
	n     int
	data  []byte
	at    time.Time
}

func (s *span) covers(addr uint16) bool { return addr >= s.start && int(addr) < int(s.start)+s.n }

// maxSpans bounds the spans kept per unit and table: the oldest goes.
const maxSpans = 64

// NewImage returns an empty image.
func NewImage() *Image { return &Image{spans: map[unitTable][]span{}} }

// Store records a read reply's data (an FC1–4 reply after its byte count):
// count registers or count bits (packed eight to a byte, least significant
// first) from start. Data shorter than count needs is not stored.
func (im *Image) Store(unit byte, table Table, start, count uint16, data []byte, at time.Time) {
	n := int(count)
	if table.bits() && len(data) < (n+7)/8 || !table.bits() && len(data) < 2*n || n == 0 {
		return
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	key := unitTable{unit, table}
	spans := im.spans[key]
	i := 0
	for i < len(spans) && (spans[i].start != start || spans[i].n != n) {
		i++
	}
	if i == len(spans) {
		if len(spans) == maxSpans {
			oldest := 0
			for j := range spans {
				if spans[j].at.Before(spans[oldest].at) {
					oldest = j
				}
			}
			spans = append(spans[:oldest], spans[oldest+1:]...)
		}
		i = len(spans)
		spans = append(spans, span{start: start, n: n})
	}
	s := &spans[i]
	s.at = at
	if table.bits() {
		s.data = s.data[:0]
		for b := range n {
			s.data = append(s.data, data[b/8]>>(b%8)&1)
		}
	} else {
		s.data = append(s.data[:0], data[:2*n]...)
	}
	im.spans[key] = spans
}

// Fresh appends to out the reply data of a read of count registers or bits
// from start (registers two bytes each; bits packed), if every one of them
// was read at or after since, each from the newest reply that holds it;
// ok is false, and out unchanged, when any is older or was never read.
func (im *Image) Fresh(out []byte, unit byte, table Table, start, count uint16, since time.Time) (_ []byte, ok bool) {
	im.mu.RLock()
	defer im.mu.RUnlock()
	spans := im.spans[unitTable{unit, table}]
	n := len(out)
	if table.bits() {
		for range (int(count) + 7) / 8 {
			out = append(out, 0)
		}
	}
	for i := range int(count) {
		addr := start + uint16(i)
		var best *span
		for j := range spans {
			if s := &spans[j]; s.covers(addr) && !s.at.Before(since) && (best == nil || s.at.After(best.at)) {
				best = s
			}
		}
		if best == nil {
			return out[:n], false
		}
		k := int(addr - best.start)
		if table.bits() {
			out[n+i/8] |= best.data[k] << (i % 8)
		} else {
			out = append(out, best.data[2*k], best.data[2*k+1])
		}
	}
	return out, true
}

// Drop forgets every reply that holds any of count registers or bits from
// start: a write changed them.
func (im *Image) Drop(unit byte, table Table, start, count uint16) {
	im.mu.Lock()
	defer im.mu.Unlock()
	key := unitTable{unit, table}
	kept := im.spans[key][:0]
	for _, s := range im.spans[key] {
		if int(s.start)+s.n <= int(start) || int(s.start) >= int(start)+int(count) {
			kept = append(kept, s)
		}
	}
	im.spans[key] = kept
}

// Raw appends the registers (two bytes each) or the bit (one byte, 0 or 1)
// that the named point was last read from, as the device sent them; ok is
// false when it was never read. For commissioning: the bytes behind a value.
// Safe from any goroutine.
func (b *Bus) Raw(out []byte, device, point string) (_ []byte, ok bool) {
	d, found := b.devices[device]
	if !found {
		return out, false
	}
	for i := range d.points {
		p := &d.points[i]
		if p.Name != point {
			continue
		}
		n := len(out)
		out, ok = b.image.Fresh(out, d.unit, p.Table, p.Address, uint16(p.Width()), time.Time{})
		if ok && p.Table.bits() {
			out[n] &= 1 // one bit, not its packed byte
		}
		return out, ok
	}
	return out, false
}
