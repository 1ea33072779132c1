package buffer

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// On a file system with O_DIRECT, the log's writes go through AIO, land
// where they should, and come back from a reopen.
func TestDirectLogWritesThroughAIO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db.wal")
	w, _, err := openWAL(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if !w.direct {
		t.Skip("this file system has no O_DIRECT")
	}
	if w.aio == nil {
		t.Skip("no Linux AIO here (an emulator or a seccomp filter): the log uses pwrite")
	}
	block := alignedBuffer(2 * blockSize)
	for i := range block {
		block[i] = byte(i % 251)
	}
	for off := int64(0); off < 8*blockSize; off += 2 * blockSize {
		if err := w.writeBlocks(block, off); err != nil {
			t.Fatal(err)
		}
	}
	if w.aio == nil || w.refusals != 0 {
		t.Fatalf("AIO refused %d writes on ext4 (given up: %v)", w.refusals, w.aio == nil)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < 8*blockSize; off += 2 * blockSize {
		if !bytes.Equal(got[off:off+2*blockSize], block) {
			t.Fatalf("the blocks at %d are not what was written", off)
		}
	}
}

// A write AIO refuses (here: not aligned, which O_DIRECT cannot take) is
// reported as refused, and enough of them in a row make the log give up AIO.
func TestLogGivesUpAIOAfterRefusals(t *testing.T) {
	w, _, err := openWAL(filepath.Join(t.TempDir(), "buffer.db.wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if w.aio == nil {
		t.Skip("no AIO here")
	}
	odd := alignedBuffer(blockSize + 1)[1:] // misaligned
	if err := w.aio.writeAt(w.f, odd, 0); err != errAIORefused {
		t.Fatalf("a misaligned direct write: %v, want errAIORefused", err)
	}
	for range aioRefusals {
		_ = w.writeBlocks(odd, 0) // pwrite refuses it too (EINVAL)
	}
	if w.aio != nil {
		t.Fatalf("still using AIO after %d refusals in a row", aioRefusals)
	}
}
