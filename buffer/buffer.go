// Package buffer is the durable FIFO that keeps every reading on flash until
// the broker has acknowledged it.
//
// It promises:
//   - A record handed to Append is on disk within the commit interval, in one
//     write with everything else appended in that interval (one sync per
//     batch, which is what keeps an SD card alive). Acknowledgements ride in
//     the same batches: after a crash, only records acknowledged within the
//     last commit interval come back.
//   - Sequence numbers are assigned at commit: contiguous, never reused, kept
//     across restarts, whatever file was damaged or deleted (seqfloor.go).
//     A crash loses only records that never got a number; seqs that were
//     given out but cannot be read back are logged and counted as corrupt.
//   - Records leave by Ack, oldest first by Next, or, counted and logged,
//     when MaxBytes or MaxAge is exceeded (oldest first) or when the disk
//     fails for longer than RAM can hold (MaxPendingBytes). Age is judged by
//     the buffer's own clock (clock.go), which clock steps do not move.
//   - Open takes the same time however many records are held. A file that is
//     damaged (verified) is salvaged: what can be read is kept, the rest is
//     moved aside; a file that cannot be read now (an I/O error) is left
//     alone and Open fails with ErrUnavailable, to be tried again.
//   - The file stays near the size of what it holds (compact.go).
//
// Commits append to a write-ahead log (wal.go); bbolt holds the records at
// checkpoints. The buffer stores opaque bytes: it knows nothing of MQTT or JSON.
package buffer

import (
	"context"
	"edgegw/internal/beat"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	readingsBucket = []byte("readings")
	metaBucket     = []byte("meta")
	formatKey      = []byte("format")
	epochKey       = []byte("wal_epoch")
	countKey       = []byte("count")
	bytesKey       = []byte("bytes")
	clockKey       = []byte("clock")
)

// format is the layout of this package's file: readings keyed by 8-byte
// big-endian seq, each value an 8-byte stamp of the buffer clock followed by
// the record's data; the meta bucket holds the log epoch, the record count
// and bytes (so Open need not read every record) and the buffer clock.
const format = "1"

// recordOverhead is what a record costs besides its data: key and stamp.
const recordOverhead = 16

// recordSize is what a record of data counts toward MaxBytes.
func recordSize(data []byte) int64 { return int64(len(data)) + recordOverhead }

// storedSize is the same for a value as bbolt stores it (stamp, then data).
func storedSize(v []byte) int64 { return recordSize(v[8:]) }

// Reasons a record is dropped, as counted in Stats.Dropped.
const (
	DropMaxBytes  = "max_bytes"
	DropMaxAge    = "max_age"
	DropDiskError = "disk_error"
	// DropCorrupt counts records that were committed but cannot be read
	// back: a damaged batch of the log or page of the file.
	DropCorrupt = "corrupt"
	// DropPowerCut counts the readings of a commit a power cut tore: taken
	// within commit_interval of the cut, never on flash (the window the
	// contract allows).
	DropPowerCut = "power_cut"
)

// ackCheckpoint is how many acknowledgements of records in bbolt make a
// checkpoint, so a drained backlog frees its space.
const ackCheckpoint = 20000

// Record is one committed entry.
type Record struct {
	Seq   uint64
	Data  []byte
	stamp int64 // buffer clock at append
}

// Options tune a Buffer. The zero value of a field means its default.
type Options struct {
	// CommitInterval is the longest an appended record waits in RAM; 250ms by default.
	CommitInterval time.Duration
	// MaxBytes bounds the records kept (data plus 16 bytes each); beyond it the
	// oldest are dropped at the next checkpoint. Between checkpoints the
	// buffer may exceed it by MaxBytes/16, at most 1 MiB. 128 MiB by default.
	MaxBytes int64
	// MaxAge drops records that have waited longer than this by the buffer
	// clock (time the buffer was open), checked at least every MaxAge/16
	// (at most a minute); 168h by default.
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
	// Now is the clock the buffer clock advances with; time.Now (whose
	// monotonic reading ignores clock steps) when nil.
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
	// OldestAge is how long the oldest record held has waited, by the
	// buffer clock; zero when empty.
	OldestAge time.Duration
	// Dropped counts records dropped, by reason (DropMaxBytes, DropMaxAge,
	// DropDiskError, DropCorrupt).
	Dropped map[string]uint64
	// FileSize is the size of the bbolt file on disk.
	FileSize int64
	// Checkpoints counts the transactions that moved the log into bbolt.
	Checkpoints uint64
}

type pendingRecord struct {
	stamp int64
	data  []byte
}

// Buffer is the durable FIFO. Append, Ack, Next, Committed and Stats are safe
// for concurrent use. Run commits on its own every commit interval; Close
// commits whatever is left.
type Buffer struct {
	path  string
	opts  Options
	log   *slog.Logger
	seqs  *seqFloor
	wal   *wal
	clock bufClock

	// dbMu guards db itself, which compaction and recovery replace: Next
	// holds it for reading, they for writing.
	dbMu sync.RWMutex
	db   *bolt.DB

	commitMu sync.Mutex // one commit, checkpoint or compaction at a time

	mu           sync.Mutex
	pending      []pendingRecord
	pendingBytes int64
	tail         []Record // committed to the log, not yet to bbolt; seq order
	tailBytes    int64
	acks         map[uint64]struct{} // acknowledged, not yet applied to bbolt
	ackLog       []uint64            // acknowledged, not yet written to the log
	dbAcks       int                 // acks of records in bbolt
	dbCount      int
	dbBytes      int64
	dbOldest     int64  // stamp of bbolt's oldest record; 0 when none
	dbLast       uint64 // highest seq bbolt has accounted for
	gen          uint64 // raised whenever records move between tail and bbolt
	lastSeq      uint64
	dropped      map[string]uint64
	episodes     map[string]*episode
	notify       chan struct{} // closed and replaced at each commit that adds records
	closed       bool
	lastCompact  time.Time
	// compactLooked is gen+1 when maybeCompact last looked at the file's
	// size and found no reason to compact.
	compactLooked uint64
	checkpoints   uint64
	// After a failed checkpoint the next waits until checkpointRetry
	// (unless the log is full).
	checkpointFailures int
	checkpointRetry    time.Time
	commitErr          error // of the last commit; nil when it worked
	beat               beat.Beat
	// dbRead says records were read from bbolt since its mapped pages were
	// last released: a drained backlog leaves them resident.
	dbRead atomic.Bool
	// commitTimer fires Run's next commit at due (zero: not armed). It is
	// armed by whoever gives it work (Append, Ack, Run), under mu, so that a
	// reading or an acknowledgement does not wake Run only to set a timer:
	// Run wakes when the commit is due.
	commitTimer *time.Timer
	due         time.Time
	// flush asks Run to commit what waits now (AppendNow, or Ack once
	// ackBatch acknowledgements wait).
	flush     chan struct{}
	damage    error // damage found while running; Run stops
	reopenErr error // bbolt could not be reopened; Run stops
	// afterDBRead, when set (tests), runs in Next between reading bbolt
	// and reading the log's tail.
	afterDBRead func()
}

// Heartbeat returns when Run was last known alive: now while it waits, the
// start of a commit that hangs (a dying SD card can block fsync for good).
func (b *Buffer) Heartbeat() time.Time { return b.beat.Last() }

// wake tells Run through ch that something waits for a commit; it never blocks.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Acknowledgements ride in the next batch of readings, one sync for both.
// Alone they wait up to ackLinger (or four commit intervals, when that is
// longer), or until ackBatch of them wait: longer than the usual poll
// intervals, so that a reading every few seconds or minutes costs one
// commit, not two (its acknowledgement committed alone between readings),
// and a gateway that polls hourly sleeps between polls. A power cut costs
// at most that much resending, never a reading.
const (
	ackLinger = 10 * time.Minute
	ackBatch  = 1000
)

// ackWait is how long acknowledgements alone wait for a commit.
func (b *Buffer) ackWait() time.Duration { return max(ackLinger, 4*b.opts.CommitInterval) }

// Err returns why the last commit failed, nil when it worked: readings are
// waiting in RAM meanwhile.
func (b *Buffer) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.commitErr
}

// ErrClosed is returned by operations on a closed Buffer.
var ErrClosed = errors.New("buffer: closed")

// Append queues data for the next commit. The buffer keeps data; the caller
// must not change it afterwards.
func (b *Buffer) Append(data []byte) error { return b.append(data, false) }

// AppendNow is Append for a reading to be committed at once, with what
// waits, instead of within the commit interval: for a caller that knows no
// more readings come within the interval (the pollers, between rounds
// further apart than it), so that waiting would only delay the reading and
// wake the gateway twice. It does not wait for the commit.
func (b *Buffer) AppendNow(data []byte) error { return b.append(data, true) }

func (b *Buffer) append(data []byte, now bool) error {
	stamp := b.clock.stamp()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.pending = append(b.pending, pendingRecord{stamp: stamp, data: data})
	b.pendingBytes += recordSize(data)
	if now {
		// Not the timer: a timer stopped before it fires still wakes the
		// runtime when it would have.
		wake(b.flush)
	} else {
		b.armLocked(b.opts.CommitInterval)
	}
	return nil
}

// armLocked has the commit timer fire within d, unless it fires sooner
// already. b.mu is held.
func (b *Buffer) armLocked(d time.Duration) {
	if at := time.Now().Add(d); b.due.IsZero() || at.Before(b.due) {
		b.commitTimer.Reset(d)
		b.due = at
	}
}

// Ack marks a committed record as delivered: Next no longer returns it, the
// next commit makes that durable, and a checkpoint deletes it.
func (b *Buffer) Ack(seq uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ackLocked(seq)
	if len(b.ackLog) >= ackBatch {
		wake(b.flush) // a drained backlog: commit them now
		return
	}
	b.armLocked(b.ackWait())
}

// ackLocked records an acknowledgement. b.mu is held.
func (b *Buffer) ackLocked(seq uint64) {
	if _, dup := b.acks[seq]; dup || seq == 0 || seq > b.lastSeq {
		return
	}
	b.acks[seq] = struct{}{}
	b.ackLog = append(b.ackLog, seq)
	if seq <= b.dbLast {
		b.dbAcks++
	}
}

// LastSeq returns the seq of the newest committed record.
func (b *Buffer) LastSeq() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastSeq
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
	for {
		b.mu.Lock()
		dbLast, gen := b.dbLast, b.gen
		b.mu.Unlock()
		from := after
		if len(dst) > start {
			from = dst[len(dst)-1].Seq
		}
		if from < dbLast && len(dst)-start < limit {
			var err error
			if dst, err = b.nextFromDB(from, dbLast, limit-(len(dst)-start), dst); err != nil {
				return dst[:start], err
			}
			if len(dst) > start {
				from = dst[len(dst)-1].Seq
			}
		}
		if b.afterDBRead != nil {
			b.afterDBRead()
		}
		b.mu.Lock()
		if b.gen != gen {
			// A checkpoint moved the tail into bbolt meanwhile: what was
			// read stands, read on from there.
			b.mu.Unlock()
			continue
		}
		// The log's tail follows bbolt's records: seqs above dbLast.
		tail := b.tail
		i := sort.Search(len(tail), func(i int) bool { return tail[i].Seq > max(from, dbLast) })
		for ; i < len(tail) && len(dst)-start < limit; i++ {
			if _, acked := b.acks[tail[i].Seq]; !acked {
				dst = append(dst, tail[i])
			}
		}
		b.mu.Unlock()
		return dst, nil
	}
}

// nextFromDB reads up to limit records in (after, last] from bbolt,
// skipping those acknowledged but not yet deleted.
func (b *Buffer) nextFromDB(after, last uint64, limit int, dst []Record) ([]Record, error) {
	start := len(dst)
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], after+1)
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.db == nil {
		return dst, ErrClosed
	}
	b.dbRead.Store(true)
	err := safeTx(func() error {
		return b.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(readingsBucket).Cursor()
			for k, v := c.Seek(key[:]); k != nil && len(dst)-start < limit; k, v = c.Next() {
				seq := binary.BigEndian.Uint64(k)
				if seq > last {
					break
				}
				if len(k) != 8 || len(v) < 8 {
					return damaged(fmt.Errorf("malformed record %x", k))
				}
				b.mu.Lock()
				_, acked := b.acks[seq]
				b.mu.Unlock()
				if acked {
					continue
				}
				dst = append(dst, Record{
					Seq:   seq,
					stamp: int64(binary.BigEndian.Uint64(v)),
					Data:  append([]byte(nil), v[8:]...),
				})
			}
			return nil
		})
	})
	if err != nil {
		b.noteDamage(err)
		return dst, fmt.Errorf("buffer: read: %w", err)
	}
	return dst, nil
}

// Stats returns what the buffer holds now.
func (b *Buffer) Stats() Stats {
	now := b.clock.stamp()
	b.mu.Lock()
	st := Stats{
		Readings: b.dbCount + len(b.tail) - len(b.acks), Bytes: b.dbBytes + b.tailBytes,
		Pending: len(b.pending), LastSeq: b.lastSeq,
		Dropped: make(map[string]uint64, len(b.dropped)), Checkpoints: b.checkpoints,
	}
	if oldest := b.oldestLocked(); oldest != 0 {
		st.OldestAge = max(time.Duration(now-oldest), 0)
	}
	for k, v := range b.dropped {
		st.Dropped[k] = v
	}
	b.mu.Unlock()
	st.FileSize = fileSize(b.path)
	return st
}

// oldestLocked is the stamp of the oldest record held, 0 when none. b.mu is held.
func (b *Buffer) oldestLocked() int64 {
	if b.dbCount > 0 {
		return b.dbOldest
	}
	if len(b.tail) > 0 {
		return b.tail[0].stamp
	}
	return 0
}

// releaseDrained gives back the resident pages of bbolt's memory map once
// every record of it is acknowledged (a backlog read from it drained; live
// readings are in the log): they were read once, for the
// drain, and would stay in the process's memory (twice its steady size
// after a one-minute outage at 100 readings a second).
func (b *Buffer) releaseDrained() {
	if !b.dbRead.Load() {
		return
	}
	b.mu.Lock()
	unread := b.dbCount - b.dbAcks // bbolt's records not acknowledged yet
	b.mu.Unlock()
	if unread > 0 {
		return
	}
	b.commitMu.Lock() // no checkpoint: bbolt does not remap meanwhile
	defer b.commitMu.Unlock()
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.db != nil {
		b.dbRead.Store(false)
		releaseMapped(b.db, b.path)
	}
}

// ErrStopped is returned by Run when the buffer cannot go on: its file
// could not be reopened, or damage was found. The gateway must stop (and
// be restarted) rather than keep readings in RAM that nothing commits.
var ErrStopped = errors.New("buffer: stopped")

// Run commits appends within a commit interval of the first of them (at
// once after AppendNow), acknowledgements with them or, alone, within
// ackWait, until ctx ends, then commits once more; with nothing waiting it
// sleeps (its one timer armed by Append and Ack). A failing disk is logged
// once when it starts failing and once when it recovers; records wait in
// RAM meanwhile, and the commit is tried again every interval. Run returns
// early, with an error wrapping ErrStopped, only when the buffer cannot go
// on.
func (b *Buffer) Run(ctx context.Context) error {
	// MaxAge is checked (at a commit) at least this often, whatever comes.
	age := time.NewTicker(min(b.opts.MaxAge/16, time.Minute))
	defer age.Stop()
	failures := 0
	for {
		b.beat.Rest()
		select {
		case <-ctx.Done():
			b.beat.Work()
			return b.Commit()
		case <-b.flush:
		case <-b.commitTimer.C:
		case <-age.C:
		}
		// The commit is now: no timer fires for it later.
		b.mu.Lock()
		b.commitTimer.Stop()
		b.due = time.Time{}
		before := b.lastSeq
		b.mu.Unlock()
		b.beat.Work()
		err := b.Commit()
		b.releaseDrained()
		b.mu.Lock()
		switch {
		case err != nil || len(b.pending) > 0:
			b.armLocked(b.opts.CommitInterval) // again, or what came meanwhile
		case len(b.ackLog) > 0 || b.lastSeq > before:
			// The records just committed will be acknowledged: their
			// acks need no wake-up to arm the timer.
			b.armLocked(b.ackWait())
		}
		b.mu.Unlock()
		switch {
		case errors.Is(err, ErrClosed):
			return fmt.Errorf("%w: closed while running", ErrStopped)
		case err != nil && failures == 0:
			b.log.Error("buffer_write_failed", "path", b.path, "err", err, "hint", "check free space and the storage device; readings wait in RAM")
			failures++
		case err != nil:
			failures++
		case failures > 0:
			b.log.Info("buffer_write_recovered", "path", b.path, "failed_commits", failures)
			failures = 0
		}
		if err := b.damageFound(); err != nil {
			return err
		}
		if err == nil {
			if cerr := b.maybeCompact(); cerr != nil {
				return fmt.Errorf("%w: %w", ErrStopped, cerr)
			}
		}
	}
}
