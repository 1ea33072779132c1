package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
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
	b.mu.Unlock()

	if len(pending) > 0 {
		err := b.seqs.reserve(first + uint64(len(pending)))
		if err == nil {
			if b.wal.fits(len(pending), pendingBytes) {
				err = b.wal.append(pending, first)
			} else if now.Before(b.checkpointRetry) {
				err = ErrWALFull // and bbolt failed a moment ago: wait
			} else {
				// Too much for what is left of the log: straight to bbolt,
				// with the log's tail.
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
				b.checkpoint(now, nil)
			}
			return fmt.Errorf("buffer: commit: %w", err)
		}
		b.mu.Lock()
		for i, p := range pending {
			b.tail = append(b.tail, Record{Seq: first + uint64(i), Time: p.t, Data: p.data})
		}
		b.tailBytes += pendingBytes
		b.lastSeq = first + uint64(len(pending)) - 1
		b.mu.Unlock()
		b.signal()
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
	oldest := b.dbOldest
	if b.dbCount == 0 && len(b.tail) > 0 {
		oldest = b.tail[0].Time
	}
	slack := min(b.opts.MaxAge/16, time.Minute)
	return !oldest.IsZero() && now.Sub(oldest) > b.opts.MaxAge+slack
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
// drops MaxAge and MaxBytes call for, the seq counter and the next log
// epoch. Then the log starts over. b.commitMu is held.
func (b *Buffer) checkpoint(now time.Time, extra []pendingRecord) error {
	b.mu.Lock()
	tail := b.tail
	acks := make(map[uint64]struct{}, len(b.acks))
	ackList := make([]uint64, 0, len(b.acks))
	for s := range b.acks {
		acks[s] = struct{}{}
		ackList = append(ackList, s)
	}
	first := b.lastSeq + 1
	count, bytes := b.dbCount, b.dbBytes
	b.mu.Unlock()
	last := first - 1 + uint64(len(extra))
	newEpoch := b.wal.epoch + 1

	var res commitResult
	b.dbMu.RLock()
	if b.db == nil {
		b.dbMu.RUnlock()
		return ErrClosed
	}
	err := safeTx(func() error {
		return b.db.Update(func(tx *bolt.Tx) error {
			rb := tx.Bucket(readingsBucket)
			// Keys only ever grow: full pages halve the pages written.
			rb.FillPercent = 1.0
			var key [8]byte
			slices.Sort(ackList) // deletes in key order touch each page once
			for _, s := range ackList {
				binary.BigEndian.PutUint64(key[:], s)
				if v := rb.Get(key[:]); v != nil {
					count--
					bytes -= storedSize(v)
					if err := rb.Delete(key[:]); err != nil {
						return err
					}
				}
			}
			// One slab holds every new key and value: bbolt keeps them
			// until the transaction ends.
			size := 0
			for _, r := range tail {
				size += 16 + len(r.Data)
			}
			for _, p := range extra {
				size += 16 + len(p.data)
			}
			slab := make([]byte, 0, size)
			put := func(seq uint64, t time.Time, data []byte) error {
				at := len(slab)
				slab = binary.BigEndian.AppendUint64(slab, seq)
				slab = binary.BigEndian.AppendUint64(slab, uint64(t.UnixNano()))
				slab = append(slab, data...)
				count++
				bytes += recordSize(data)
				return rb.Put(slab[at:at+8], slab[at+8:])
			}
			for _, r := range tail {
				if _, acked := acks[r.Seq]; acked {
					continue // delivered before it ever reached bbolt
				}
				if err := put(r.Seq, r.Time, r.Data); err != nil {
					return err
				}
			}
			for i, p := range extra {
				if err := put(first+uint64(i), p.t, p.data); err != nil {
					return err
				}
			}
			if err := rb.SetSequence(max(last, rb.Sequence())); err != nil {
				return err
			}
			res = b.trim(rb, count, bytes, now)
			return tx.Bucket(metaBucket).Put(epochKey, binary.BigEndian.AppendUint64(nil, newEpoch))
		})
	})
	b.dbMu.RUnlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		// The log keeps taking commits meanwhile; retrying at every commit
		// would only churn a failing disk.
		b.checkpointFailures++
		b.checkpointRetry = now.Add(min(time.Second<<min(b.checkpointFailures, 6), time.Minute))
		return fmt.Errorf("buffer: checkpoint: %w", err)
	}
	b.checkpointFailures, b.checkpointRetry = 0, time.Time{}
	b.wal.reset(newEpoch)

	for s := range acks {
		delete(b.acks, s)
	}
	b.dbAcks = len(b.acks) // acks that came during the transaction
	b.tail = b.tail[len(tail):]
	if len(b.tail) == 0 {
		b.tail = nil
	}
	b.tailBytes = 0
	for _, r := range b.tail {
		b.tailBytes += recordSize(r.Data)
	}
	b.dbCount, b.dbBytes, b.dbOldest = res.count, res.bytes, res.oldest
	b.dbLast = max(b.dbLast, last)
	b.lastSeq = max(b.lastSeq, last)
	b.checkpoints++
	b.noteDrops(DropMaxBytes, res.droppedBytes, now)
	b.noteDrops(DropMaxAge, res.droppedAge, now)
	return nil
}

// commitResult is bbolt's state after a checkpoint.
type commitResult struct {
	count                    int
	bytes                    int64
	oldest                   time.Time
	droppedBytes, droppedAge seqRange
}

// trim drops from the front of rb what is older than MaxAge, then what
// exceeds MaxBytes, and returns the state left.
func (b *Buffer) trim(rb *bolt.Bucket, count int, bytes int64, now time.Time) commitResult {
	res := commitResult{count: count, bytes: bytes}
	cutoff := now.Add(-b.opts.MaxAge)
	c := rb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		t := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
		tooOld := t.Before(cutoff)
		if !tooOld && res.bytes <= b.opts.MaxBytes {
			res.oldest = t
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
	cerr := b.db.Close()
	b.db = nil
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
