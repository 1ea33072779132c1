package buffer

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWALReplayStopsAtTornOrStaleBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db.wal")
	w, _, err := openWAL(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	w.reset(7)
	now := time.Unix(1700000000, 0).UnixNano()
	add := func(first uint64, data ...string) {
		var recs []walRecord
		for i, d := range data {
			recs = append(recs, walRecord{seq: first + uint64(i), stamp: now, data: []byte(d)})
		}
		if err := w.append(recs, first, nil, now); err != nil {
			t.Fatal(err)
		}
	}
	add(1, "a", "b")
	add(3, "c")
	tornAt := w.off
	add(4, "d", "e")

	var lost []seqRange
	dbLast := uint64(0)
	replay := func(epoch uint64) string {
		rep, err := w.replay(epoch, dbLast)
		if err != nil {
			t.Fatal(err)
		}
		lost = rep.lost
		if rep.torn.n > 0 {
			lost = append(lost, rep.torn)
		}
		s := ""
		for _, r := range rep.recs {
			s += fmt.Sprintf("%d=%s ", r.seq, r.data)
		}
		return s
	}
	if got := replay(7); got != "1=a 2=b 3=c 4=d 5=e " {
		t.Fatalf("whole log: %q", got)
	}
	// A crash in the middle of the last batch: its checksum fails.
	plain, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.WriteAt([]byte{0xff}, tornAt+walHeader+walRecHeader); err != nil {
		t.Fatal(err)
	}
	plain.Close()
	// The header is whole: its seqs are known lost, never given again.
	if got := replay(7); got != "1=a 2=b 3=c " || fmt.Sprint(lost) != "[{2 4 5}]" {
		t.Fatalf("torn last batch: %q, lost %v", got, lost)
	}
	// After a checkpoint (bbolt holds up to 5, epoch 8) the old batches
	// hold nothing new, and new ones overwrite them from the start.
	dbLast = 5
	if got := replay(8); got != "" || w.off != 0 {
		t.Fatalf("stale epoch replayed: %q, log goes on at %d", got, w.off)
	}
	add(6, "f")
	if got := replay(8); got != "6=f " {
		t.Fatalf("new epoch: %q", got)
	}
	// Epoch 9 in bbolt, but the checkpoint's sync failed and the log went
	// on in epoch 8 (the transaction landed all the same): still replayed.
	dbLast = 5
	if got := replay(9); got != "6=f " {
		t.Fatalf("previous epoch after a checkpoint that landed: %q", got)
	}
	// Two epochs back: stale.
	if got := replay(10); got != "" {
		t.Fatalf("epoch 8 replayed for bbolt at 10: %q", got)
	}
	if w.fits(1, walSize, 0) {
		t.Fatal("a record as big as the log fits")
	}
	t.Logf("direct I/O: %v", w.direct)
}

// TestReopenReplaysLog: records committed to the log only (no checkpoint)
// are there after a reopen, with their seqs, and numbering continues.
func TestReopenReplaysLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	b, _ := Open(path, Options{})
	b.Append([]byte("one"))
	b.Append([]byte("two"))
	b.Commit()
	if st := b.Stats(); st.Checkpoints != 0 {
		t.Fatalf("a small commit checkpointed: %+v", st)
	}
	// Leave without Close's checkpoint, as a crash would: release the files only.
	crash(b)

	b, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.Append([]byte("three"))
	b.Commit()
	recs, _ := b.Next(0, 10, nil)
	if len(recs) != 3 || string(recs[0].Data) != "one" || recs[2].Seq != 3 || string(recs[2].Data) != "three" {
		t.Fatalf("after reopen: %+v", recs)
	}
}

// TestNextSkipsAcknowledgedBeforeCounting: a window must not come back
// empty because its first records were acknowledged but not yet deleted.
func TestNextSkipsAcknowledgedBeforeCounting(t *testing.T) {
	b, _ := Open(filepath.Join(t.TempDir(), "buffer.db"), Options{})
	defer b.Close()
	for range 10 {
		b.Append([]byte("r"))
	}
	b.Commit()
	for s := uint64(1); s <= 4; s++ {
		b.Ack(s)
	}
	recs, _ := b.Next(0, 4, nil)
	if fmt.Sprint(seqs(recs)) != "[5 6 7 8]" {
		t.Fatalf("from the log: %v", seqs(recs))
	}
	b.Checkpoint()
	for s := uint64(5); s <= 8; s++ {
		b.Ack(s)
	}
	recs, _ = b.Next(0, 2, nil)
	if fmt.Sprint(seqs(recs)) != "[9 10]" {
		t.Fatalf("from bbolt: %v", seqs(recs))
	}
}
