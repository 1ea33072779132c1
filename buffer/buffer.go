// Package buffer is the durable FIFO that keeps every reading on flash until
// the broker has acknowledged it.
//
// It promises:
//   - A reading handed to Append is on disk within the commit interval, in one
//     bbolt transaction with everything else appended in that interval (one
//     fsync per batch, which is what keeps an SD card alive).
//   - Sequence numbers are assigned at commit, from bbolt's persistent bucket
//     sequence: contiguous, never reused, kept across restarts. A crash loses
//     only readings that never got a number.
//   - Records leave only by Ack (batched the same way), oldest first by Next.
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
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketName = []byte("readings")

// Record is one committed entry.
type Record struct {
	Seq  uint64
	Data []byte
}

// Options tune a Buffer. The zero value of a field means its default.
type Options struct {
	// CommitInterval is the longest an appended record waits in RAM; 250ms by default.
	CommitInterval time.Duration
	// Logger receives the buffer's events; slog.DiscardHandler when nil.
	Logger *slog.Logger
	// OpenTimeout bounds the wait for the file lock held by another
	// process; 5s by default.
	OpenTimeout time.Duration
}

// Stats describe what the buffer holds.
type Stats struct {
	// Readings is the number of committed, unacknowledged records.
	Readings int
	// Bytes is the size of their data.
	Bytes int64
	// Pending is the number of records appended but not yet committed.
	Pending int
	// LastSeq is the seq of the newest committed record (0 when none ever was).
	LastSeq uint64
}

// Buffer is the durable FIFO. Append, Ack, Next and Stats are safe for
// concurrent use; Run must be running for appends and acks to reach disk
// on their own, and Close commits whatever is left.
type Buffer struct {
	db       *bolt.DB
	log      *slog.Logger
	interval time.Duration

	mu       sync.Mutex
	pending  [][]byte            // appended, not committed
	acks     map[uint64]struct{} // acknowledged, not yet deleted
	count    int
	bytes    int64
	lastSeq  uint64
	notify   chan struct{} // closed and replaced at each commit of new records
	closed   bool
	commitMu sync.Mutex // one commit at a time
}

// Open opens or creates the buffer file at path, creating its directory.
func Open(path string, opts Options) (*Buffer, error) {
	if opts.CommitInterval <= 0 {
		opts.CommitInterval = 250 * time.Millisecond
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("buffer: %w", err)
	}
	db, err := bolt.Open(path, 0o640, &bolt.Options{
		Timeout: opts.OpenTimeout,
		// Keep the first mapping small: a Pi Zero has 512 MB and 32-bit
		// ARM has little address space to spare.
		InitialMmapSize: 1 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("buffer: open %s: %w", path, err)
	}
	b := &Buffer{
		db:       db,
		log:      opts.Logger,
		interval: opts.CommitInterval,
		acks:     map[uint64]struct{}{},
		notify:   make(chan struct{}),
	}
	err = db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketName)
		if err != nil {
			return err
		}
		b.lastSeq = bk.Sequence()
		return bk.ForEach(func(k, v []byte) error {
			b.count++
			b.bytes += int64(len(v))
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("buffer: read %s: %w", path, err)
	}
	return b, nil
}

// ErrClosed is returned by operations on a closed Buffer.
var ErrClosed = errors.New("buffer: closed")

// Append queues data for the next commit. The buffer keeps data; the caller
// must not change it afterwards.
func (b *Buffer) Append(data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.pending = append(b.pending, data)
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
func (b *Buffer) Next(after uint64, max int, dst []Record) ([]Record, error) {
	b.mu.Lock()
	acked := make(map[uint64]struct{}, len(b.acks))
	for s := range b.acks {
		acked[s] = struct{}{}
	}
	b.mu.Unlock()
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], after+1)
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketName).Cursor()
		for k, v := c.Seek(key[:]); k != nil && max > 0; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			if _, ok := acked[seq]; ok {
				continue
			}
			dst = append(dst, Record{Seq: seq, Data: append([]byte(nil), v...)})
			max--
		}
		return nil
	})
	if err != nil {
		return dst, fmt.Errorf("buffer: read: %w", err)
	}
	return dst, nil
}

// Stats returns what the buffer holds now.
func (b *Buffer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{Readings: b.count - len(b.acks), Bytes: b.bytes, Pending: len(b.pending), LastSeq: b.lastSeq}
}

// Run commits appends and acks every commit interval until ctx ends, then
// commits once more. It returns nil after a clean stop.
func (b *Buffer) Run(ctx context.Context) error {
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return b.Commit()
		case <-t.C:
			if err := b.Commit(); err != nil {
				// Issue-level handling of disk errors lives in Commit's
				// callers; keep the records in RAM and try again.
				b.log.Error("buffer_commit_failed", "err", err)
			}
		}
	}
}

// Commit writes pending appends and acks in one transaction now.
// On failure the appends stay pending for the next try.
func (b *Buffer) Commit() error {
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	pending := b.pending
	b.pending = nil
	acks := make([]uint64, 0, len(b.acks))
	for s := range b.acks {
		acks = append(acks, s)
	}
	b.mu.Unlock()
	if len(pending) == 0 && len(acks) == 0 {
		return nil
	}

	var last uint64
	var added, deleted int
	var addedBytes, deletedBytes int64
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketName)
		var key [8]byte
		for _, s := range acks {
			binary.BigEndian.PutUint64(key[:], s)
			v := bk.Get(key[:])
			if v == nil {
				continue // acknowledged twice
			}
			deleted++
			deletedBytes += int64(len(v))
			if err := bk.Delete(key[:]); err != nil {
				return err
			}
		}
		for _, data := range pending {
			seq, err := bk.NextSequence()
			if err != nil {
				return err
			}
			last = seq
			binary.BigEndian.PutUint64(key[:], seq)
			if err := bk.Put(key[:], data); err != nil {
				return err
			}
			added++
			addedBytes += int64(len(data))
		}
		return nil
	})

	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		b.pending = append(pending, b.pending...)
		return fmt.Errorf("buffer: commit: %w", err)
	}
	for _, s := range acks {
		delete(b.acks, s)
	}
	b.count += added - deleted
	b.bytes += addedBytes - deletedBytes
	if added > 0 {
		b.lastSeq = last
		close(b.notify)
		b.notify = make(chan struct{})
	}
	return nil
}

// Close commits what is pending and closes the file.
func (b *Buffer) Close() error {
	err := b.Commit()
	if errors.Is(err, ErrClosed) {
		return nil
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return errors.Join(err, b.db.Close())
}
