package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
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
// start after every checkpoint, batch after batch. A batch (format 2):
//
//	magic u32 | epoch u64 | first seq u64 | count u32 | ack ranges u32 |
//	clock i64 | body length u32 | body crc32c u32 | header crc32c u32
//	body: ack ranges × (first u64 | last u64), then count × (stamp i64 | length u32 | data)
//
// The header has its own checksum and never straddles a 512-byte sector, so
// a batch torn by a power cut still says which seqs it held: they are skipped,
// never given to other readings. Acknowledgements ride in the batches, so
// they are as durable as the readings. The epoch, kept in bbolt and raised by
// every checkpoint in the same transaction, tells live batches from stale
// ones left by earlier epochs. Batches of format 1 (magic walMagicV1, seq per
// record, no acks) written by earlier versions are still replayed.

const (
	walMagic     = 0xED6E0A20
	walMagicV1   = 0xED6E0A1F
	walHeader    = 48
	walHeaderV1  = 20
	walRecHeader = 12
	walAckRange  = 16
	sectorSize   = 512
	// walSize is the log's fixed size; a checkpoint comes at three quarters.
	walSize = 4 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrWALFull means a batch does not fit in the rest of the log.
var ErrWALFull = errors.New("buffer: write-ahead log full")

// walRecord is a record as the log holds it.
type walRecord struct {
	seq   uint64
	stamp int64 // buffer clock at append (clock.go)
	data  []byte
}

// seqRange is an inclusive run of seqs: dropped, lost or acknowledged.
type seqRange struct {
	n           int
	first, last uint64
}

func (r *seqRange) add(seq uint64) {
	if r.n == 0 {
		r.first = seq
	}
	r.last = seq
	r.n++
}

type wal struct {
	f     *os.File
	size  int64
	off   int64 // where the next batch goes
	epoch uint64
	buf   []byte
	// direct: writes bypass the page cache (O_DIRECT) in whole aligned
	// blocks and are synced as they are made (O_DSYNC). Through the page
	// cache, a small write dirties the whole (possibly large) folio it
	// falls in, and all of it is written back.
	direct bool
	// aio, when set, makes the direct writes (aio_linux.go); after
	// aioRefusals refusals in a row the log stops trying it.
	aio      *aioWriter
	refusals int
	// block holds the bytes of the log's last, partly written block, which
	// the next direct write rewrites with the new batch after them. It is
	// changed only after a batch is synced: after a failed write or sync,
	// the next attempt rewrites the same place from RAM.
	block []byte
}

// blockSize is the unit of direct writes: the page size, a multiple of
// every device's logical block.
const blockSize = 4096

// openWAL opens the log at path, creating and allocating it when missing;
// created reports that it was missing.
func openWAL(path string) (w *wal, created bool, err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		created = true
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, false, fmt.Errorf("buffer: %w", err)
	}
	w = &wal{f: f, size: walSize}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, false, fmt.Errorf("buffer: %w", err)
	}
	if fi.Size() < walSize {
		// Write the zeros once: later batches overwrite allocated blocks,
		// so an fdatasync flushes data, not file-system metadata.
		zeros := make([]byte, 64<<10)
		for off := fi.Size(); off < walSize; off += int64(len(zeros)) {
			if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), walSize-off)], off); err != nil {
				_ = f.Close()
				return nil, false, fmt.Errorf("buffer: allocate %s: %w", path, err)
			}
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return nil, false, fmt.Errorf("buffer: allocate %s: %w", path, err)
		}
	}
	if created {
		if err := syncDir(path); err != nil {
			_ = f.Close()
			return nil, false, err
		}
	}
	dropCache(f)
	if df, err := openDirect(path); err == nil {
		_ = f.Close()
		w.f, w.direct = df, true
		w.aio, _ = getAIOWriter(df) // nil: pwrite
	}
	return w, created, nil
}

// batch is one decoded batch of the log.
type batch struct {
	epoch  uint64
	first  uint64 // seq of the first record
	count  int
	clock  int64
	acks   []seqRange
	recs   []walRecord
	end    int64 // offset after it
	bodyOK bool  // false: the header is whole, the body is not
}

// replayed is what a log holds for a buffer whose bbolt file is at dbEpoch
// with records up to dbLast.
type replayed struct {
	recs   []walRecord // seq > dbLast, ascending
	acks   []seqRange
	clock  int64      // the latest batch's clock
	maxSeq uint64     // the highest seq any batch claims (records or damaged)
	lost   []seqRange // seqs above dbLast that batches held but cannot be read: damage inside the log
	// torn is the last batch of the log when its header is whole and its
	// body is not, n 0 when none: the commit a power cut interrupted
	// (its sync never returned), or, which the log cannot tell apart,
	// damage to the newest batch since.
	torn seqRange
	// onlyStale: every batch read was left by the previous epoch and holds
	// nothing above dbLast: the log can start over.
	onlyStale bool
}

// replay reads the log's batches for a bbolt file at dbEpoch holding seqs up
// to dbLast, and positions the log after them. Batches of the previous epoch
// are read too (a checkpoint whose sync failed may have reached the disk all
// the same); epochs never go down along the log. Damage in the middle is
// skipped: later whole batches are found by their checksummed headers, and
// the seqs between are reported lost.
func (w *wal) replay(dbEpoch, dbLast uint64) (replayed, error) {
	data, err := w.readAll()
	if err != nil {
		return replayed{}, err
	}
	var lastEpoch uint64 // of the last batch taken; 0 before the first
	accept := func(epoch uint64) bool {
		if dbEpoch == 0 { // not known: a new bbolt file adopts the log
			return epoch >= lastEpoch
		}
		return epoch == dbEpoch || (epoch+1 == dbEpoch && lastEpoch != dbEpoch)
	}
	res := replayed{maxSeq: dbLast, onlyStale: true}
	off, end := int64(0), int64(0)
	// A torn batch is the power cut's only while no batch follows it.
	inside := func() {
		if res.torn.n > 0 {
			res.lost = append(res.lost, res.torn)
			res.torn = seqRange{}
		}
	}
	for off < int64(len(data)) {
		b, ok := decodeBatch(data, off, true)
		if !ok || !accept(b.epoch) {
			// The end of the log, or damage: is there a whole batch with
			// newer seqs further on?
			at, next, found := findBatch(data, off+1, func(c batch) bool {
				return accept(c.epoch) && c.first > res.maxSeq
			})
			if !found {
				break
			}
			inside()
			if next.first > res.maxSeq+1 {
				res.lost = append(res.lost, seqRange{n: int(next.first - res.maxSeq - 1), first: res.maxSeq + 1, last: next.first - 1})
			}
			res.onlyStale = false
			off = at
			continue
		}
		lastEpoch = b.epoch
		if b.epoch == dbEpoch || b.first+uint64(b.count) > dbLast+1 {
			res.onlyStale = false
		}
		inside()
		res.acks = append(res.acks, b.acks...)
		res.clock = max(res.clock, b.clock)
		if b.count > 0 {
			last := b.first + uint64(b.count) - 1
			if lo := max(b.first, res.maxSeq+1); !b.bodyOK && lo <= last {
				res.torn = seqRange{n: int(last - lo + 1), first: lo, last: last}
			}
			for _, r := range b.recs {
				if r.seq > res.maxSeq {
					res.recs = append(res.recs, r)
				}
			}
			res.maxSeq = max(res.maxSeq, last)
		}
		off, end = b.end, b.end
	}
	w.epoch = max(dbEpoch, lastEpoch)
	w.off = end
	if res.onlyStale {
		w.off = 0
	}
	// The next direct write rewrites the last partial block: keep it.
	w.block = w.block[:0]
	if start := w.off &^ (blockSize - 1); w.off > start {
		w.block = append(w.block, data[start:w.off]...)
	}
	return res, nil
}

// readAll reads the whole log through a plain handle: direct reads need
// aligned buffers, and the pages read are dropped again afterwards.
func (w *wal) readAll() ([]byte, error) {
	plain, err := os.Open(w.f.Name())
	if err != nil {
		return nil, fmt.Errorf("buffer: read log: %w", err)
	}
	defer func() { dropCache(plain); _ = plain.Close() }()
	data := make([]byte, w.size)
	n, err := plain.ReadAt(data, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("buffer: read log: %w", err)
	}
	return data[:n], nil
}

// decodeBatch decodes the batch at off. With aligned, a format 2 header that
// would straddle a sector is looked for at the next sector, as written. ok
// is false when there is no batch whose header is whole.
func decodeBatch(data []byte, off int64, aligned bool) (b batch, ok bool) {
	if off+4 <= int64(len(data)) && binary.BigEndian.Uint32(data[off:]) == walMagicV1 {
		return decodeV1(data, off)
	}
	if aligned && off%sectorSize > sectorSize-walHeader {
		off += sectorSize - off%sectorSize
	}
	if off+walHeader > int64(len(data)) {
		return b, false
	}
	h := data[off : off+walHeader]
	if binary.BigEndian.Uint32(h[0:4]) != walMagic || crc32.Checksum(h[:44], castagnoli) != binary.BigEndian.Uint32(h[44:48]) {
		return b, false
	}
	b = batch{
		epoch: binary.BigEndian.Uint64(h[4:12]),
		first: binary.BigEndian.Uint64(h[12:20]),
		count: int(binary.BigEndian.Uint32(h[20:24])),
		clock: int64(binary.BigEndian.Uint64(h[28:36])),
	}
	ranges := int64(binary.BigEndian.Uint32(h[24:28]))
	length := int64(binary.BigEndian.Uint32(h[36:40]))
	b.end = off + walHeader + length
	if b.end > int64(len(data)) || ranges*walAckRange > length {
		return b, false // a header no writer made
	}
	body := data[off+walHeader : b.end]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(h[40:44]) {
		return b, true // torn or damaged: the header still says which seqs
	}
	for i := range ranges {
		p := body[i*walAckRange:]
		r := seqRange{first: binary.BigEndian.Uint64(p[0:8]), last: binary.BigEndian.Uint64(p[8:16])}
		if r.last >= r.first {
			r.n = int(r.last - r.first + 1)
			b.acks = append(b.acks, r)
		}
	}
	p := body[ranges*walAckRange:]
	for i := range b.count {
		if len(p) < walRecHeader || walRecHeader+int(binary.BigEndian.Uint32(p[8:12])) > len(p) {
			b.recs = nil // a body no writer made: none of it is taken
			return b, true
		}
		n := int(binary.BigEndian.Uint32(p[8:12]))
		b.recs = append(b.recs, walRecord{
			seq:   b.first + uint64(i),
			stamp: int64(binary.BigEndian.Uint64(p[0:8])),
			data:  p[walRecHeader : walRecHeader+n : walRecHeader+n],
		})
		p = p[walRecHeader+n:]
	}
	b.bodyOK = true
	return b, true
}

// decodeV1 decodes a batch of format 1, whose checksum covers header and
// body at once: a torn one cannot be told from no batch.
func decodeV1(data []byte, off int64) (b batch, ok bool) {
	if off+walHeaderV1 > int64(len(data)) {
		return b, false
	}
	h := data[off : off+walHeaderV1]
	length := int64(binary.BigEndian.Uint32(h[12:16]))
	b.epoch = binary.BigEndian.Uint64(h[4:12])
	b.end = off + walHeaderV1 + length
	if b.end > int64(len(data)) {
		return b, false
	}
	body := data[off+walHeaderV1 : b.end]
	if crc32.Update(crc32.Checksum(h[4:16], castagnoli), castagnoli, body) != binary.BigEndian.Uint32(h[16:20]) {
		return b, false
	}
	for p := body; len(p) >= 20; {
		n := int(binary.BigEndian.Uint32(p[16:20]))
		if 20+n > len(p) {
			return b, false
		}
		b.recs = append(b.recs, walRecord{
			seq:   binary.BigEndian.Uint64(p[0:8]),
			stamp: int64(binary.BigEndian.Uint64(p[8:16])),
			data:  p[20 : 20+n : 20+n],
		})
		b.clock = max(b.clock, b.recs[len(b.recs)-1].stamp)
		p = p[20+n:]
	}
	if len(b.recs) > 0 {
		b.first, b.count = b.recs[0].seq, len(b.recs)
	}
	b.bodyOK = true
	return b, true
}

// findBatch returns the first whole format 2 batch at or after from that
// want accepts, and its offset.
func findBatch(data []byte, from int64, want func(batch) bool) (int64, batch, bool) {
	var magic [4]byte
	binary.BigEndian.PutUint32(magic[:], walMagic)
	for from < int64(len(data)) {
		i := bytes.Index(data[from:], magic[:])
		if i < 0 {
			break
		}
		at := from + int64(i)
		if b, ok := decodeBatch(data, at, false); ok && b.bodyOK && want(b) {
			return at, b, true
		}
		from = at + 1
	}
	return 0, batch{}, false
}

// fits reports whether a batch of count records holding n data bytes and
// acks fits.
func (w *wal) fits(count int, n int64, acks int) bool {
	return w.off+sectorSize+walHeader+int64(count)*walRecHeader+int64(acks)*walAckRange+n <= w.size
}

// append writes one batch and syncs it: recs numbered from firstSeq, the
// acknowledged ranges, and the buffer clock. On error nothing of the log's
// state moves: the next call writes the same place again.
func (w *wal) append(recs []walRecord, firstSeq uint64, acks []seqRange, clock int64) error {
	pad := 0
	if r := int(w.off % sectorSize); r > sectorSize-walHeader {
		pad = sectorSize - r // the header never straddles a sector
	}
	size := pad + walHeader + len(acks)*walAckRange
	for _, r := range recs {
		size += walRecHeader + len(r.data)
	}
	if w.off+int64(size) > w.size {
		return ErrWALFull
	}
	b := slices.Grow(w.buf[:0], size)[:pad+walHeader]
	clear(b)
	h := b[pad:]
	binary.BigEndian.PutUint32(h[0:4], walMagic)
	binary.BigEndian.PutUint64(h[4:12], w.epoch)
	binary.BigEndian.PutUint64(h[12:20], firstSeq)
	binary.BigEndian.PutUint32(h[20:24], uint32(len(recs)))
	binary.BigEndian.PutUint32(h[24:28], uint32(len(acks)))
	binary.BigEndian.PutUint64(h[28:36], uint64(clock))
	binary.BigEndian.PutUint32(h[36:40], uint32(size-pad-walHeader))
	for _, r := range acks {
		b = binary.BigEndian.AppendUint64(b, r.first)
		b = binary.BigEndian.AppendUint64(b, r.last)
	}
	for _, r := range recs {
		b = binary.BigEndian.AppendUint64(b, uint64(r.stamp))
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.data)))
		b = append(b, r.data...)
	}
	h = b[pad:]
	binary.BigEndian.PutUint32(h[40:44], crc32.Checksum(b[pad+walHeader:], castagnoli))
	binary.BigEndian.PutUint32(h[44:48], crc32.Checksum(h[:44], castagnoli))
	w.buf = b
	var block []byte
	var err error
	if w.direct {
		block, err = w.writeDirect(b)
	} else {
		_, err = w.f.WriteAt(b, w.off)
	}
	if err != nil {
		return fmt.Errorf("buffer: write log: %w", err)
	}
	if !w.direct { // a direct write was synced when it returned
		if err := fdatasync(w.f); err != nil {
			// What was written since the last good sync may be gone from
			// the page cache already: the next attempt writes it all again.
			return fmt.Errorf("buffer: sync log: %w", err)
		}
	}
	w.off += int64(size)
	if w.direct {
		w.block = append(w.block[:0], block...)
	}
	return nil
}

// writeDirect writes batch at w.off as whole aligned blocks: the partial
// last block again, the batch, zeros to the block's end. It returns what
// the log's last partial block will hold once the write is synced.
func (w *wal) writeDirect(batch []byte) ([]byte, error) {
	start := w.off &^ (blockSize - 1)
	n := len(w.block) + len(batch)
	padded := (n + blockSize - 1) &^ (blockSize - 1)
	out := alignedBuffer(padded)
	copy(out, w.block)
	copy(out[len(w.block):], batch)
	clear(out[n:])
	if err := w.writeBlocks(out, start); err != nil {
		return nil, err
	}
	end := w.off + int64(len(batch))
	return out[int(end&^(blockSize-1)-start):n], nil
}

// aioRefusals is how many refusals in a row make the log give up AIO
// (a file system that cannot write without blocking).
const aioRefusals = 8

// writeBlocks writes the aligned blocks b at off and syncs them.
func (w *wal) writeBlocks(b []byte, off int64) error {
	if w.aio != nil {
		err := w.aio.writeAt(b, off)
		if err != errAIORefused {
			w.refusals = 0
			if w.aio.broken {
				w.aio.release()
				w.aio = nil
			}
			return err
		}
		if w.refusals++; w.refusals >= aioRefusals {
			w.aio.release()
			w.aio = nil
		}
	}
	_, err := w.f.WriteAt(b, off)
	return err
}

// reset starts the log over for a new epoch; what it held is in bbolt now.
func (w *wal) reset(epoch uint64) {
	w.epoch, w.off = epoch, 0
	w.block = w.block[:0]
	if cap(w.buf) > 1<<20 {
		w.buf = nil // do not keep a burst's buffer for good
	}
}

func (w *wal) close() error {
	if w.aio != nil {
		w.aio.release()
		w.aio = nil
	}
	return w.f.Close()
}
