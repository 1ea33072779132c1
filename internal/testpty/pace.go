package testpty

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.bug.st/serial"

	"edgegw/drivers/port"
)

// Pace copies src to dst at one byte per character time, as a serial line
// at a baud rate would: a pty alone moves bytes instantly. A byte is passed
// on once its last bit would have arrived; after a late wake-up (timers are
// coarser than a character at 9600 baud) the bytes due are passed together.
// moved, when not nil, counts the bytes passed (the line's busy time is
// moved × char). It returns when stop closes or src fails.
func Pace(src, dst port.Port, char time.Duration, moved *atomic.Int64, stop <-chan struct{}) {
	buf := make([]byte, 256)
	var lineFree time.Time
	for {
		select {
		case <-stop:
			return
		default:
		}
		_ = src.SetReadTimeout(20 * time.Millisecond)
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if n == 0 {
			continue
		}
		start := time.Now()
		if lineFree.After(start) {
			start = lineFree
		}
		for i := 0; i < n; {
			due := min(n, int(time.Since(start)/char))
			if due > i {
				_, _ = dst.Write(buf[i:due])
				i = due
				continue
			}
			time.Sleep(time.Until(start.Add(time.Duration(i+1) * char))) // the line's own speed
		}
		if moved != nil {
			moved.Add(int64(n))
		}
		lineFree = start.Add(time.Duration(n) * char)
	}
}

// PacedLine is a serial line whose bytes cross at one per char, as on a
// wire at a baud rate: two pty pairs with a relay between them pacing each
// way (Pace). moved, when not nil, counts the bytes relayed. It returns the
// line's two ends; the relay stops when the test ends.
func PacedLine(tb testing.TB, char time.Duration, moved *atomic.Int64) (a, b string) {
	tb.Helper()
	a, relayA := Pair(tb)
	relayB, b := Pair(tb)
	ra, rb := Open(tb, relayA), Open(tb, relayB)
	stop := make(chan struct{})
	var relays sync.WaitGroup
	relays.Add(2)
	go func() { defer relays.Done(); Pace(ra, rb, char, moved, stop) }()
	go func() { defer relays.Done(); Pace(rb, ra, char, moved, stop) }()
	tb.Cleanup(func() { close(stop); relays.Wait() }) // before the ports close
	return a, b
}

// Open opens a pty end as a serial port (a pty takes any line settings);
// it is closed when the test ends.
func Open(tb testing.TB, path string) port.Port {
	tb.Helper()
	p, err := port.Open(path, &serial.Mode{BaudRate: 115200})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}
