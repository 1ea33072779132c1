package testpty

import (
	"sync/atomic"
	"time"

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
