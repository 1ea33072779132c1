package buffer

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// checkIntegrity verifies a closed buffer file as bbolt's own test helpers
// do: bbolt's consistency check, plus what this package adds: the meta
// counters match the records, keys are seqs no higher than the counter.
func checkIntegrity(path string) error {
	db, err := bolt.Open(path, 0o640, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("integrity: open %s: %w", path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("integrity: bbolt check of %s: %w", path, err)
		}
		meta, rb := tx.Bucket(metaBucket), tx.Bucket(readingsBucket)
		if meta == nil || rb == nil {
			return fmt.Errorf("integrity: %s has no meta or readings bucket", path)
		}
		var count, bytes int64
		var prev uint64
		err := rb.ForEach(func(k, v []byte) error {
			seq := binary.BigEndian.Uint64(k)
			if len(k) != 8 || len(v) < 8 || seq <= prev || seq > rb.Sequence() {
				return fmt.Errorf("integrity: record %x after seq %d (counter %d)", k, prev, rb.Sequence())
			}
			prev = seq
			count++
			bytes += storedSize(v)
			return nil
		})
		if err != nil {
			return err
		}
		if c, b := getU64(meta, countKey, 0), getU64(meta, bytesKey, 0); int64(c) != count || int64(b) != bytes {
			return fmt.Errorf("integrity: meta says %d records, %d bytes; the file holds %d, %d", c, b, count, bytes)
		}
		return nil
	})
}

// openChecked opens a buffer whose file is checked when the test ends
// (after the test closed it).
func openChecked(t testing.TB, path string, opts Options) *Buffer {
	t.Helper()
	b, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		if err := checkIntegrity(path); err != nil {
			t.Error(err)
		}
	})
	return b
}
