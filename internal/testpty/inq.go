package testpty

import (
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// WaitInput waits until at least n bytes wait to be read at the pty end
// path: bytes written at the other end cross socat on their own time, and
// a test that means "these came before the next request" must wait for them.
func WaitInput(t testing.TB, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		queued, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCINQ)
		if err != nil {
			t.Fatalf("TIOCINQ on %s: %v", path, err)
		}
		if queued >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bytes arrived at %s", queued, n, path)
		}
		time.Sleep(2 * time.Millisecond) // polling a queue length: no event to wait on
	}
}
