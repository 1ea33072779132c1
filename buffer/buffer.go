// Package buffer is the durable FIFO that keeps every reading on flash until
// the broker has acknowledged it.
//
// It promises:
//   - A record handed to Append is on disk within the commit interval, in one
//     write with everything else appended in that interval (one fdatasync per
//     batch, which is what keeps an SD card alive).
//   - Sequence numbers are assigned at commit: contiguous, never reused, kept
//     across restarts, even when a damaged file has to be replaced
//     (seqfloor.go). A crash loses only records that never got a number.
//   - Records leave by Ack (applied in batches), oldest first by Next, or,
//     counted and logged, when MaxBytes or MaxAge is exceeded (oldest first)
//     or when the disk fails for longer than RAM can hold (MaxPendingBytes).
//   - The file stays near the size of what it holds (compact.go), and a file
//     that cannot be read at start is moved aside, never crash-looped on.
//
// Commits append to a write-ahead log (wal.go); bbolt holds the records at
// checkpoints. The buffer stores opaque bytes: it knows nothing of MQTT or JSON.
package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	readingsBucket = []byte("readings")
	metaBucket     = []byte("meta")
	formatKey      = []byte("format")
	epochKey       = []byte("wal_epoch")
)

// format is the layout of this package's file: readings keyed by 8-byte
// big-endian seq, each value an 8-byte unix-nanosecond append time followed
// by the record's data.
const format = "1"

// recordOverhead is what a record costs besides its data: key and time.
const recordOverhead = 16

// recordSize is what a record of data counts toward MaxBytes.
func recordSize(data []byte) int64 { return int64(len(data)) + recordOverhead }

// storedSize is the same for a value as bbolt stores it (time, then data).
func storedSize(v []byte) int64 { return recordSize(v[8:]) }

// Reasons a record is dropped, as counted in Stats.Dropped.
const (
	DropMaxBytes  = "max_bytes"
	DropMaxAge    = "max_age"
	DropDiskError = "disk_error"
)

// ackCheckpoint is how many acknowledgements of records in bbolt make a
// checkpoint, so a drained backlog frees its space.
const ackCheckpoint = 20000

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
	// oldest are dropped at the next checkpoint. Between checkpoints the
	// buffer may exceed it by MaxBytes/16, at most 1 MiB. 128 MiB by default.
	MaxBytes int64
	// MaxAge drops records older than this, checked at least every
	// MaxAge/16 (at most a minute); 168h by default.
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
	// FileSize is the size of the bbolt file on disk.
	FileSize int64
	// Checkpoints counts the transactions that moved the log into bbolt.
	Checkpoints uint64
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
	wal  *wal

	// dbMu guards db itself, which compaction replaces: Next holds it for
	// reading, compaction for writing.
	dbMu sync.RWMutex
	db   *bolt.DB

	commitMu sync.Mutex // one commit, checkpoint or compaction at a time

	mu           sync.Mutex
	pending      []pendingRecord
	pendingBytes int64
	tail         []Record // committed to the log, not yet to bbolt; seq order
	tailBytes    int64
	acks         map[uint64]struct{}
	dbAcks       int // acks of records in bbolt
	dbCount      int
	dbBytes      int64
	dbOldest     time.Time
	dbLast       uint64 // highest seq bbolt has accounted for
	lastSeq      uint64
	dropped      map[string]uint64
	episodes     map[string]*episode
	notify       chan struct{} // closed and replaced at each commit that adds records
	closed       bool
	lastCompact  time.Time
	checkpoints  uint64
	// After a failed checkpoint the next waits until checkpointRetry
	// (unless the log is full).
	checkpointFailures int
	checkpointRetry    time.Time
	commitErr          error // of the last commit; nil when it worked
	beat               atomic.Int64
}

// Heartbeat returns when Run last went round its loop: a commit that hangs
// (a dying SD card can block fsync for good) stops it.
func (b *Buffer) Heartbeat() time.Time { return time.Unix(0, b.beat.Load()) }

// Err returns why the last commit failed, nil when it worked: readings are
// waiting in RAM meanwhile.
func (b *Buffer) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.commitErr
}

// ErrClosed is returned by operations on a closed Buffer.
var ErrClosed = errors.New("buffer: closed")

// Open opens or creates the buffer at path (with path.wal and path.seq beside
// it), creating its directory, and replays the log. A file that is not a
// readable buffer is renamed to path.corrupt-TIMESTAMP and a fresh one
// started, continuing the seq numbers; a file locked by another process is an
// error after OpenTimeout.
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
	epoch, db, err := b.openFile()
	if errors.Is(err, berrors.ErrTimeout) {
		floor.close()
		return nil, fmt.Errorf("buffer: %s is locked by another process (is another edgegw running?): %w", path, err)
	}
	if err != nil {
		epoch, db, err = b.replaceCorrupt(err)
		if err != nil {
			floor.close()
			return nil, err
		}
	}
	b.db = db
	fail := func(err error) (*Buffer, error) {
		db.Close()
		floor.close()
		if b.wal != nil {
			b.wal.close()
		}
		return nil, err
	}
	if b.wal, err = openWAL(path + ".wal"); err != nil {
		return fail(err)
	}
	recs, seqs, err := b.wal.replay(epoch)
	if err != nil {
		return fail(err)
	}
	b.lastSeq = b.dbLast
	for i, r := range recs {
		if seqs[i] <= b.dbLast {
			continue // already in bbolt
		}
		b.tail = append(b.tail, Record{Seq: seqs[i], Time: r.t, Data: r.data})
		b.tailBytes += recordSize(r.data)
		b.lastSeq = seqs[i]
	}
	if err := b.seqs.reserve(b.lastSeq); err != nil {
		return fail(err)
	}
	return b, nil
}

// boltOptions bounds the memory map: a Pi Zero has 512 MB of RAM, and 32-bit
// ARM little address space to spare.
func (b *Buffer) boltOptions() *bolt.Options {
	return &bolt.Options{
		Timeout:         b.opts.OpenTimeout,
		InitialMmapSize: initialMmapSize,
		MaxSize:         maxFileSize,
		// NoFreelistSync would save a page write per checkpoint, but a file
		// without a synced freelist is scanned at open by a goroutine of
		// bbolt's, where a damaged page panics beyond any recover: the
		// gateway would crash-loop on its own data.
		FreelistType: bolt.FreelistMapType,
	}
}

// openBolt opens a bbolt file with the buffer's options.
func (b *Buffer) openBolt(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o640, b.boltOptions())
	if err != nil {
		return nil, err
	}
	// Grow the file 1 MiB at a time, not 16: it stays near what it holds.
	db.AllocSize = 1 << 20
	return db, nil
}

// openFile opens the bbolt file and reads its state, turning any panic of
// bbolt on a damaged file into an error. It returns the log epoch.
//
// Every record is read once, to find damage now rather than mid-drain, but
// through a read-only open that is closed afterwards: the pages it touched
// leave the process with its mapping, and RSS stays small however big the
// backlog.
func (b *Buffer) openFile() (epoch uint64, db *bolt.DB, err error) {
	b.dbCount, b.dbBytes, b.dbOldest, b.dbLast = 0, 0, time.Time{}, 0
	epoch = 1
	if fileSize(b.path) > 0 {
		if epoch, err = b.scan(); err != nil {
			return 0, nil, err
		}
	}
	err = safeTx(func() (err error) {
		db, err = b.openBolt(b.path)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	err = safeTx(func() error {
		return db.Update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucketIfNotExists(metaBucket)
			if err != nil {
				return err
			}
			if meta.Get(formatKey) == nil { // a new file
				if err := meta.Put(formatKey, []byte(format)); err != nil {
					return err
				}
				if err := meta.Put(epochKey, binary.BigEndian.AppendUint64(nil, epoch)); err != nil {
					return err
				}
			}
			_, err = tx.CreateBucketIfNotExists(readingsBucket)
			return err
		})
	})
	if err != nil {
		db.Close()
		return 0, nil, err
	}
	return epoch, db, nil
}

// scan reads an existing file read-only: format, log epoch, seq counter and
// every record.
func (b *Buffer) scan() (epoch uint64, err error) {
	defer func() {
		if r := recover(); r != nil { // bbolt.Open on a damaged meta page
			err = fmt.Errorf("buffer: damaged file: %v", r)
		}
	}()
	ro, err := bolt.Open(b.path, 0o640, &bolt.Options{ReadOnly: true, Timeout: b.opts.OpenTimeout})
	if err != nil {
		return 0, err
	}
	defer ro.Close()
	err = safeTx(func() error {
		return ro.View(func(tx *bolt.Tx) error {
			meta, rb := tx.Bucket(metaBucket), tx.Bucket(readingsBucket)
			if meta == nil || rb == nil {
				return errors.New("buffer: not an edgegw buffer file")
			}
			if v := meta.Get(formatKey); string(v) != format {
				return fmt.Errorf("buffer: file format %q, want %q", v, format)
			}
			epoch = 1
			if v := meta.Get(epochKey); len(v) == 8 {
				epoch = binary.BigEndian.Uint64(v)
			}
			b.dbLast = rb.Sequence()
			return rb.ForEach(func(k, v []byte) error {
				if len(k) != 8 || len(v) < 8 {
					return fmt.Errorf("buffer: malformed record %x", k)
				}
				if b.dbCount == 0 {
					b.dbOldest = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
				}
				b.dbCount++
				b.dbBytes += storedSize(v)
				return nil
			})
		})
	})
	return epoch, err
}

// replaceCorrupt moves an unreadable file aside and starts a fresh one whose
// seq numbers continue above any the old file can have used.
func (b *Buffer) replaceCorrupt(cause error) (uint64, *bolt.DB, error) {
	recovered := recoverSequence(b.path)
	stamp := b.opts.Now().UTC().Format("20060102T150405Z")
	aside := b.path + ".corrupt-" + stamp
	if err := os.Rename(b.path, aside); err != nil {
		return 0, nil, fmt.Errorf("buffer: %s is unreadable (%v) and cannot be moved aside: %w", b.path, cause, err)
	}
	// The log's epochs belong to the old file: keep it beside it.
	os.Rename(b.path+".wal", aside+".wal")
	start := max(recovered, b.seqs.ceiling())
	b.log.Error("buffer_file_replaced", "path", b.path, "moved_to", aside, "err", cause, "seq_continues_after", start,
		"hint", "readings in the old file were not published; inspect or delete it")
	epoch, db, err := b.openFile()
	if err != nil {
		return 0, nil, fmt.Errorf("buffer: start a fresh %s: %w", b.path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(readingsBucket).SetSequence(start) })
	if err != nil {
		db.Close()
		return 0, nil, fmt.Errorf("buffer: start a fresh %s: %w", b.path, err)
	}
	b.dbLast = start
	return epoch, db, nil
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
	b.pendingBytes += recordSize(data)
	return nil
}

// Ack marks a committed record as delivered; it is deleted at the next
// checkpoint and Next no longer returns it.
func (b *Buffer) Ack(seq uint64) {
	b.mu.Lock()
	if _, dup := b.acks[seq]; !dup && seq <= b.lastSeq {
		b.acks[seq] = struct{}{}
		if seq <= b.dbLast {
			b.dbAcks++
		}
	}
	b.mu.Unlock()
}

// Committed returns a channel closed at the next commit that adds records.
func (b *Buffer) Committed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.notify
}

// Next returns up to limit committed, unacknowledged records with seq > after,
// oldest first, appended to dst. The caller must not modify their data.
func (b *Buffer) Next(after uint64, limit int, dst []Record) ([]Record, error) {
	start := len(dst)
	b.mu.Lock()
	dbLast := b.dbLast
	b.mu.Unlock()
	if after < dbLast {
		var err error
		if dst, err = b.nextFromDB(after, dbLast, limit, dst); err != nil {
			return dst[:start], err
		}
	}
	// The log's tail follows bbolt's records: seqs above dbLast.
	b.mu.Lock()
	defer b.mu.Unlock()
	tail := b.tail
	i := sort.Search(len(tail), func(i int) bool { return tail[i].Seq > max(after, dbLast) })
	for ; i < len(tail) && len(dst)-start < limit; i++ {
		if _, acked := b.acks[tail[i].Seq]; !acked {
			dst = append(dst, tail[i])
		}
	}
	return dst, nil
}

// nextFromDB reads records in (after, last] from bbolt, skipping those
// acknowledged but not yet deleted.
func (b *Buffer) nextFromDB(after, last uint64, limit int, dst []Record) ([]Record, error) {
	start := len(dst)
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], after+1)
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.db == nil {
		return dst, ErrClosed
	}
	err := safeTx(func() error {
		return b.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(readingsBucket).Cursor()
			for k, v := c.Seek(key[:]); k != nil && len(dst)-start < limit; k, v = c.Next() {
				seq := binary.BigEndian.Uint64(k)
				if seq > last {
					break
				}
				b.mu.Lock()
				_, acked := b.acks[seq]
				b.mu.Unlock()
				if acked {
					continue
				}
				dst = append(dst, Record{
					Seq:  seq,
					Time: time.Unix(0, int64(binary.BigEndian.Uint64(v))),
					Data: append([]byte(nil), v[8:]...),
				})
			}
			return nil
		})
	})
	if err != nil {
		return dst, fmt.Errorf("buffer: read: %w", err)
	}
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
	st := Stats{
		Readings: b.dbCount + len(b.tail) - len(b.acks), Bytes: b.dbBytes + b.tailBytes,
		Pending: len(b.pending), LastSeq: b.lastSeq, Oldest: b.dbOldest,
		Dropped: make(map[string]uint64, len(b.dropped)), Checkpoints: b.checkpoints,
	}
	if b.dbCount == 0 && len(b.tail) > 0 {
		st.Oldest = b.tail[0].Time
	}
	for k, v := range b.dropped {
		st.Dropped[k] = v
	}
	b.mu.Unlock()
	st.FileSize = fileSize(b.path)
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
		b.beat.Store(time.Now().UnixNano())
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
