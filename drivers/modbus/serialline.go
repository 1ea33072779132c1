package modbus

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"time"

	"edgegw/drivers/port"
)

// lineTransport is a goburrow Transporter for Modbus RTU or ASCII on a
// serial line. goburrow's own serial transport mis-reads exception replies,
// guesses a delay instead of keeping the line silent, and never flushes
// stale bytes; this one reads a whole frame by its length (RTU) or its
// CR LF (ASCII) against an explicit deadline.
type lineTransport struct {
	keep    *port.Keeper
	device  string
	ascii   bool
	timeout time.Duration
	// silence is the quiet time RTU needs between frames: 3.5 characters
	// (11 bits each), at least 1.75 ms above 19200 baud.
	silence time.Duration

	port port.Port // the open port during one Send
	last time.Time
	buf  []byte
}

func newLineTransport(o Options) *lineTransport {
	char := time.Duration(11) * time.Second / time.Duration(max(o.Line.Baud, 1))
	silence := max(char*7/2, 1750*time.Microsecond)
	if o.Line.Baud <= 19200 {
		silence = char * 7 / 2
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	keep := &port.Keeper{Bus: o.Name, Device: o.Line.Device, Mode: o.Line.Mode(), Open: o.Open, Log: log}
	return &lineTransport{keep: keep, device: o.Line.Device,
		ascii: o.Mode == ASCII, timeout: o.Timeout, silence: silence, buf: make([]byte, 0, 520)}
}

// errTimeout is a request that got no (whole) reply in time.
var errTimeout = fmt.Errorf("modbus: %w", os.ErrDeadlineExceeded)

// Send writes a request ADU and returns the reply ADU.
func (t *lineTransport) Send(req []byte) ([]byte, error) {
	p, _, err := t.keep.Get()
	if err != nil {
		return nil, fmt.Errorf("port %s not available: %w", t.device, err)
	}
	t.port = p
	if wait := t.silence - time.Since(t.last); wait > 0 {
		time.Sleep(wait) // the wire's own timing, not an event
	}
	// A late reply to an earlier request must not answer this one.
	if err := t.port.ResetInputBuffer(); err != nil {
		t.keep.Failed(err)
		return nil, fmt.Errorf("flush %s: %w", t.device, err)
	}
	if _, err := t.port.Write(req); err != nil {
		t.keep.Failed(err)
		return nil, fmt.Errorf("write %s: %w", t.device, err)
	}
	reply, err := t.readFrame(req[0])
	t.last = time.Now()
	return reply, err
}

// Close closes the port.
func (t *lineTransport) Close() error { return t.keep.Close() }

// readFrame reads one reply frame before the deadline, skipping noise before
// it: bytes before the unit id (RTU) or before ':' (ASCII).
func (t *lineTransport) readFrame(unit byte) ([]byte, error) {
	deadline := time.Now().Add(t.timeout)
	b := t.buf[:0]
	var chunk [256]byte
	for {
		if n, done := t.complete(b, unit); done {
			return append([]byte(nil), b[:n]...), nil
		} else if n < 0 {
			b = b[:0] // noise: start over
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, errTimeout
		}
		if err := t.port.SetReadTimeout(left); err != nil {
			t.keep.Failed(err)
			return nil, err
		}
		n, err := t.port.Read(chunk[:])
		if err != nil {
			t.keep.Failed(err)
			return nil, fmt.Errorf("read %s: %w", t.device, err)
		}
		b = append(b, chunk[:n]...)
		if len(b) > 600 {
			b = b[len(b)-300:]
		}
		// Noise before the frame: drop what comes before its first byte,
		// the unit id (RTU) or ':' (ASCII).
		lead := unit
		if t.ascii {
			lead = ':'
		}
		if i := bytes.IndexByte(b, lead); i > 0 {
			b = b[i:]
		} else if i < 0 {
			b = b[:0]
		}
	}
}

// complete tells how long the frame at the start of b is, once b holds it
// whole; n < 0 means b starts with something that cannot be a frame.
func (t *lineTransport) complete(b []byte, unit byte) (n int, done bool) {
	if t.ascii {
		end := bytes.Index(b, []byte("\r\n"))
		return end + 2, len(b) > 0 && b[0] == ':' && end > 0
	}
	if len(b) < 2 {
		return 0, false
	}
	if b[0] != unit {
		return -1, false
	}
	fc := b[1]
	need := 0
	switch {
	case fc&0x80 != 0:
		need = 5 // unit, fc|0x80, exception code, CRC
	case fc >= 1 && fc <= 4:
		if len(b) < 3 {
			return 0, false
		}
		need = 3 + int(b[2]) + 2
	case fc == 5 || fc == 6 || fc == 15 || fc == 16:
		need = 8
	default:
		return -1, false
	}
	return need, len(b) >= need
}
