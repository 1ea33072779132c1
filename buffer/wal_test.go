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
	w, err := openWAL(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	w.reset(7)
	now := time.Unix(1700000000, 0)
	batch := func(data ...string) []pendingRecord {
		var out []pendingRecord
		for _, d := range data {
			out = append(out, pendingRecord{t: now, data: []byte(d)})
		}
		return out
	}
	w.append(batch("a", "b"), 1)
	w.append(batch("c"), 3)
	tornAt := w.off
	w.append(batch("d", "e"), 4)

	replay := func(epoch uint64) string {
		recs, seqs, err := w.replay(epoch)
		if err != nil {
			t.Fatal(err)
		}
		s := ""
		for i, r := range recs {
			s += fmt.Sprintf("%d=%s ", seqs[i], r.data)
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
	if got := replay(7); got != "1=a 2=b 3=c " {
		t.Fatalf("torn last batch: %q", got)
	}
	if w.off != tornAt {
		t.Fatalf("log continues at %d, want %d (over the torn batch)", w.off, tornAt)
	}
	// After a checkpoint the epoch moves on: old batches are not replayed,
	// and new ones overwrite them from the start.
	if got := replay(8); got != "" {
		t.Fatalf("stale epoch replayed: %q", got)
	}
	w.reset(8)
	w.append(batch("f"), 6)
	if got := replay(8); got != "6=f " {
		t.Fatalf("new epoch: %q", got)
	}
	if w.fits(1, walSize) {
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
	b.db.Close()
	b.wal.close()
	b.seqs.close()

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
