package buffer

import (
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A direct log is not followed by fdatasync: O_DSYNC must be its sync.
func TestDirectLogWritesAreSynced(t *testing.T) {
	w, _, err := openWAL(filepath.Join(t.TempDir(), "buffer.db.wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if !w.direct {
		t.Skip("this file system has no O_DIRECT; the log is buffered and fdatasynced")
	}
	fd, err := rawFd(w.f)
	if err != nil {
		t.Fatal(err)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := syscall.O_DIRECT | syscall.O_DSYNC; flags&want != want {
		t.Fatalf("the log is open with flags %#o, not O_DIRECT|O_DSYNC", flags)
	}
}
