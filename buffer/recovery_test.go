package buffer

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"edgegw/internal/faultfs"
	"edgegw/internal/testlog"
)

// crash releases a buffer's files without the commit and checkpoint of
// Close, as a kill -9 would.
func crash(b *Buffer) {
	b.db.Close()
	b.wal.close()
	b.seqs.close()
}

// commitBatches commits one batch per entry of sizes, n records each.
func commitBatches(t *testing.T, b *Buffer, sizes ...int) {
	t.Helper()
	for _, n := range sizes {
		for i := range n {
			b.Append([]byte(fmt.Sprintf("r%d", i)))
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNextSeesRecordsMovedByACheckpoint: a checkpoint that moves the log's
// tail into bbolt between Next's two reads must not hide those records.
func TestNextSeesRecordsMovedByACheckpoint(t *testing.T) {
	b := openChecked(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
	commitBatches(t, b, 5)
	b.Checkpoint()
	commitBatches(t, b, 5)
	var once sync.Once
	b.afterDBRead = func() { once.Do(func() { b.Checkpoint() }) }
	recs, err := b.Next(0, 100, nil)
	if err != nil || fmt.Sprint(seqs(recs)) != "[1 2 3 4 5 6 7 8 9 10]" {
		t.Fatalf("Next across a checkpoint: %v, %v", seqs(recs), err)
	}
}

// TestDamagedBatchMidLog: the batches after a damaged one are replayed,
// the damaged one's seqs are logged and counted as lost, never reused.
func TestDamagedBatchMidLog(t *testing.T) {
	for _, where := range []string{"body", "header"} {
		t.Run(where, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "buffer.db")
			b := openChecked(t, path, Options{})
			commitBatches(t, b, 3, 4, 5) // seqs 1-3, 4-7, 8-12
			crash(b)
			// The second batch starts after the first: header, then 3 records of 2 bytes.
			second := int64(walHeader + 3*(walRecHeader+2))
			at := second + walHeader + 5 // a record of the second batch
			if where == "header" {
				at = second + 10
			}
			f, _ := os.OpenFile(path+".wal", os.O_RDWR, 0)
			f.WriteAt([]byte{0xff, 0xee}, at)
			f.Close()
			var logs testlog.Sink
			b = openChecked(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			recs, _ := b.Next(0, 100, nil)
			if fmt.Sprint(seqs(recs)) != "[1 2 3 8 9 10 11 12]" {
				t.Fatalf("after a damaged batch: %v", seqs(recs))
			}
			if !strings.Contains(logs.String(), "msg=buffer_readings_lost path="+path+" first_seq=4 last_seq=7 count=4") ||
				b.Stats().Dropped[DropCorrupt] != 4 {
				t.Fatalf("loss not logged and counted: %v\n%s", b.Stats().Dropped, logs.String())
			}
			commitBatches(t, b, 1)
			if st := b.Stats(); st.LastSeq != 13 {
				t.Fatalf("next seq %d, want 13", st.LastSeq)
			}
		})
	}
}

// TestDeletedFilesNeverReuseSeqs: whichever of the buffer's files is
// deleted, numbering goes on above every seq that can have been used.
func TestDeletedFilesNeverReuseSeqs(t *testing.T) {
	for _, gone := range [][]string{{""}, {".wal"}, {"", ".wal"}} {
		t.Run(strings.Join(gone, "+"), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "buffer.db")
			b := openChecked(t, path, Options{})
			commitBatches(t, b, 5)
			b.Checkpoint()
			commitBatches(t, b, 5) // 6-10 only in the log
			crash(b)
			for _, suffix := range gone {
				os.Remove(path + suffix)
			}
			b = openChecked(t, path, Options{})
			recs, _ := b.Next(0, 100, nil)
			commitBatches(t, b, 1)
			st := b.Stats()
			if st.LastSeq <= 10 {
				t.Fatalf("a new reading got seq %d; 1-10 were used", st.LastSeq)
			}
			if gone[0] == "" && len(gone) == 1 && fmt.Sprint(seqs(recs)) != "[6 7 8 9 10]" {
				t.Fatalf("the log's records were not kept when buffer.db was deleted: %v", seqs(recs))
			}
		})
	}
}

// TestOpenErrorLeavesFilesAlone: an I/O error at open is not damage: Open
// fails with ErrUnavailable, moves nothing aside, and works once the
// error passes, with every reading.
func TestOpenErrorLeavesFilesAlone(t *testing.T) {
	ffs := faultfs.Mount(t)
	path := filepath.Join(ffs.Dir, "buffer.db")
	b, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	commitBatches(t, b, 7)
	b.Close()
	ffs.Fail(faultfs.Fault{Kind: faultfs.Read, Name: "buffer.db", Errno: syscall.EIO})
	_, err = Open(path, Options{OpenTimeout: time.Second})
	ffs.Heal()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open on EIO: %v, want ErrUnavailable", err)
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) > 0 {
		t.Fatalf("a healthy file was moved aside on EIO: %v", aside)
	}
	b, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if st := b.Stats(); st.Readings != 7 {
		t.Fatalf("after the error passed: %+v", st)
	}
}

// TestAgeSurvivesClockSteps: a Pi without a real-time clock is off for a
// month; NTP then steps its clock. Its backlog is not a month old.
func TestAgeSurvivesClockSteps(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "buffer.db")
	b := openChecked(t, path, Options{MaxAge: time.Hour, Now: clk.Now})
	commitBatches(t, b, 3)
	clk.Add(10 * time.Minute)
	b.Close()
	clk.Add(30 * 24 * time.Hour) // off, then stepped
	b = openChecked(t, path, Options{MaxAge: time.Hour, Now: clk.Now})
	clk.Add(5 * time.Minute)
	commitBatches(t, b, 1)
	b.Checkpoint()
	st := b.Stats()
	if st.Readings != 4 || st.Dropped[DropMaxAge] != 0 || st.OldestAge != 15*time.Minute {
		t.Fatalf("after a month off and a clock step: %+v", st)
	}
	// Running time does count.
	clk.Add(50 * time.Minute)
	b.Checkpoint()
	if st := b.Stats(); st.Readings != 1 || st.Dropped[DropMaxAge] != 3 {
		t.Fatalf("an hour of running: %+v", st)
	}
}

// TestRunStopsWhenTheFileCannotBeReopened: a checkpoint fails, and the
// file cannot be reopened after it: Run stops (the gateway exits and
// systemd restarts it) rather than keep readings in RAM, and Close does
// not panic.
func TestRunStopsWhenTheFileCannotBeReopened(t *testing.T) {
	ffs := faultfs.Mount(t)
	path := filepath.Join(ffs.Dir, "buffer.db")
	b, err := Open(path, Options{CommitInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close() // no panic
	commitBatches(t, b, 3)
	ffs.Fail(faultfs.Fault{Kind: faultfs.Sync, Name: "buffer.db", Times: 1, Errno: syscall.EIO})
	ffs.Fail(faultfs.Fault{Kind: faultfs.Read, Name: "buffer.db", Errno: syscall.EIO})
	defer ffs.Heal()
	if err := b.Checkpoint(); err == nil {
		t.Fatal("checkpoint on a failing sync succeeded")
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(t.Context()) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStopped) {
			t.Fatalf("Run returned %v, want ErrStopped", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going without a file")
	}
}
