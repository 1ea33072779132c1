package buffer

import (
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openDirect opens path for writes that bypass the page cache and are
// synced before they return (O_DSYNC): one system call per commit instead
// of a write and an fdatasync, so the Go runtime hands its processor off
// (and wakes its monitor) once, not twice. File systems without O_DIRECT
// (tmpfs) refuse, and the log stays buffered.
func openDirect(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT|syscall.O_DSYNC, 0)
}

// dropCache evicts f's pages from the page cache, so that later small
// buffered writes do not land in large folios made by earlier big ones.
func dropCache(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// alignedBuffer returns n bytes starting at a blockSize boundary, as O_DIRECT needs.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+blockSize)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (blockSize - 1))
	if off != 0 {
		off = blockSize - off
	}
	return b[off : off+n : off+n]
}
