// Package buffer is the durable FIFO that keeps every reading on flash until
// the broker has acknowledged it.
//
// It promises:
//   - A record handed to Append is on disk within the commit interval, in one
//     bbolt transaction with everything else appended in that interval (one
//     fsync per batch, which is what keeps an SD card alive). Acks are
//     batched the same way.
//   - Sequence numbers are assigned at commit from bbolt's persistent bucket
//     sequence: contiguous, never reused, kept across restarts, even when a
//     corrupt file has to be replaced (see seqfloor.go). A crash loses only
//     records that never got a number.
//   - Records leave by Ack, oldest first by Next, or, counted and logged,
//     when MaxBytes or MaxAge is exceeded (oldest first) or when the disk
//     fails for longer than RAM can hold (MaxPendingBytes).
//   - The file stays near the size of what it holds (compact.go), and a file
//     that cannot be read at start is moved aside, never crash-looped on.
//
// The buffer stores opaque bytes: it knows nothing of MQTT or JSON.
package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	readingsBucket = []byte("readings")
	metaBucket     = []byte("meta")
	formatKey      = []byte("format")
)

// format is the layout of this package's file: readings keyed by 8-byte
// big-endian seq, each value an 8-byte unix-nanosecond append time followed
// by the record's data.
const format = "1"

// recordOverhead is what a record costs besides its data: key and time.
const recordOverhead = 16

// Reasons a record is dropped, as counted in Stats.Dropped.
const (
	DropMaxBytes  = "max_bytes"
	DropMaxAge    = "max_age"
	DropDiskError = "disk_error"
)

// Record is one committed entry.
type Record struct {
	Seq uint64
	// Time is when the record was appended.
	Time time.Time
	Data []byte
}

// Options tune a Buffer. The zero value of a field means its default.
type Options struct {
	// CommitInterval is the longest an appended record waits in RAM; 250ms by default.
	CommitInterval time.Duration
	// MaxBytes bounds the records kept (data plus 16 bytes each); beyond it the
	// oldest are dropped. 128 MiB by default.
	MaxBytes int64
	// MaxAge drops records older than this; 168h by default.
	MaxAge time.Duration
	// MaxPendingBytes bounds the records held in RAM while the disk refuses
	// writes; beyond it the oldest of them are dropped. 16 MiB by default.
	MaxPendingBytes int64
	// CompactMinSize and CompactEvery govern compaction: a file larger than
	// CompactMinSize (8 MiB) whose records use under a quarter of it is
	// rewritten, at most once per CompactEvery (10m).
	CompactMinSize int64
	CompactEvery   time.Duration
	// OpenTimeout bounds the wait for the file lock held by another process; 5s by default.
	OpenTimeout time.Duration
	// Logger receives the buffer's events; discarded when nil.
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.CommitInterval, 250*time.Millisecond)
	def(&o.MaxAge, 168*time.Hour)
	def(&o.CompactEvery, 10*time.Minute)
	def(&o.OpenTimeout, 5*time.Second)
	if o.MaxBytes <= 0 {
		o.MaxBytes = 128 << 20
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = 16 << 20
	}
	if o.CompactMinSize <= 0 {
		o.CompactMinSize = 8 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Stats describe what the buffer holds.
type Stats struct {
	// Readings is the number of committed, unacknowledged records.
	Readings int
	// Bytes is their size as MaxBytes counts it.
	Bytes int64
	// Pending is the number of records appended but not yet committed.
	Pending int
	// LastSeq is the seq of the newest committed record (0 when none ever was).
	LastSeq uint64
	// Oldest is the append time of the oldest record held; zero when empty.
	Oldest time.Time
	// Dropped counts records dropped, by reason (DropMaxBytes, DropMaxAge, DropDiskError).
	Dropped map[string]uint64
	// FileSize is the size of the file on disk.
	FileSize int64
}

type pendingRecord struct {
	t    time.Time
	data []byte
}

// Buffer is the durable FIFO. Append, Ack, Next, Committed and Stats are safe
// for concurrent use. Run commits on its own every commit interval; Close
// commits whatever is left.
type Buffer struct {
	path string
	opts Options
	log  *slog.Logger
	seqs *seqFloor

	// dbMu guards db itself, which compaction replaces: Next holds it for
	// reading, compaction for writing.
	dbMu sync.RWMutex
	db   *bolt.DB

	commitMu sync.Mutex // one commit (or compaction) at a time

	mu           sync.Mutex
	pending      []pendingRecord
	pendingBytes int64
	acks         map[uint64]struct{}
	count        int
	bytes        int64
	oldest       time.Time
	lastSeq      uint64
	dropped      map[string]uint64
	episodes     map[string]*episode
	notify       chan struct{} // closed and replaced at each commit that adds records
	closed       bool
	lastCompact  time.Time
}

// ErrClosed is returned by operations on a closed Buffer.
var ErrClosed = errors.New("buffer: closed")

// Open opens or creates the buffer file at path, creating its directory. A
// file that is not a readable buffer is renamed to path.corrupt-TIMESTAMP and
// a fresh one started, continuing the seq numbers; a file locked by another
// process is an error after OpenTimeout.
func Open(path string, opts Options) (*Buffer, error) {
	opts.setDefaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("buffer: %w", err)
	}
	b := &Buffer{
		path:     path,
		opts:     opts,
		log:      opts.Logger,
		acks:     map[uint64]struct{}{},
		dropped:  map[string]uint64{},
		episodes: map[string]*episode{},
		notify:   make(chan struct{}),
	}
	b.lastCompact = opts.Now()
	os.Remove(path + ".compact") // left by a crash during compaction; the file itself is intact
	floor, err := openSeqFloor(path + ".seq")
	if err != nil {
		return nil, err
	}
	b.seqs = floor
	db, err := b.openFile()
	if errors.Is(err, bolt.ErrTimeout) {
		floor.close()
		return nil, fmt.Errorf("buffer: %s is locked by another process (is another edgegw running?): %w", path, err)
	}
	if err != nil {
		db, err = b.replaceCorrupt(err)
		if err != nil {
			floor.close()
			return nil, err
		}
	}
	b.db = db
	if err := b.seqs.reserve(b.lastSeq); err != nil {
		db.Close()
		floor.close()
		return nil, err
	}
	return b, nil
}

// boltOptions bounds the memory map: a Pi Zero has 512 MB of RAM, and 32-bit
// ARM little address space to spare.
func (b *Buffer) boltOptions() *bolt.Options {
	return &bolt.Options{
		Timeout:         b.opts.OpenTimeout,
		InitialMmapSize: 1 << 20,
		MaxSize:         maxFileSize,
		// NoFreelistSync would save a page write per commit, but a file
		// without a synced freelist is scanned at open by a goroutine of
		// bbolt's, where a damaged page panics beyond any recover: the
		// gateway would crash-loop on its own data.
		FreelistType: bolt.FreelistMapType,
	}
}

// openFile opens the bbolt file and reads its state, turning any panic of
// bbolt on a damaged file into an error.
func (b *Buffer) openFile() (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("buffer: damaged file: %v", r)
		}
	}()
	db, err = bolt.Open(b.path, 0o640, b.boltOptions())
	if err != nil {
		return nil, err
	}
	b.count, b.bytes, b.oldest, b.lastSeq = 0, 0, time.Time{}, 0
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		rb := tx.Bucket(readingsBucket)
		switch v := meta.Get(formatKey); {
		case v == nil && rb == nil: // new file
			if err := meta.Put(formatKey, []byte(format)); err != nil {
				return err
			}
		case string(v) != format:
			return fmt.Errorf("buffer: file format %q, want %q", v, format)
		}
		if rb, err = tx.CreateBucketIfNotExists(readingsBucket); err != nil {
			return err
		}
		b.lastSeq = rb.Sequence()
		return rb.ForEach(func(k, v []byte) error {
			if len(k) != 8 || len(v) < 8 {
				return fmt.Errorf("buffer: malformed record %x", k)
			}
			if b.count == 0 {
				b.oldest = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			}
			b.count++
			b.bytes += int64(len(v)) + 8
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// replaceCorrupt moves an unreadable file aside and starts a fresh one whose
// seq numbers continue above any the old file can have used.
func (b *Buffer) replaceCorrupt(cause error) (*bolt.DB, error) {
	recovered := recoverSequence(b.path)
	aside := b.path + ".corrupt-" + b.opts.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(b.path, aside); err != nil {
		return nil, fmt.Errorf("buffer: %s is unreadable (%v) and cannot be moved aside: %w", b.path, cause, err)
	}
	start := max(recovered, b.seqs.ceiling())
	b.log.Error("buffer_file_replaced", "path", b.path, "moved_to", aside, "err", cause, "seq_continues_after", start,
		"hint", "readings in the old file were not published; inspect or delete it")
	db, err := b.openFile()
	if err != nil {
		return nil, fmt.Errorf("buffer: start a fresh %s: %w", b.path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(readingsBucket).SetSequence(start) })
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("buffer: start a fresh %s: %w", b.path, err)
	}
	b.lastSeq = start
	return db, nil
}

// recoverSequence reads the seq counter of a damaged file, if it can.
func recoverSequence(path string) (seq uint64) {
	defer func() {
		if recover() != nil {
			seq = 0
		}
	}()
	db, err := bolt.Open(path, 0o640, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if rb := tx.Bucket(readingsBucket); rb != nil {
			seq = rb.Sequence()
		}
		return nil
	})
	return seq
}

// Append queues data for the next commit, stamped with the current time. The
// buffer keeps data; the caller must not change it afterwards.
func (b *Buffer) Append(data []byte) error {
	now := b.opts.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.pending = append(b.pending, pendingRecord{t: now, data: data})
	b.pendingBytes += int64(len(data)) + recordOverhead
	return nil
}

// Ack marks a committed record as delivered; it is deleted at the next commit
// and Next no longer returns it.
func (b *Buffer) Ack(seq uint64) {
	b.mu.Lock()
	b.acks[seq] = struct{}{}
	b.mu.Unlock()
}

// Committed returns a channel closed at the next commit that adds records.
func (b *Buffer) Committed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.notify
}

// Next returns up to max committed, unacknowledged records with seq > after,
// oldest first, appended to dst. The records' data belongs to the caller.
func (b *Buffer) Next(after uint64, max int, dst []Record) (out []Record, err error) {
	start := len(dst)
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], after+1)
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.db == nil {
		return dst, ErrClosed
	}
	err = safeTx(func() error {
		return b.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(readingsBucket).Cursor()
			for k, v := c.Seek(key[:]); k != nil && len(dst)-start < max; k, v = c.Next() {
				dst = append(dst, Record{
					Seq:  binary.BigEndian.Uint64(k),
					Time: time.Unix(0, int64(binary.BigEndian.Uint64(v))),
					Data: append([]byte(nil), v[8:]...),
				})
			}
			return nil
		})
	})
	if err != nil {
		return dst[:start], fmt.Errorf("buffer: read: %w", err)
	}
	// Leave out records acknowledged but not yet deleted.
	b.mu.Lock()
	if len(b.acks) > 0 {
		kept := dst[:start]
		for _, r := range dst[start:] {
			if _, acked := b.acks[r.Seq]; !acked {
				kept = append(kept, r)
			}
		}
		dst = kept
	}
	b.mu.Unlock()
	return dst, nil
}

// safeTx runs fn, turning a bbolt panic (a damaged page) into an error: a
// bad file must not take the gateway down; Open replaces it at next start.
func safeTx(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged file: %v", r)
		}
	}()
	return fn()
}

// Stats returns what the buffer holds now.
func (b *Buffer) Stats() Stats {
	b.mu.Lock()
	st := Stats{Readings: b.count - len(b.acks), Bytes: b.bytes, Pending: len(b.pending), LastSeq: b.lastSeq,
		Oldest: b.oldest, Dropped: make(map[string]uint64, len(b.dropped))}
	for k, v := range b.dropped {
		st.Dropped[k] = v
	}
	b.mu.Unlock()
	if fi, err := os.Stat(b.path); err == nil {
		st.FileSize = fi.Size()
	}
	return st
}

// Run commits appends and acks every commit interval until ctx ends, then
// commits once more. A failing disk is logged once when it starts failing
// and once when it recovers; records wait in RAM meanwhile.
func (b *Buffer) Run(ctx context.Context) error {
	t := time.NewTicker(b.opts.CommitInterval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return b.Commit()
		case <-t.C:
		}
		err := b.Commit()
		switch {
		case err != nil && failures == 0:
			b.log.Error("buffer_write_failed", "path", b.path, "err", err, "hint", "check free space and the storage device; readings wait in RAM")
			failures++
		case err != nil:
			failures++
		case failures > 0:
			b.log.Info("buffer_write_recovered", "path", b.path, "failed_commits", failures)
			failures = 0
		}
		if err == nil {
			if cerr := b.maybeCompact(); cerr != nil {
				return cerr
			}
		}
	}
}

// Commit writes pending appends and acks, and enforces MaxBytes and MaxAge,
// in one transaction now. On failure the appends stay pending, as many as
// MaxPendingBytes allows.
func (b *Buffer) Commit() error {
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	now := b.opts.Now()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	pending, pendingBytes := b.pending, b.pendingBytes
	b.pending, b.pendingBytes = nil, 0
	acks := make([]uint64, 0, len(b.acks))
	for s := range b.acks {
		acks = append(acks, s)
	}
	ageDue := !b.oldest.IsZero() && now.Sub(b.oldest) > b.opts.MaxAge
	lastSeq := b.lastSeq
	b.mu.Unlock()
	if len(pending) == 0 && len(acks) == 0 && !ageDue {
		return nil
	}

	res, err := b.write(pending, acks, lastSeq, now)
	if err != nil && len(pending) > 0 && len(acks) > 0 {
		// On a full disk the deletes alone may still fit, and they are
		// what frees pages for the appends of the next commit.
		if ackRes, ackErr := b.write(nil, acks, lastSeq, now); ackErr == nil {
			b.mu.Lock()
			b.apply(ackRes, acks, now)
			b.mu.Unlock()
			acks = nil
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		b.pending = append(pending, b.pending...)
		b.pendingBytes += pendingBytes
		b.boundPending(now)
		return fmt.Errorf("buffer: commit: %w", err)
	}
	b.apply(res, acks, now)
	b.noteDrops(DropDiskError, seqRange{}, now)
	if len(pending) > 0 {
		close(b.notify)
		b.notify = make(chan struct{})
	}
	return nil
}

// apply takes the state a successful write left. b.mu is held.
func (b *Buffer) apply(res commitResult, acks []uint64, now time.Time) {
	for _, s := range acks {
		delete(b.acks, s)
	}
	b.count = res.count
	b.bytes = res.bytes
	b.oldest = res.oldest
	b.lastSeq = res.lastSeq
	b.noteDrops(DropMaxBytes, res.droppedBytes, now)
	b.noteDrops(DropMaxAge, res.droppedAge, now)
}

// seqRange is a run of dropped records.
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

// commitResult is the buffer's state after a successful write.
type commitResult struct {
	count                    int
	bytes                    int64
	oldest                   time.Time
	lastSeq                  uint64
	droppedBytes, droppedAge seqRange
}

// write runs the commit transaction: deletes, appends, then drops the
// oldest records beyond MaxAge and MaxBytes.
func (b *Buffer) write(pending []pendingRecord, acks []uint64, lastSeq uint64, now time.Time) (res commitResult, err error) {
	if err := b.seqs.reserve(lastSeq + uint64(len(pending))); err != nil {
		return res, err
	}
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	b.mu.Lock()
	res.count, res.bytes = b.count, b.bytes
	b.mu.Unlock()
	err = safeTx(func() error {
		return b.db.Update(func(tx *bolt.Tx) error {
			rb := tx.Bucket(readingsBucket)
			// Keys only ever grow: full pages halve the pages written.
			rb.FillPercent = 1.0
			var key [8]byte
			for _, s := range acks {
				binary.BigEndian.PutUint64(key[:], s)
				v := rb.Get(key[:])
				if v == nil {
					continue // acknowledged twice, or dropped meanwhile
				}
				res.count--
				res.bytes -= int64(len(v)) + 8
				if err := rb.Delete(key[:]); err != nil {
					return err
				}
			}
			// bbolt keeps keys and values until the transaction ends: one
			// slab holds them all.
			size := 0
			for _, p := range pending {
				size += 16 + len(p.data)
			}
			slab := make([]byte, 0, size)
			for _, p := range pending {
				seq, err := rb.NextSequence()
				if err != nil {
					return err
				}
				at := len(slab)
				slab = binary.BigEndian.AppendUint64(slab, seq)
				slab = binary.BigEndian.AppendUint64(slab, uint64(p.t.UnixNano()))
				slab = append(slab, p.data...)
				k, val := slab[at:at+8], slab[at+8:]
				if err := rb.Put(k, val); err != nil {
					return err
				}
				res.count++
				res.bytes += int64(len(val)) + 8
			}
			res.lastSeq = rb.Sequence()
			// Drop from the front: too old, then too many bytes.
			c := rb.Cursor()
			cutoff := now.Add(-b.opts.MaxAge)
			for k, v := c.First(); k != nil; k, v = c.First() {
				tooOld := time.Unix(0, int64(binary.BigEndian.Uint64(v))).Before(cutoff)
				if !tooOld && res.bytes <= b.opts.MaxBytes {
					res.oldest = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
					break
				}
				seq := binary.BigEndian.Uint64(k)
				if tooOld {
					res.droppedAge.add(seq)
				} else {
					res.droppedBytes.add(seq)
				}
				res.count--
				res.bytes -= int64(len(v)) + 8
				if err := c.Delete(); err != nil {
					return err
				}
			}
			return nil
		})
	})
	return res, err
}

// boundPending drops the oldest records waiting in RAM beyond MaxPendingBytes.
// b.mu is held.
func (b *Buffer) boundPending(now time.Time) {
	var dropped seqRange
	i := 0
	for b.pendingBytes > b.opts.MaxPendingBytes && i < len(b.pending) {
		b.pendingBytes -= int64(len(b.pending[i].data)) + recordOverhead
		dropped.n++ // never numbered: the range stays 0-0
		i++
	}
	b.pending = b.pending[i:]
	b.noteDrops(DropDiskError, dropped, now)
}

// Close commits what is pending and closes the file.
func (b *Buffer) Close() error {
	err := b.Commit()
	if errors.Is(err, ErrClosed) {
		return nil
	}
	b.mu.Lock()
	b.closed = true
	for reason, e := range b.episodes {
		if e.active {
			b.endEpisode(reason, e)
		}
	}
	b.mu.Unlock()
	b.dbMu.Lock()
	defer b.dbMu.Unlock()
	cerr := b.db.Close()
	b.db = nil
	return errors.Join(err, cerr, b.seqs.close())
}

// episode is a run of drops for one reason, logged when it starts and ends.
type episode struct {
	active   bool
	count    uint64
	first    uint64
	last     uint64
	lastDrop time.Time
}

// episodeQuiet is how long without drops ends an episode: max_age drops come
// one by one, and each must not be an episode of its own.
const episodeQuiet = 30 * time.Second

// noteDrops counts drops and logs the start and end of each episode. b.mu is held.
func (b *Buffer) noteDrops(reason string, r seqRange, now time.Time) {
	e := b.episodes[reason]
	if e == nil {
		e = &episode{}
		b.episodes[reason] = e
	}
	if r.n == 0 {
		if e.active && now.Sub(e.lastDrop) > episodeQuiet {
			b.endEpisode(reason, e)
		}
		return
	}
	b.dropped[reason] += uint64(r.n)
	if !e.active {
		*e = episode{active: true, first: r.first}
		attrs := []any{"reason", reason, "limit", b.limit(reason)}
		if r.first != 0 {
			attrs = append(attrs, "first_seq", r.first)
		}
		b.log.Warn("buffer_dropping_oldest", attrs...)
	}
	e.count += uint64(r.n)
	e.last = r.last
	e.lastDrop = now
}

func (b *Buffer) endEpisode(reason string, e *episode) {
	attrs := []any{"reason", reason, "dropped", e.count}
	if e.first != 0 {
		attrs = append(attrs, "seq_range", strconv.FormatUint(e.first, 10)+"-"+strconv.FormatUint(e.last, 10))
	}
	b.log.Warn("buffer_drops_ended", attrs...)
	e.active = false
}

func (b *Buffer) limit(reason string) string {
	switch reason {
	case DropMaxBytes:
		return strconv.FormatInt(b.opts.MaxBytes, 10) + " bytes"
	case DropMaxAge:
		return b.opts.MaxAge.String()
	default:
		return strconv.FormatInt(b.opts.MaxPendingBytes, 10) + " bytes in RAM while the disk fails"
	}
}
