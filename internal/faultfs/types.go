// Package faultfs mounts a directory through FUSE so that a test sees, in
// order, every write, sync, truncation, rename and removal a program makes
// to its files, and can make any of them fail with an errno. It sees what a
// disk would see: the writes bbolt makes through its own file handles as
// much as the program's own, with nothing of the page cache in between
// (FUSE passes each write through). crash.go builds from the record the
// states a power cut could leave on disk.
//
// The file system is served by another process (the test binary run again,
// see ServeIfAsked): a program that maps a file of the mount into memory, as
// bbolt does, takes page faults that only the server can answer, and Go's
// stop-the-world waits for a thread stuck in one: served in-process, that
// deadlocks. Mount needs root and /dev/fuse; where it cannot mount, the test
// is skipped with the reason. Files live flat in the mount's root.
package faultfs

import "syscall"

// Kind is the kind of a recorded operation.
type Kind int

// The operations recorded.
const (
	Create Kind = iota
	Write
	Sync
	Truncate
	Rename
	Remove
	SyncDir
	Mark
	Read // never recorded; only failed
)

func (k Kind) String() string {
	return [...]string{"create", "write", "sync", "truncate", "rename", "remove", "syncdir", "mark", "read"}[k]
}

// Op is one operation that succeeded, in the order the file system got it.
type Op struct {
	Kind  Kind
	Ino   uint64 // the file: stays across renames
	Name  string // its name when the op came (Rename: the old name)
	To    string // Rename: the new name
	Off   int64  // Write
	Data  []byte // Write
	Size  int64  // Truncate
	Label string // Mark
}

// Fault makes operations fail: the first Skip operations of Kind on a file
// whose name ends with Name pass, the next Times fail with Errno (Times 0:
// every one from then on).
type Fault struct {
	Kind  Kind
	Name  string
	Skip  int
	Times int
	Errno syscall.Errno
}
