package buffer

import (
	"os"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// releaseMapped drops from the process's resident memory the pages of db's
// memory map (a read-only file mapping: they stay in the page cache, and a
// later read faults them back). The caller keeps bbolt from remapping
// meanwhile (no write transaction).
func releaseMapped(db *bolt.DB, path string) {
	size := fileSize(path)
	if size <= 0 {
		return
	}
	page := int64(os.Getpagesize())
	size = (size + page - 1) / page * page
	// The mapping's address as bbolt reports it, straight to the system
	// call: no pointer is made of it.
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, db.Info().Data, uintptr(size), unix.MADV_DONTNEED)
}
