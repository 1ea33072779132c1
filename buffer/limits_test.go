package buffer

import (
	"bytes"
	"edgegw/internal/testlog"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestMaxBytesDropsOldestAndLogsOnePerEpisode(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	var logs testlog.Sink
	b, err := Open(filepath.Join(t.TempDir(), "buffer.db"), Options{
		MaxBytes: 10 * (100 + recordOverhead), Now: clk.Now,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rec := []byte(strings.Repeat("x", 100))
	for round := range 3 {
		for range 8 {
			b.Append(rec)
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Second)
		// Between checkpoints the limit may be exceeded by its slack, 1/16.
		limit := int64(10 * (100 + recordOverhead))
		if st := b.Stats(); st.Bytes > limit+limit/16 {
			t.Fatalf("round %d: %d bytes, more than the limit and its slack", round, st.Bytes)
		}
		if err := b.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		if st := b.Stats(); st.Readings > 10 || st.Bytes > limit {
			t.Fatalf("round %d: %d readings, %d bytes over the limit after a checkpoint", round, st.Readings, st.Bytes)
		}
	}
	st := b.Stats()
	if st.Readings != 10 || st.Dropped[DropMaxBytes] != 14 || st.LastSeq != 24 {
		t.Fatalf("stats %+v", st)
	}
	recs, _ := b.Next(0, 100, nil)
	if recs[0].Seq != 15 || recs[9].Seq != 24 {
		t.Fatalf("kept %d..%d, want the newest 15..24", recs[0].Seq, recs[9].Seq)
	}
	if n := strings.Count(logs.String(), "buffer_dropping_oldest"); n != 1 {
		t.Fatalf("episode start logged %d times:\n%s", n, logs.String())
	}
	// Quiet for a while: the episode ends, with the range dropped.
	for _, r := range recs {
		b.Ack(r.Seq)
	}
	clk.Add(time.Minute)
	b.Append(rec)
	b.Commit()
	if !strings.Contains(logs.String(), "buffer_drops_ended reason=max_bytes dropped=14 seq_range=1-14") {
		t.Fatalf("episode end not logged:\n%s", logs.String())
	}
}

func TestMaxAgeDropsOld(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	b, err := Open(filepath.Join(t.TempDir(), "buffer.db"), Options{MaxAge: time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.Append([]byte("old"))
	b.Commit()
	clk.Add(50 * time.Minute)
	b.Append([]byte("young"))
	b.Commit()
	if st := b.Stats(); st.Readings != 2 || st.OldestAge != 50*time.Minute {
		t.Fatalf("stats %+v", st)
	}
	clk.Add(15 * time.Minute)
	// Nothing new to commit: the age limit alone makes the commit.
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	recs, _ := b.Next(0, 10, nil)
	if len(recs) != 1 || string(recs[0].Data) != "young" {
		t.Fatalf("left %v", recs)
	}
	if st := b.Stats(); st.Dropped[DropMaxAge] != 1 || st.OldestAge != 15*time.Minute {
		t.Fatalf("stats %+v", st)
	}
}

func TestCorruptFileIsMovedAsideAndSeqContinues(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "buffer.db")
	b, _ := Open(path, Options{})
	for range 5 {
		b.Append([]byte("r"))
	}
	b.Close()
	// Scribble over the whole file: not a bbolt file any more.
	os.WriteFile(path, bytes.Repeat([]byte("garbage!"), 4096), 0o640)
	var logs testlog.Sink
	b, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("a corrupt file must not stop the buffer: %v", err)
	}
	defer b.Close()
	aside, _ := filepath.Glob(path + ".corrupt-*[^l]") // the file; its log sits beside it as .wal
	if len(aside) != 1 || !strings.Contains(logs.String(), "level=ERROR msg=buffer_file_replaced") {
		t.Fatalf("moved aside: %v; log:\n%s", aside, logs.String())
	}
	b.Append([]byte("new"))
	b.Commit()
	recs, _ := b.Next(0, 10, nil)
	if len(recs) != 1 || recs[0].Seq <= 5 {
		t.Fatalf("after replacement: %+v (seq must continue above 5)", recs)
	}
}

func TestDamagedPagesNeverPanic(t *testing.T) {
	// Flip bytes at many places of a real file: every Open either works or
	// replaces the file; nothing panics.
	dir := t.TempDir()
	path := filepath.Join(dir, "buffer.db")
	b, _ := Open(path, Options{})
	for range 2000 {
		b.Append(bytes.Repeat([]byte("y"), 100))
	}
	b.Close()
	orig, _ := os.ReadFile(path)
	for i, off := 0, 4096; off < len(orig); i, off = i+1, off+len(orig)/23 {
		t.Run(fmt.Sprint(off), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "buffer.db")
			data := append([]byte(nil), orig...)
			for j := range 64 {
				if off+j < len(data) {
					data[off+j] ^= 0xA5
				}
			}
			os.WriteFile(p, data, 0o640)
			os.WriteFile(p+".seq", []byte("00000000000000200000\n"), 0o640)
			b, err := Open(p, Options{})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer b.Close()
			b.Next(0, 5000, nil)
			b.Append([]byte("z"))
			if err := b.Commit(); err != nil {
				t.Logf("commit on a damaged file: %v", err) // an error, not a panic
			}
		})
	}
}

func TestOtherFormatIsMovedAsideWithItsSeq(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "buffer.db")
	// A file of the walking skeleton: readings without the meta bucket.
	b, _ := Open(path, Options{})
	for range 3 {
		b.Append([]byte("r"))
	}
	b.Close()
	os.Remove(path + ".seq")
	db := mustBolt(t, path)
	db.Update(func(tx *boltTx) error { return tx.DeleteBucket(metaBucket) })
	db.Close()
	b, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if st := b.Stats(); st.LastSeq != 3 {
		t.Fatalf("seq not recovered from the old file: %+v", st)
	}
}

func TestCompactionShrinksFileKeepsSeq(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "buffer.db")
	b, err := Open(path, Options{CompactMinSize: 1 << 20, CompactEvery: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for range 40000 {
		b.Append(bytes.Repeat([]byte("c"), 200))
	}
	b.Commit()
	recs, _ := b.Next(0, 40000, nil)
	for _, r := range recs[:39990] {
		b.Ack(r.Seq)
	}
	b.Commit()
	big := b.Stats().FileSize
	clk.Add(2 * time.Minute)
	if err := b.maybeCompact(); err != nil {
		t.Fatal(err)
	}
	st := b.Stats()
	if st.FileSize*4 > big || st.Readings != 10 {
		t.Fatalf("file %d bytes after compaction, %d before; %d readings", st.FileSize, big, st.Readings)
	}
	b.Append([]byte("after"))
	b.Commit()
	recs, _ = b.Next(0, 100, nil)
	if len(recs) != 11 || recs[0].Seq != 39991 || recs[10].Seq != 40001 {
		t.Fatalf("after compaction: %d records, %d..%d", len(recs), recs[0].Seq, recs[len(recs)-1].Seq)
	}
	t.Logf("file %d -> %d bytes", big, st.FileSize)
}

// TestDiskFull fills a real, small ext4 file system (a loop-mounted image,
// so that the log's O_DIRECT writes meet a block device): commits fail without a panic,
// records wait in RAM up to the bound and the excess is dropped and counted,
// committed records can still be read and acknowledged, and everything
// resumes, seq contiguous, once space returns.
func TestDiskFull(t *testing.T) {
	dir, image := t.TempDir(), filepath.Join(t.TempDir(), "ext4.img")
	if err := os.WriteFile(image, nil, 0o600); err != nil || os.Truncate(image, 24<<20) != nil {
		t.Fatal("cannot make the image")
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", image).CombinedOutput(); err != nil {
		t.Skipf("no mkfs.ext4: %v %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", image, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount an ext4 image (needs root; make test runs as root in CI): %v %s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	var logs testlog.Sink
	clk := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	b, err := Open(filepath.Join(dir, "buffer.db"), Options{
		MaxPendingBytes: 64 << 10, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.wal.direct {
		t.Error("the log does not use O_DIRECT on ext4")
	}
	rec := bytes.Repeat([]byte("d"), 200)
	for range 100 {
		b.Append(rec)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	// Fill the rest of the disk with another file, as a full SD card would be.
	filler := filepath.Join(dir, "filler")
	fillFile(t, filler, 1<<30)
	// Commits go on into the preallocated log while bbolt cannot grow;
	// once the log is full too, records wait in RAM, up to the bound.
	var commitErr error
	for i := 0; i < 100000 && b.Stats().Dropped[DropDiskError] == 0; i++ {
		b.Append(rec)
		if i%50 == 49 {
			if err := b.Commit(); err != nil {
				commitErr = err
			}
		}
	}
	if commitErr == nil {
		t.Fatal("the disk never filled")
	}
	t.Logf("commit on a full disk: %v", commitErr)
	committed := b.Stats().LastSeq
	st := b.Stats()
	if st.Dropped[DropDiskError] == 0 || int64(st.Pending)*(200+recordOverhead) > 64<<10 {
		t.Fatalf("RAM not bounded or drops not counted: %+v", st)
	}
	// Committed records are still there to publish and acknowledge.
	recs, err := b.Next(0, 10, nil)
	if err != nil || len(recs) == 0 {
		t.Fatalf("reading on a full disk: %v, %d records", err, len(recs))
	}
	// Space returns; checkpoints are retried within a minute.
	os.Remove(filler)
	clk.Add(time.Minute)
	if err := b.Commit(); err != nil {
		t.Fatalf("commit after space returned: %v", err)
	}
	st = b.Stats()
	if st.Pending != 0 || st.LastSeq <= committed {
		t.Fatalf("pending records not committed once space returned: %+v", st)
	}
	all, _ := b.Next(0, 1<<30, nil)
	for i := 1; i < len(all); i++ {
		if all[i].Seq != all[i-1].Seq+1 {
			t.Fatalf("hole between %d and %d", all[i-1].Seq, all[i].Seq)
		}
	}
	if !strings.Contains(logs.String(), "buffer_dropping_oldest reason=disk_error") {
		t.Errorf("disk drops not logged:\n%s", logs.String())
	}
}

// fillFile writes zeros to path until the disk is full or max bytes.
func fillFile(t *testing.T, path string, max int64) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for n := int64(0); n < max; n += int64(len(chunk)) {
		if _, err := f.Write(chunk); err != nil {
			return
		}
	}
}
