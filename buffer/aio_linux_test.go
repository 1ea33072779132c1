package buffer

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

// The kernel's structs have one layout on every architecture.
func TestAIOStructsMatchTheKernels(t *testing.T) {
	if n := unsafe.Sizeof(iocb{}); n != 64 {
		t.Errorf("iocb is %d bytes, struct iocb 64", n)
	}
	if n := unsafe.Offsetof(iocb{}.buf); n != 24 {
		t.Errorf("iocb.buf at %d, aio_buf at 24", n)
	}
	if n := unsafe.Offsetof(iocb{}.resfd); n != 60 {
		t.Errorf("iocb.resfd at %d, aio_resfd at 60", n)
	}
	if n := unsafe.Sizeof(ioEvent{}); n != 32 {
		t.Errorf("ioEvent is %d bytes, struct io_event 32", n)
	}
}

// aioWAL opens a log in a fresh directory, closed at the test's end; the
// test is skipped where the log cannot write through AIO.
func aioWAL(t *testing.T) (w *wal, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "buffer.db.wal")
	w, _, err := openWAL(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.close() })
	if !w.direct {
		t.Skip("this file system has no O_DIRECT")
	}
	if w.aio == nil {
		t.Skip("no Linux AIO here (an emulator or a seccomp filter): the log uses pwrite")
	}
	return w, path
}

// On a file system with O_DIRECT, the log's writes go through AIO, land
// where they should, and read back as written.
func TestDirectLogWritesThroughAIO(t *testing.T) {
	w, path := aioWAL(t)
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
	w, _ := aioWAL(t)
	odd := alignedBuffer(blockSize + 1)[1:] // misaligned
	if err := w.aio.writeAt(odd, 0); err != errAIORefused {
		t.Fatalf("a misaligned direct write: %v, want errAIORefused", err)
	}
	for range aioRefusals {
		_ = w.writeBlocks(odd, 0) // pwrite refuses it too (EINVAL)
	}
	if w.aio != nil {
		t.Fatalf("still using AIO after %d refusals in a row", aioRefusals)
	}
}

// A writer that lost its eventfd is never used again: the log goes on with pwrite.
func TestLogDropsABrokenAIOWriter(t *testing.T) {
	w, _ := aioWAL(t)
	// The completion is signalled, but the wait for it fails at once: a
	// closed file's RawConn stands in for the eventfd's.
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	wr.Close()
	if w.aio.raw, err = r.SyscallConn(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	block := alignedBuffer(blockSize)
	if err := w.writeBlocks(block, 0); err == nil {
		t.Fatal("a write whose completion cannot be awaited reported success")
	}
	if w.aio != nil {
		t.Fatal("the broken writer is still in use")
	}
	if err := w.writeBlocks(block, 0); err != nil {
		t.Fatalf("the next write, with pwrite: %v", err)
	}
}
