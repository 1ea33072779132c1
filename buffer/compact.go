package buffer

import (
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// bbolt never gives pages back to the file system: after a week-long outage
// drains, the file keeps its peak size. Compaction rewrites it with only
// what it holds, when that is under a quarter of the file.

// maybeCompact compacts when the file is large and mostly free, at most once
// per CompactEvery. Only a failure to reopen the file is returned.
func (b *Buffer) maybeCompact() error {
	now := b.opts.Now()
	b.mu.Lock()
	bytes, last, gen := b.dbBytes, b.lastCompact, b.gen
	// The file and what it holds change only when records move into or
	// out of it: after a commit to the log alone there is nothing to look at.
	looked := b.compactLooked == gen+1
	b.mu.Unlock()
	if looked || now.Sub(last) < b.opts.CompactEvery {
		return nil
	}
	fi, err := os.Stat(b.path)
	if err != nil || fi.Size() < b.opts.CompactMinSize || bytes*4 > fi.Size() {
		b.mu.Lock()
		b.compactLooked = gen + 1
		b.mu.Unlock()
		return nil
	}
	return b.Compact()
}

// Compact rewrites the buffer file to hold only its records. Appends wait in
// RAM meanwhile. If the rewrite fails the old file stays in use and nil is
// returned (it is logged); an error means the file could not be reopened.
func (b *Buffer) Compact() error {
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	b.mu.Lock()
	b.lastCompact = b.opts.Now()
	b.mu.Unlock()
	before := fileSize(b.path)
	tmp := b.path + ".compact"
	_ = os.Remove(tmp)
	dst, err := b.openBolt(tmp)
	if err != nil {
		b.log.Warn("buffer_compact_failed", "path", b.path, "err", err)
		return nil
	}
	b.dbMu.Lock()
	defer b.dbMu.Unlock()
	if b.db == nil {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return ErrClosed
	}
	err = safeTx(func() error { return bolt.Compact(dst, b.db, 8<<20) })
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		b.log.Warn("buffer_compact_failed", "path", b.path, "err", err)
		return nil
	}
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("buffer: compact: close %s: %w", b.path, err)
	}
	renameErr := os.Rename(tmp, b.path)
	if renameErr == nil {
		renameErr = syncDir(b.path)
	} else {
		_ = os.Remove(tmp)
	}
	db, err := b.openBolt(b.path)
	if err != nil {
		b.db = nil
		return fmt.Errorf("buffer: reopen %s after compaction: %w", b.path, err)
	}
	b.db = db
	if renameErr != nil {
		b.log.Warn("buffer_compact_failed", "path", b.path, "err", renameErr)
		return nil
	}
	b.log.Info("buffer_compacted", "path", b.path, "bytes_before", before, "bytes_after", fileSize(b.path))
	return nil
}
