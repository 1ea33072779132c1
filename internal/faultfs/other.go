//go:build !linux || arm || 386 || mips || mipsle

package faultfs

import "testing"

// ServeIfAsked does nothing here: go-fuse does not build for 32-bit targets.
func ServeIfAsked() {}

// FS is not available here.
type FS struct{ Dir, Backing string }

// Mount skips the test: go-fuse does not build for 32-bit targets (the
// 64-bit run of make test covers what needs FUSE).
func Mount(t testing.TB) *FS {
	t.Skip("faultfs: FUSE tests run on 64-bit targets only")
	return nil
}

func (f *FS) Record(on bool)    {}
func (f *FS) Ops() []Op         { return nil }
func (f *FS) Mark(label string) {}
func (f *FS) Fail(fault Fault)  {}
func (f *FS) Heal() int         { return 0 }
