package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"
)

// Why a write-ahead log in front of bbolt: a bbolt commit rewrites, copy on
// write, every page on the path to what changed, plus the freelist and meta
// pages: about 24 KiB per commit however few readings it holds, 4 commits a
// second at the default 250ms. The log writes what was appended, sequentially,
// into a file allocated once; bbolt is written only at checkpoints, in large
// transactions, and records acknowledged while still in the log never reach
// bbolt at all. Measured in docs/BENCHMARKS.md.
//
// Layout: the file is allocated once (zeros) at walSize and written from the
// start after every checkpoint, batch after batch:
//
//	magic u32 | epoch u64 | length u32 | crc32c u32 | length bytes of records
//	record: seq u64 | unix nanos u64 | data length u32 | data
//
// The epoch, kept in bbolt and raised by every checkpoint in the same
// transaction, tells live batches from stale ones left by earlier epochs; the
// checksum tells a whole batch from a torn one. Replay stops at the first
// batch that is neither.

const (
	walMagic     = 0xED6E0A1F
	walHeader    = 20
	walRecHeader = 20
	// walSize is the log's fixed size; a checkpoint comes at three quarters.
	walSize = 4 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrWALFull means a batch does not fit in the rest of the log.
var ErrWALFull = errors.New("buffer: write-ahead log full")

type wal struct {
	f     *os.File
	size  int64
	off   int64 // where the next batch goes
	epoch uint64
	buf   []byte
	// direct: writes bypass the page cache (O_DIRECT) in whole aligned
	// blocks. Through the page cache, a small write dirties the whole
	// (possibly large) folio it falls in, and all of it is written back.
	direct bool
	// block holds the bytes of the log's last, partly written block, which
	// the next direct write rewrites with the new batch after them.
	block []byte
}

// blockSize is the unit of direct writes: the page size, a multiple of
// every device's logical block.
const blockSize = 4096

// openWAL opens the log at path, creating and allocating it when missing.
func openWAL(path string) (*wal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("buffer: %w", err)
	}
	w := &wal{f: f, size: walSize}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("buffer: %w", err)
	}
	if fi.Size() < walSize {
		// Write the zeros once: later batches overwrite allocated blocks,
		// so an fdatasync flushes data, not file-system metadata.
		zeros := make([]byte, 64<<10)
		for off := fi.Size(); off < walSize; off += int64(len(zeros)) {
			if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), walSize-off)], off); err != nil {
				f.Close()
				return nil, fmt.Errorf("buffer: allocate %s: %w", path, err)
			}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("buffer: allocate %s: %w", path, err)
		}
	}
	dropCache(f)
	if df, err := openDirect(path); err == nil {
		f.Close()
		w.f, w.direct = df, true
	}
	return w, nil
}

// replay returns the records of the log's live batches for epoch, oldest
// first, and positions the log after them.
func (w *wal) replay(epoch uint64) ([]pendingRecord, []uint64, error) {
	w.epoch, w.off = epoch, 0
	r := w.f
	if w.direct {
		// Direct reads need aligned buffers; a plain handle reads it once.
		plain, err := os.Open(w.f.Name())
		if err != nil {
			return nil, nil, fmt.Errorf("buffer: read log: %w", err)
		}
		defer func() { dropCache(plain); plain.Close() }()
		r = plain
	}
	var recs []pendingRecord
	var seqs []uint64
	hdr := make([]byte, walHeader)
	for w.off+walHeader <= w.size {
		if _, err := r.ReadAt(hdr, w.off); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, nil, fmt.Errorf("buffer: read log: %w", err)
		}
		length := int64(binary.BigEndian.Uint32(hdr[12:16]))
		if binary.BigEndian.Uint32(hdr[0:4]) != walMagic || binary.BigEndian.Uint64(hdr[4:12]) != epoch ||
			w.off+walHeader+length > w.size {
			break
		}
		body := make([]byte, length)
		if _, err := r.ReadAt(body, w.off+walHeader); err != nil {
			break
		}
		crc := crc32.Update(crc32.Checksum(hdr[4:16], castagnoli), castagnoli, body)
		if crc != binary.BigEndian.Uint32(hdr[16:20]) {
			break // torn: the crash came while it was written
		}
		for p := body; len(p) >= walRecHeader; {
			n := int(binary.BigEndian.Uint32(p[16:20]))
			if walRecHeader+n > len(p) {
				return nil, nil, errors.New("buffer: log batch with a bad record length")
			}
			seqs = append(seqs, binary.BigEndian.Uint64(p[0:8]))
			recs = append(recs, pendingRecord{t: time.Unix(0, int64(binary.BigEndian.Uint64(p[8:16]))), data: p[walRecHeader : walRecHeader+n : walRecHeader+n]})
			p = p[walRecHeader+n:]
		}
		w.off += walHeader + length
	}
	// The next direct write rewrites the last partial block: keep it.
	w.block = w.block[:0]
	if start := w.off &^ (blockSize - 1); w.off > start {
		w.block = append(w.block, make([]byte, w.off-start)...)
		if _, err := r.ReadAt(w.block, start); err != nil {
			return nil, nil, fmt.Errorf("buffer: read log: %w", err)
		}
	}
	return recs, seqs, nil
}

// fits reports whether a batch of n data bytes in count records fits.
func (w *wal) fits(count int, n int64) bool {
	return w.off+walHeader+int64(count)*walRecHeader+n <= w.size
}

// append writes one batch of records numbered from firstSeq and syncs it.
func (w *wal) append(recs []pendingRecord, firstSeq uint64) error {
	size := walHeader
	for _, r := range recs {
		size += walRecHeader + len(r.data)
	}
	if w.off+int64(size) > w.size {
		return ErrWALFull
	}
	b := w.buf[:0]
	b = binary.BigEndian.AppendUint32(b, walMagic)
	b = binary.BigEndian.AppendUint64(b, w.epoch)
	b = binary.BigEndian.AppendUint32(b, uint32(size-walHeader))
	b = append(b, 0, 0, 0, 0) // crc, below
	for i, r := range recs {
		b = binary.BigEndian.AppendUint64(b, firstSeq+uint64(i))
		b = binary.BigEndian.AppendUint64(b, uint64(r.t.UnixNano()))
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.data)))
		b = append(b, r.data...)
	}
	binary.BigEndian.PutUint32(b[16:20], crc32.Update(crc32.Checksum(b[4:16], castagnoli), castagnoli, b[walHeader:]))
	w.buf = b
	var err error
	if w.direct {
		err = w.writeDirect(b)
	} else {
		_, err = w.f.WriteAt(b, w.off)
	}
	if err != nil {
		return fmt.Errorf("buffer: write log: %w", err)
	}
	if err := fdatasync(w.f); err != nil {
		return fmt.Errorf("buffer: sync log: %w", err)
	}
	w.off += int64(size)
	return nil
}

// writeDirect writes batch at w.off as whole aligned blocks: the partial
// last block again, the batch, zeros to the block's end.
func (w *wal) writeDirect(batch []byte) error {
	start := w.off &^ (blockSize - 1)
	n := len(w.block) + len(batch)
	padded := (n + blockSize - 1) &^ (blockSize - 1)
	out := alignedBuffer(padded)
	copy(out, w.block)
	copy(out[len(w.block):], batch)
	clear(out[n:])
	if _, err := w.f.WriteAt(out, start); err != nil {
		return err
	}
	end := w.off + int64(len(batch))
	w.block = append(w.block[:0], out[int(end&^(blockSize-1)-start):n]...)
	return nil
}

// reset starts the log over for a new epoch; what it held is in bbolt now.
func (w *wal) reset(epoch uint64) {
	w.epoch, w.off = epoch, 0
	w.block = w.block[:0]
	if cap(w.buf) > 1<<20 {
		w.buf = nil // do not keep a burst's buffer for good
	}
}

func (w *wal) close() error { return w.f.Close() }
