package modbus

import (
	"testing"
	"time"
)

// FuzzLineFrame feeds the reply framer arbitrary line bytes: it must never
// panic nor claim a frame longer than what it holds.
func FuzzLineFrame(f *testing.F) {
	f.Add([]byte{1, 3, 2, 0, 42, 0x39, 0x84}, byte(1), false)
	f.Add([]byte{1, 0x83, 2, 0xc0, 0xf1}, byte(1), false)
	f.Add([]byte(":010302002AD0\r\n"), byte(':'), true)
	f.Add([]byte{0, 0xff, 1, 16, 0, 1, 0, 2}, byte(1), false)
	f.Fuzz(func(t *testing.T, b []byte, unit byte, ascii bool) {
		lt := &lineTransport{ascii: ascii, timeout: time.Millisecond}
		n, done := lt.complete(b, unit)
		if done && (n <= 0 || n > len(b)) {
			t.Fatalf("complete(%x) = %d, true", b, n)
		}
	})
}
