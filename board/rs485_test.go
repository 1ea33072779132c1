package board

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A pty (what tests have for a serial port) has no RS-485 mode: the refusal
// must come back as a clear error, not a crash or a silent success.
func TestEnableRS485RefusedClearly(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skip("no /dev/ptmx")
	}
	defer ptmx.Close()
	err = EnableRS485("/dev/ptmx")
	if err == nil || !strings.Contains(err.Error(), "no kernel RS-485 support") {
		t.Fatalf("pty: %v", err)
	}
	if err := EnableRS485(filepath.Join(t.TempDir(), "nothing")); err == nil {
		t.Fatal("a missing device succeeded")
	}
}
