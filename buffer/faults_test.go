package buffer

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"edgegw/internal/faultfs"
)

// TestFaultAtEveryPoint makes each write and each sync of a commit and of
// a checkpoint fail once (EIO, then ENOSPC), in turn: the operation fails
// or not, but nothing panics, readings wait in RAM, the next attempts
// commit them, and every reading is there once, under its own seq, before
// and after a reopen.
func TestFaultAtEveryPoint(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts FUSE")
	}
	ffs := faultfs.Mount(t)
	for _, op := range []string{"commit", "checkpoint"} {
		for _, kind := range []faultfs.Kind{faultfs.Write, faultfs.Sync, faultfs.Truncate} {
			for _, errno := range []syscall.Errno{syscall.EIO, syscall.ENOSPC} {
				for skip := 0; ; skip++ {
					name := fmt.Sprintf("%s-%v-%v-%d", op, kind, errno, skip)
					fired := faultCase(t, ffs, name, op, faultfs.Fault{Kind: kind, Skip: skip, Times: 1, Errno: errno})
					if !fired || t.Failed() {
						break
					}
				}
			}
		}
	}
}

// faultCase runs one case in its own directory and reports whether the
// fault fired.
func faultCase(t *testing.T, ffs *faultfs.FS, name, op string, fault faultfs.Fault) (fired bool) {
	t.Helper()
	path := filepath.Join(ffs.Dir, name, "buffer.db")
	clk := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	b, err := Open(path, Options{Now: clk.Now})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var want []string
	appendN := func(n int) {
		for range n {
			d := fmt.Sprintf("%s-%d-", name, len(want)) + strings.Repeat("v", 700)
			want = append(want, d)
			b.Append([]byte(d))
		}
	}
	// A first batch that ends inside a block, acknowledged in part.
	appendN(3)
	if err := b.Commit(); err != nil {
		t.Fatalf("%s: first commit: %v", name, err)
	}
	b.Ack(1)
	// The batch under test crosses the next block boundary.
	appendN(8)
	fault.Name = name + "/" // the case's own files only
	fault.Name = ""
	ffs.Fail(fault)
	var opErr error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("%s: panic: %v", name, r)
			}
		}()
		switch op {
		case "commit":
			opErr = b.Commit()
		case "checkpoint":
			if opErr = b.Commit(); opErr == nil {
				appendN(2)
				opErr = errors.Join(b.Commit(), b.Checkpoint())
			}
		}
	}()
	fired = ffs.Heal() > 0
	// The fault is gone: the next commits and checkpoints succeed (a
	// failed checkpoint is retried after its backoff).
	clk.Add(2 * time.Minute)
	appendN(2)
	if err := b.Commit(); err != nil {
		t.Fatalf("%s: commit after the fault (%v): %v", name, opErr, err)
	}
	if err := b.Checkpoint(); err != nil {
		t.Fatalf("%s: checkpoint after the fault (%v): %v", name, opErr, err)
	}
	check := func(when string) {
		recs, err := b.Next(0, 1000, nil)
		if err != nil {
			t.Fatalf("%s: %s: %v", name, when, err)
		}
		if len(recs) != len(want)-1 {
			t.Fatalf("%s: %s: %d readings, want %d (fault: %v)", name, when, len(recs), len(want)-1, opErr)
		}
		for i, r := range recs {
			// seq 1 was acknowledged; the rest are numbered in order.
			if r.Seq != uint64(i+2) || string(r.Data) != want[i+1] {
				t.Fatalf("%s: %s: record %d is seq %d %.30q, want seq %d %.30q", name, when, i, r.Seq, r.Data, i+2, want[i+1])
			}
		}
	}
	check("after the fault")
	if err := b.Close(); err != nil {
		t.Fatalf("%s: close: %v", name, err)
	}
	if err := checkIntegrity(path); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if b, err = Open(path, Options{Now: clk.Now}); err != nil {
		t.Fatalf("%s: reopen: %v", name, err)
	}
	check("after a reopen")
	b.Close()
	return fired
}
