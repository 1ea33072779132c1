package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"edgegw/internal/backoff"
)

// Commit makes pending appends durable now, in one log write, and
// checkpoints when one is due. On failure the appends stay pending, as many
// as MaxPendingBytes allows.
func (b *Buffer) Commit() error {
	err := b.commit()
	if !errors.Is(err, ErrClosed) {
		b.mu.Lock()
		b.commitErr = err
		b.mu.Unlock()
	}
	return err
}

func (b *Buffer) commit() error {
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
	first := b.lastSeq + 1
	acks := ackRanges(b.ackLog)
	ackCount := len(b.ackLog)
	b.mu.Unlock()

	if len(pending) > 0 || len(acks) > 0 {
		err := b.seqs.reserve(first + uint64(len(pending)))
		if err == nil {
			if b.wal.fits(len(pending), pendingBytes, len(acks)) {
				err = b.wal.append(walRecords(pending, first), first, acks, b.clock.stamp())
			} else if now.Before(b.checkpointRetry) {
				err = ErrWALFull // and bbolt failed a moment ago: wait
			} else {
				// Too much for what is left of the log: straight to bbolt,
				// with the log's tail (and the acks, as deletes).
				err = b.checkpoint(now, pending)
				if err == nil {
					b.signal()
					return nil
				}
			}
		}
		if err != nil {
			b.mu.Lock()
			b.pending = append(pending, b.pending...)
			b.pendingBytes += pendingBytes
			b.boundPending(now)
			b.mu.Unlock()
			// A checkpoint deletes what acks cover and may fit where the
			// batch did not, freeing pages for the next commit.
			if b.checkpointDue(now, true) {
				_ = b.checkpoint(now, nil) // retried after a backoff; the commit error is the one to report
			}
			return fmt.Errorf("buffer: commit: %w", err)
		}
		b.mu.Lock()
		b.ackLog = append(b.ackLog[:0], b.ackLog[ackCount:]...)
		for i, p := range pending {
			b.tail = append(b.tail, Record{Seq: first + uint64(i), Data: p.data, stamp: p.stamp})
		}
		b.tailBytes += pendingBytes
		if len(pending) > 0 {
			b.lastSeq = first + uint64(len(pending)) - 1
		}
		b.mu.Unlock()
		if len(pending) > 0 {
			b.signal()
		}
	}
	var err error
	if b.checkpointDue(now, false) {
		err = b.checkpoint(now, nil)
	}
	b.mu.Lock()
	b.endQuietEpisodes(now)
	b.mu.Unlock()
	return err
}

// walRecords numbers pending records from first.
func walRecords(pending []pendingRecord, first uint64) []walRecord {
	out := make([]walRecord, len(pending))
	for i, p := range pending {
		out[i] = walRecord{seq: first + uint64(i), stamp: p.stamp, data: p.data}
	}
	return out
}

// ackRanges folds acknowledged seqs into sorted runs: acks come nearly in
// order, so a commit's acks are a range or two, a few bytes in the log.
func ackRanges(seqs []uint64) []seqRange {
	if len(seqs) == 0 {
		return nil
	}
	s := slices.Clone(seqs)
	slices.Sort(s)
	var out []seqRange
	for _, q := range s {
		if n := len(out); n > 0 && q <= out[n-1].last+1 {
			if q == out[n-1].last+1 {
				out[n-1].last = q
				out[n-1].n++
			}
			continue
		}
		out = append(out, seqRange{n: 1, first: q, last: q})
	}
	return out
}

func (b *Buffer) signal() {
	b.mu.Lock()
	close(b.notify)
	b.notify = make(chan struct{})
	b.mu.Unlock()
}

// checkpointDue tells whether the log should move into bbolt now: it is
// three quarters full, enough records in bbolt were acknowledged, or a limit
// is exceeded by more than its slack. acksOnly asks only the second question.
func (b *Buffer) checkpointDue(now time.Time, acksOnly bool) bool {
	stamp := b.clock.stamp()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dbAcks >= ackCheckpoint || (acksOnly && b.dbAcks > 0) {
		return true
	}
	if acksOnly || now.Before(b.checkpointRetry) {
		return false
	}
	if b.wal.off > walSize*3/4 {
		return true
	}
	// Acknowledged records count until they are deleted.
	if b.dbBytes+b.tailBytes > b.opts.MaxBytes+min(b.opts.MaxBytes/16, 1<<20) {
		return true
	}
	slack := min(b.opts.MaxAge/16, time.Minute)
	oldest := b.oldestLocked()
	return oldest != 0 && time.Duration(stamp-oldest) > b.opts.MaxAge+slack
}

// Checkpoint moves the log into bbolt now, applying acknowledgements and
// limits; Close does it too.
func (b *Buffer) Checkpoint() error {
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	return b.checkpoint(b.opts.Now(), nil)
}

// checkpoint writes, in one bbolt transaction: the deletes of acknowledged
// records, the log's unacknowledged tail and extra (numbered after it), the
// drops MaxAge and MaxBytes call for, the seq counter, the record count and
// bytes, the buffer clock and the next log epoch. Then the log starts over.
// b.commitMu is held.
func (b *Buffer) checkpoint(now time.Time, extra []pendingRecord) error {
	p := b.planCheckpoint(extra)
	b.dbMu.RLock()
	if b.db == nil {
		b.dbMu.RUnlock()
		return ErrClosed
	}
	var res commitResult
	b.dbRead.Store(true) // a write transaction reads the map's pages too
	err := safeTx(func() error {
		return b.db.Update(func(tx *bolt.Tx) (err error) {
			res, err = b.writeCheckpoint(tx, p)
			return err
		})
	})
	b.dbMu.RUnlock()
	if err != nil {
		b.noteDamage(err)
		b.checkpointFailed(now)
		return fmt.Errorf("buffer: checkpoint: %w", err)
	}
	b.checkpointDone(p, res, now)
	return nil
}

// checkpointPlan is what a checkpoint moves, taken under b.mu.
type checkpointPlan struct {
	tail        []Record
	extra       []pendingRecord
	acks        map[uint64]struct{}
	ackList     []uint64 // sorted: deletes in key order touch each page once
	ackLogged   int      // acks in b.ackLog that the checkpoint covers
	first, last uint64   // seqs of extra
	stamp       int64
	newEpoch    uint64
}

func (b *Buffer) planCheckpoint(extra []pendingRecord) *checkpointPlan {
	p := &checkpointPlan{extra: extra, stamp: b.clock.stamp(), newEpoch: b.wal.epoch + 1}
	b.mu.Lock()
	defer b.mu.Unlock()
	p.tail = b.tail
	p.acks = make(map[uint64]struct{}, len(b.acks))
	p.ackList = make([]uint64, 0, len(b.acks))
	for s := range b.acks {
		p.acks[s] = struct{}{}
		p.ackList = append(p.ackList, s)
	}
	slices.Sort(p.ackList)
	p.ackLogged = len(b.ackLog)
	p.first = b.lastSeq + 1
	p.last = p.first - 1 + uint64(len(extra))
	return p
}

// writeCheckpoint is the checkpoint's bbolt transaction.
func (b *Buffer) writeCheckpoint(tx *bolt.Tx, p *checkpointPlan) (commitResult, error) {
	rb, meta := tx.Bucket(readingsBucket), tx.Bucket(metaBucket)
	// Keys only ever grow: full pages halve the pages written.
	rb.FillPercent = 1.0
	// The counters are adjusted by what the file holds, not by what RAM
	// believes: a checkpoint whose sync failed may have landed.
	count, bytes := int(getU64(meta, countKey, 0)), int64(getU64(meta, bytesKey, 0))
	var key [8]byte
	for _, s := range p.ackList {
		binary.BigEndian.PutUint64(key[:], s)
		if v := rb.Get(key[:]); v != nil {
			count--
			bytes -= storedSize(v)
			if err := rb.Delete(key[:]); err != nil {
				return commitResult{}, err
			}
		}
	}
	// One slab holds every new key and value: bbolt keeps them until the
	// transaction ends.
	size := 0
	for _, r := range p.tail {
		size += 16 + len(r.Data)
	}
	for _, r := range p.extra {
		size += 16 + len(r.data)
	}
	slab := make([]byte, 0, size)
	put := func(seq uint64, stamp int64, data []byte) error {
		at := len(slab)
		slab = binary.BigEndian.AppendUint64(slab, seq)
		slab = binary.BigEndian.AppendUint64(slab, uint64(stamp))
		slab = append(slab, data...)
		if old := rb.Get(slab[at : at+8]); old != nil {
			count--
			bytes -= storedSize(old)
		}
		count++
		bytes += recordSize(data)
		return rb.Put(slab[at:at+8], slab[at+8:])
	}
	for _, r := range p.tail {
		if _, acked := p.acks[r.Seq]; acked {
			continue // delivered before it ever reached bbolt
		}
		if err := put(r.Seq, r.stamp, r.Data); err != nil {
			return commitResult{}, err
		}
	}
	for i, r := range p.extra {
		if err := put(p.first+uint64(i), r.stamp, r.data); err != nil {
			return commitResult{}, err
		}
	}
	if err := rb.SetSequence(max(p.last, rb.Sequence())); err != nil {
		return commitResult{}, err
	}
	res := b.trim(rb, count, bytes, p.stamp)
	return res, errors.Join(putU64(meta, countKey, uint64(res.count)), putU64(meta, bytesKey, uint64(res.bytes)),
		putU64(meta, clockKey, uint64(p.stamp)), putU64(meta, epochKey, p.newEpoch))
}

// checkpointDone moves the buffer's state on after a checkpoint landed.
func (b *Buffer) checkpointDone(p *checkpointPlan, res commitResult, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.checkpointFailures, b.checkpointRetry = 0, time.Time{}
	b.wal.reset(p.newEpoch)
	for s := range p.acks {
		delete(b.acks, s)
	}
	// Acks that came during the transaction go into the new epoch's log.
	b.ackLog = append(b.ackLog[:0], b.ackLog[p.ackLogged:]...)
	b.dbAcks = len(b.acks)
	b.tail = b.tail[len(p.tail):]
	if len(b.tail) == 0 {
		b.tail = nil
	}
	b.tailBytes = 0
	for _, r := range b.tail {
		b.tailBytes += recordSize(r.Data)
	}
	b.dbCount, b.dbBytes, b.dbOldest = res.count, res.bytes, res.oldest
	b.dbLast = max(b.dbLast, p.last)
	b.lastSeq = max(b.lastSeq, p.last)
	b.gen++
	b.checkpoints++
	b.noteDrops(DropMaxBytes, res.droppedBytes, now)
	b.noteDrops(DropMaxAge, res.droppedAge, now)
}

// checkpointBackoff paces checkpoints after failures.
var checkpointBackoff = backoff.Policy{First: 2 * time.Second, Max: time.Minute}

// checkpointFailed backs the next checkpoint off and reopens bbolt: after a
// failed sync the file's pages in RAM may differ from the disk, and bbolt's
// own idea of its free pages may be wrong. Reopened (its cache dropped), it
// says whether the transaction landed; the log is kept either way, and its
// replay skips what bbolt already holds. b.commitMu is held.
func (b *Buffer) checkpointFailed(now time.Time) {
	b.mu.Lock()
	b.checkpointFailures++
	// The log keeps taking commits meanwhile; retrying at every commit
	// would only churn a failing disk.
	b.checkpointRetry = now.Add(checkpointBackoff.Delay(b.checkpointFailures))
	b.mu.Unlock()
	b.dbMu.Lock()
	defer b.dbMu.Unlock()
	if b.db == nil {
		return
	}
	if err := b.db.Close(); err != nil {
		b.log.Warn("buffer_reopen_failed", "path", b.path, "err", err)
	}
	b.db = nil
	if f, err := os.Open(b.path); err == nil {
		dropCache(f)
		_ = f.Close()
	}
	var st dbState
	db, err := b.openBolt(b.path)
	if err == nil {
		err = safeTx(func() error { return db.View(func(tx *bolt.Tx) error { return b.readMeta(tx, &st, false, false) }) })
		if err != nil {
			_ = db.Close()
		}
	}
	if err != nil {
		// Run stops on this: nothing can be checkpointed or read.
		b.mu.Lock()
		b.reopenErr = fmt.Errorf("reopen %s after a failed checkpoint: %w", b.path, err)
		b.mu.Unlock()
		return
	}
	b.db = db
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dbCount, b.dbBytes, b.dbOldest = st.count, st.bytes, st.oldest
	if st.last > b.dbLast {
		// It landed: the tail up to st.last is in bbolt now.
		i := sort.Search(len(b.tail), func(i int) bool { return b.tail[i].Seq > st.last })
		for _, r := range b.tail[:i] {
			b.tailBytes -= recordSize(r.Data)
		}
		b.tail = b.tail[i:]
		b.dbLast = st.last
		b.gen++
	}
	b.dbAcks = 0
	for s := range b.acks {
		if s <= b.dbLast {
			b.dbAcks++
		}
	}
}

// commitResult is bbolt's state after a checkpoint.
type commitResult struct {
	count                    int
	bytes                    int64
	oldest                   int64
	droppedBytes, droppedAge seqRange
}

// trim drops from the front of rb what is older than MaxAge by the buffer
// clock (now), then what exceeds MaxBytes, and returns the state left.
func (b *Buffer) trim(rb *bolt.Bucket, count int, bytes int64, now int64) commitResult {
	res := commitResult{count: count, bytes: bytes}
	cutoff := now - int64(b.opts.MaxAge)
	c := rb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		stamp := int64(binary.BigEndian.Uint64(v))
		tooOld := stamp < cutoff
		if !tooOld && res.bytes <= b.opts.MaxBytes {
			res.oldest = stamp
			break
		}
		seq := binary.BigEndian.Uint64(k)
		if tooOld {
			res.droppedAge.add(seq)
		} else {
			res.droppedBytes.add(seq)
		}
		res.count--
		res.bytes -= storedSize(v)
		if c.Delete() != nil {
			break // the transaction fails and reports it
		}
	}
	return res
}

// boundPending drops the oldest records waiting in RAM beyond MaxPendingBytes.
// b.mu is held.
func (b *Buffer) boundPending(now time.Time) {
	var dropped seqRange
	i := 0
	for b.pendingBytes > b.opts.MaxPendingBytes && i < len(b.pending) {
		b.pendingBytes -= recordSize(b.pending[i].data)
		dropped.n++ // never numbered: the range stays 0-0
		i++
	}
	b.pending = b.pending[i:]
	b.noteDrops(DropDiskError, dropped, now)
}

// Close commits what is pending, checkpoints, and closes the files.
func (b *Buffer) Close() error {
	err := b.Commit()
	if errors.Is(err, ErrClosed) {
		return nil
	}
	if err == nil {
		err = b.Checkpoint()
	}
	b.mu.Lock()
	b.closed = true
	if n := len(b.pending); n > 0 {
		b.noteDrops(DropDiskError, seqRange{n: n}, b.opts.Now())
		b.log.Error("buffer_closed_with_unwritten_readings", "count", n, "err", err)
	}
	for reason, e := range b.episodes {
		if e.active {
			b.endEpisode(reason, e)
		}
	}
	b.mu.Unlock()
	b.dbMu.Lock()
	defer b.dbMu.Unlock()
	var cerr error
	if b.db != nil { // nil when a reopen failed
		cerr = b.db.Close()
		b.db = nil
	}
	return errors.Join(err, cerr, b.wal.close(), b.seqs.close())
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

// endQuietEpisodes logs the end of episodes without drops for episodeQuiet. b.mu is held.
func (b *Buffer) endQuietEpisodes(now time.Time) {
	for reason, e := range b.episodes {
		if e.active && now.Sub(e.lastDrop) > episodeQuiet {
			b.endEpisode(reason, e)
		}
	}
}

// noteDrops counts drops and logs the start of each episode. b.mu is held.
func (b *Buffer) noteDrops(reason string, r seqRange, now time.Time) {
	if r.n == 0 {
		return
	}
	e := b.episodes[reason]
	if e == nil {
		e = &episode{}
		b.episodes[reason] = e
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
