// Package testpty makes real serial lines for tests: pairs of ptys joined by
// socat, as a null-modem cable joins two serial ports. Tests skip, saying
// why, when socat is missing (make test installs it).
package testpty

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Pair returns the two ends of a new serial line; socat is stopped when the
// test ends.
func Pair(t testing.TB) (a, b string) {
	t.Helper()
	socat, err := exec.LookPath("socat")
	if err != nil {
		t.Skip("socat is not installed: run `make test` as root, or apt-get install socat")
	}
	dir := t.TempDir()
	a, b = filepath.Join(dir, "a"), filepath.Join(dir, "b")
	cmd := exec.Command(socat, "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, errA := os.Stat(a)
		_, errB := os.Stat(b)
		if errA == nil && errB == nil {
			return a, b
		}
		if time.Now().After(deadline) {
			t.Fatalf("socat made no pty pair: %v %v", errA, errB)
		}
		time.Sleep(10 * time.Millisecond) // polling for socat's links
	}
}
