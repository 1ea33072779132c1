//go:build linux && !(arm || 386 || mips || mipsle)

package faultfs

import (
	"context"
	"encoding/gob"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// server is the state of the serving process.
type server struct {
	mu        sync.Mutex
	recording bool
	ops       []Op
	faults    []*Fault
	failed    int
}

// serve mounts backing at dir and serves it until stdin closes, answering
// the test's requests on stdin and stdout.
func serve(dir, backing string) error {
	srv := &server{}
	root := &fs.LoopbackRoot{Path: backing}
	rn := &node{LoopbackNode: &fs.LoopbackNode{RootData: root}, fs: srv}
	root.RootNode = rn
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return err
	}
	root.Dev = uint64(st.Dev)
	zero := time.Duration(0)
	fsrv, err := fs.Mount(dir, rn, &fs.Options{
		MountOptions: fuse.MountOptions{DirectMount: true, FsName: "faultfs", DisableXAttrs: true},
		// No attribute or entry cache: every operation reaches us.
		AttrTimeout: &zero, EntryTimeout: &zero, NegativeTimeout: &zero,
	})
	enc, dec := gob.NewEncoder(os.Stdout), gob.NewDecoder(os.Stdin)
	if err != nil {
		return enc.Encode(response{Err: err.Error()})
	}
	defer fsrv.Unmount()
	if err := enc.Encode(response{}); err != nil {
		return err
	}
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			return nil // the test is done
		}
		var resp response
		srv.mu.Lock()
		switch req.Cmd {
		case "record":
			srv.recording = req.On
		case "mark":
			if srv.recording {
				srv.ops = append(srv.ops, Op{Kind: Mark, Label: req.Label})
			}
		case "ops":
			resp.Ops = srv.ops
		case "fail":
			f := req.Fault
			srv.faults = append(srv.faults, &f)
		case "heal":
			srv.faults, resp.Failed, srv.failed = nil, srv.failed, 0
		}
		srv.mu.Unlock()
		if req.Cmd == "unmount" {
			resp.Err = fmt.Sprint(unmount(fsrv))
		}
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
}

func unmount(fsrv *fuse.Server) error {
	var err error
	for range 100 {
		if err = fsrv.Unmount(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond) // a file still closing
	}
	return err
}

type request struct {
	Cmd   string
	On    bool
	Label string
	Fault Fault
}

type response struct {
	Ops    []Op
	Failed int
	Err    string
}

// serveEnv names the directories a re-executed test binary serves.
const serveEnv = "EDGEGW_FAULTFS_SERVE"

// ServeIfAsked serves a mount and exits when this process was started by
// Mount to do so. A test package that mounts calls it first in TestMain.
func ServeIfAsked() {
	v := os.Getenv(serveEnv)
	if v == "" {
		return
	}
	dir, backing, _ := strings.Cut(v, "|")
	if err := serve(dir, backing); err != nil {
		fmt.Fprintln(os.Stderr, "faultfs:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// FS is a mounted directory, served by a child process.
type FS struct {
	// Dir is where the files are seen through FUSE.
	Dir string
	// Backing is where they are stored.
	Backing string

	mu  sync.Mutex
	enc *gob.Encoder
	dec *gob.Decoder
	t   testing.TB
}

// Mount mounts a new empty directory; the test's cleanup unmounts it.
func Mount(t testing.TB) *FS {
	t.Helper()
	if os.Getenv("EDGEGW_TEST_EXEC") != "" {
		t.Skip("FUSE is not served under an emulator")
	}
	f := &FS{Dir: t.TempDir(), Backing: t.TempDir(), t: t}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+f.Dir+"|"+f.Backing)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.enc, f.dec = gob.NewEncoder(in), gob.NewDecoder(out)
	var first response
	if err := f.dec.Decode(&first); err != nil || first.Err != "" {
		in.Close()
		cmd.Wait()
		t.Skipf("cannot mount FUSE (needs root and /dev/fuse; make test runs as root): %v%s", err, first.Err)
	}
	t.Cleanup(func() {
		if resp := f.call(request{Cmd: "unmount"}); resp.Err != "<nil>" {
			syscall.Unmount(f.Dir, syscall.MNT_DETACH)
			t.Errorf("faultfs: %s was still busy at cleanup (%s): something left a file open", f.Dir, resp.Err)
		}
		in.Close()
		cmd.Wait()
	})
	return f
}

func (f *FS) call(req request) response {
	f.mu.Lock()
	defer f.mu.Unlock()
	var resp response
	if err := f.enc.Encode(req); err != nil {
		f.t.Fatalf("faultfs: %v", err)
	}
	if err := f.dec.Decode(&resp); err != nil {
		f.t.Fatalf("faultfs: %v", err)
	}
	return resp
}

// Record starts (true) or stops recording.
func (f *FS) Record(on bool) { f.call(request{Cmd: "record", On: on}) }

// Ops returns what was recorded so far.
func (f *FS) Ops() []Op { return f.call(request{Cmd: "ops"}).Ops }

// Mark records label between the operations before and after it.
func (f *FS) Mark(label string) { f.call(request{Cmd: "mark", Label: label}) }

// Fail adds a fault.
func (f *FS) Fail(fault Fault) { f.call(request{Cmd: "fail", Fault: fault}) }

// Heal removes every fault and returns how many operations failed.
func (f *FS) Heal() int { return f.call(request{Cmd: "heal"}).Failed }

func (f *server) record(op Op) {
	f.mu.Lock()
	if f.recording {
		f.ops = append(f.ops, op)
	}
	f.mu.Unlock()
}

// fault returns the errno an operation fails with, 0 when it passes.
func (f *server) fault(kind Kind, name string) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ft := range f.faults {
		if ft.Kind != kind || !strings.HasSuffix(name, ft.Name) {
			continue
		}
		if ft.Skip > 0 {
			ft.Skip--
			continue
		}
		if ft.Times < 0 {
			continue // used up
		}
		if ft.Times == 1 {
			ft.Times = -1
		} else if ft.Times > 1 {
			ft.Times--
		}
		f.failed++
		return ft.Errno
	}
	return 0
}

// node is a loopback file or directory that reports to its FS.
type node struct {
	*fs.LoopbackNode
	fs *server
}

// WrapChild makes every file and directory the loopback creates a node.
func (n *node) WrapChild(_ context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if l, ok := ops.(*fs.LoopbackNode); ok {
		return &node{LoopbackNode: l, fs: n.fs}
	}
	return ops
}

func (n *node) name() string { return n.Path(n.Root()) }

func (n *node) ino() uint64 { return n.StableAttr().Ino }

func (n *node) child(name string) *node {
	if c := n.GetChild(name); c != nil {
		if cn, ok := c.Operations().(*node); ok {
			return cn
		}
	}
	return nil
}

var (
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
)

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := n.fs.fault(Create, name); e != 0 {
		return nil, nil, 0, e
	}
	in, fh, ff, e := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if e != 0 {
		return nil, nil, 0, e
	}
	c := in.Operations().(*node)
	n.fs.record(Op{Kind: Create, Ino: c.ino(), Name: name})
	return in, &file{FileHandle: fh, node: c}, ff, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, ff, e := n.LoopbackNode.Open(ctx, flags)
	if e != 0 {
		return nil, 0, e
	}
	if flags&syscall.O_TRUNC != 0 {
		n.fs.record(Op{Kind: Truncate, Ino: n.ino(), Name: n.name()})
	}
	return &file{FileHandle: fh, node: n}, ff, 0
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := n.fs.fault(Rename, name); e != 0 {
		return e
	}
	c := n.child(name)
	if e := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags); e != 0 {
		return e
	}
	if c != nil {
		n.fs.record(Op{Kind: Rename, Ino: c.ino(), Name: name, To: newName})
	}
	return 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if e := n.fs.fault(Remove, name); e != 0 {
		return e
	}
	c := n.child(name)
	if e := n.LoopbackNode.Unlink(ctx, name); e != 0 {
		return e
	}
	if c != nil {
		n.fs.record(Op{Kind: Remove, Ino: c.ino(), Name: name})
	}
	return 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if f, ok := fh.(*file); ok {
		fh = f.FileHandle
	}
	size, truncate := in.GetSize()
	if truncate {
		if e := n.fs.fault(Truncate, n.name()); e != 0 {
			return e
		}
	}
	if e := n.LoopbackNode.Setattr(ctx, fh, in, out); e != 0 {
		return e
	}
	if truncate {
		n.fs.record(Op{Kind: Truncate, Ino: n.ino(), Name: n.name(), Size: int64(size)})
	}
	return 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, ff, e := n.LoopbackNode.OpendirHandle(ctx, flags)
	if e != 0 {
		return nil, 0, e
	}
	return &dir{FileHandle: fh, node: n}, ff, 0
}

// file is an open file that reports writes and syncs.
type file struct {
	fs.FileHandle
	node *node
}

var (
	_ fs.FileReader    = (*file)(nil)
	_ fs.FileWriter    = (*file)(nil)
	_ fs.FileFsyncer   = (*file)(nil)
	_ fs.FileFlusher   = (*file)(nil)
	_ fs.FileReleaser  = (*file)(nil)
	_ fs.FileGetattrer = (*file)(nil)
)

func (f *file) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if e := f.node.fs.fault(Read, f.node.name()); e != 0 {
		return nil, e
	}
	return f.FileHandle.(fs.FileReader).Read(ctx, dest, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	name := f.node.name()
	if e := f.node.fs.fault(Write, name); e != 0 {
		return 0, e
	}
	n, e := f.FileHandle.(fs.FileWriter).Write(ctx, data, off)
	if e == 0 {
		f.node.fs.record(Op{Kind: Write, Ino: f.node.ino(), Name: name, Off: off, Data: append([]byte(nil), data[:n]...)})
	}
	return n, e
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	name := f.node.name()
	if e := f.node.fs.fault(Sync, name); e != 0 {
		return e
	}
	// The backing file is not synced: what is durable is what the record
	// says, and a test need not wait for a real disk.
	f.node.fs.record(Op{Kind: Sync, Ino: f.node.ino(), Name: name})
	return 0
}

func (f *file) Flush(ctx context.Context) syscall.Errno {
	return f.FileHandle.(fs.FileFlusher).Flush(ctx)
}

func (f *file) Release(ctx context.Context) syscall.Errno {
	return f.FileHandle.(fs.FileReleaser).Release(ctx)
}

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.FileHandle.(fs.FileGetattrer).Getattr(ctx, out)
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.node.Setattr(ctx, f, in, out)
}

func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return f.FileHandle.(fs.FileAllocater).Allocate(ctx, off, size, mode)
}

// dir is an open directory that reports fsync.
type dir struct {
	fs.FileHandle
	node *node
}

var _ fs.FileFsyncdirer = (*dir)(nil)

func (d *dir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if e := d.node.fs.fault(SyncDir, ""); e != 0 {
		return e
	}
	d.node.fs.record(Op{Kind: SyncDir, Ino: d.node.ino(), Name: d.node.name()})
	return 0
}

func (d *dir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.FileHandle.(fs.FileReaddirenter).Readdirent(ctx)
}

func (d *dir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.FileHandle.(fs.FileSeekdirer).Seekdir(ctx, off)
}

func (d *dir) Releasedir(ctx context.Context, flags uint32) {
	d.FileHandle.(fs.FileReleasedirer).Releasedir(ctx, flags)
}
