package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Open opens or creates the buffer at path (with path.wal and path.seq beside
// it), creating its directory, and replays the log. It reads no records, so
// it takes the same time however many are held. A damaged file is salvaged
// (what can be read is kept, the file moved aside to path.corrupt-TIMESTAMP,
// what is lost logged and counted); seq numbers continue above any that can
// have been used. Errors that may pass wrap ErrUnavailable and change
// nothing; a file locked by another process is an error after OpenTimeout.
func Open(path string, opts Options) (*Buffer, error) {
	opts.setDefaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	b := &Buffer{
		path:     path,
		opts:     opts,
		log:      opts.Logger,
		acks:     map[uint64]struct{}{},
		dropped:  map[string]uint64{},
		episodes: map[string]*episode{},
		notify:   make(chan struct{}),
		flush:    make(chan struct{}, 1),
	}
	b.commitTimer = time.NewTimer(time.Hour)
	b.commitTimer.Stop()
	b.lastCompact = opts.Now()
	_ = os.Remove(path + ".compact") // left by a crash during compaction; the file itself is intact
	floor, err := openSeqFloor(path + ".seq")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	b.seqs = floor
	if err := b.open(); err != nil {
		_ = floor.close()
		return nil, err
	}
	return b, nil
}

// dbState is what bbolt's meta bucket says.
type dbState struct {
	epoch  uint64
	last   uint64 // the seq counter
	count  int
	bytes  int64
	oldest int64 // stamp of the first record; 0 when none
	clock  int64
}

// open opens the files and recovers the buffer's state.
func (b *Buffer) open() error {
	existed := fileSize(b.path) > 0
	_, verr := os.Stat(b.checkMarker())
	verify := verr == nil
	st, db, err := b.openDB(verify)
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("buffer: %s is locked by another process (is another edgegw running?): %w", b.path, err)
	}
	salvaged := false
	if err != nil && isDamage(err) {
		err = confirmDamage(b.path, err)
	}
	if err != nil && isDamage(err) {
		st, db, err = b.salvage(err)
		salvaged = true
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, b.path, err)
	}
	b.db = db
	w, walCreated, err := openWAL(b.path + ".wal")
	if err != nil {
		_ = db.Close()
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	b.wal = w
	// A new or salvaged bbolt file does not know the log's epoch: take
	// every batch the log has, then checkpoint them in.
	adopt := (!existed || salvaged) && !walCreated
	epoch := st.epoch
	if adopt {
		epoch = 0
	}
	rep, err := w.replay(epoch, st.last)
	if err != nil {
		return b.abandon(fmt.Errorf("%w: %w", ErrUnavailable, err))
	}
	b.dbCount, b.dbBytes, b.dbOldest, b.dbLast = st.count, st.bytes, st.oldest, st.last
	b.clock = startClock(max(st.clock, rep.clock), b.opts.Now)
	b.lastSeq = max(st.last, rep.maxSeq)
	for _, r := range rep.recs {
		b.tail = append(b.tail, Record{Seq: r.seq, Data: r.data, stamp: r.stamp})
		b.tailBytes += recordSize(r.data)
	}
	if err := b.replayAcks(rep.acks); err != nil {
		return b.abandon(fmt.Errorf("%w: %w", ErrUnavailable, err))
	}
	if !rep.onlyStale {
		b.ackLog = b.ackLog[:0] // they are in the log already
	}
	b.noteMissing(rep.lost, st.last, existed, walCreated, salvaged)
	b.noteTorn(rep.torn)
	if err := b.seqs.reserve(b.lastSeq); err != nil {
		return b.abandon(fmt.Errorf("%w: %w", ErrUnavailable, err))
	}
	// What was reported is stepped over once: a checkpoint takes the log's
	// readings into bbolt with a seq counter above the lost ones and starts
	// the log over, so the next start finds neither the torn batch nor the
	// damage again. Until it has returned, the next start reports the same.
	if adopt || rep.torn.n > 0 || len(rep.lost) > 0 {
		if err := b.Checkpoint(); err != nil {
			return b.abandon(fmt.Errorf("%w: %w", ErrUnavailable, err))
		}
	}
	if verify {
		_ = os.Remove(b.checkMarker())
		_ = syncDir(b.checkMarker())
	}
	return nil
}

// noteMissing logs and counts what the log lost to damage, says which
// file was missing, and, when anything was missing or damaged, moves
// numbering above every seq that can have been used.
func (b *Buffer) noteMissing(lost []seqRange, dbLast uint64, existed, walCreated, salvaged bool) {
	for _, r := range lost {
		b.noteLost(r, r.n, "a damaged or torn batch of the log")
	}
	switch {
	case !existed && !walCreated && !salvaged:
		b.log.Error("buffer_file_missing", "path", b.path, "first_seq_kept", firstSeq(b.tail),
			"hint", "readings that were only in the missing file are gone; those of its log are kept")
	case existed && walCreated:
		b.log.Error("buffer_log_missing", "path", b.path+".wal", "last_seq_kept", dbLast,
			"hint", "readings committed after the last checkpoint are gone")
	}
	if ceil := b.seqs.ceiling(); ceil > b.lastSeq && (salvaged || (walCreated && existed) || (!existed && ceil > 0)) {
		b.log.Error("buffer_seqs_skipped", "path", b.path, "first_seq", b.lastSeq+1, "last_seq", ceil,
			"reason", "a buffer file was missing or damaged: these seqs may have been given to readings that are gone; none is reused")
		b.lastSeq = ceil
	}
}

// replayAcks takes the acknowledgements the log holds for records still
// held (the log may also hold acks of records deleted since).
func (b *Buffer) replayAcks(acks []seqRange) error {
	held := func(seq uint64) bool {
		i := sort.Search(len(b.tail), func(i int) bool { return b.tail[i].Seq >= seq })
		return i < len(b.tail) && b.tail[i].Seq == seq
	}
	return safeTx(func() error {
		return b.db.View(func(tx *bolt.Tx) error {
			rb := tx.Bucket(readingsBucket)
			var key [8]byte
			for _, r := range acks {
				for s := r.first; s <= min(r.last, b.lastSeq); s++ {
					binary.BigEndian.PutUint64(key[:], s)
					if (s > b.dbLast && held(s)) || (s <= b.dbLast && rb.Get(key[:]) != nil) {
						b.ackLocked(s)
					}
				}
			}
			return nil
		})
	})
}

// confirmDamage checks bbolt's verdict: bbolt calls a file invalid when it
// cannot read its meta pages, whatever the reason. Only a file that reads
// without an error, all of it, is damaged; otherwise the read error is
// returned, and the file is left alone.
func confirmDamage(path string, verdict error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	buf := make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(buf)) {
		n, err := f.ReadAt(buf, off)
		if errors.Is(err, io.EOF) || (err == nil && n < len(buf)) {
			return verdict
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
	}
}

// firstSeq is the seq of the first record, 0 when none.
func firstSeq(recs []Record) uint64 {
	if len(recs) == 0 {
		return 0
	}
	return recs[0].Seq
}

// abandon closes what open opened and returns err.
func (b *Buffer) abandon(err error) error {
	_ = b.db.Close()
	_ = b.wal.close()
	return err
}

// noteLost counts n records lost in r to damage and logs the range. It is
// no episode of drops: nothing is being dropped, something was found gone.
func (b *Buffer) noteLost(r seqRange, n int, where string) {
	b.log.Error("buffer_readings_lost", "path", b.path, "first_seq", r.first, "last_seq", r.last, "count", n, "cause", where)
	b.dropped[DropCorrupt] += uint64(n)
}

// noteTorn reports the commit a power cut interrupted: the readings of the
// log's last batch, taken within commit_interval of the cut, were never on
// flash. Its seqs are skipped, never given to other readings.
func (b *Buffer) noteTorn(r seqRange) {
	if r.n == 0 {
		return
	}
	b.log.Warn("buffer_commit_torn", "path", b.path, "first_seq", r.first, "last_seq", r.last, "count", r.n,
		"cause", "the last commit before a power loss (or a reset) was being written: these readings, taken in the last commit_interval, were not on flash yet",
		"hint", "the loss the power-cut window allows; if the gateway did not lose power, the newest batch of the log was damaged since")
	b.dropped[DropPowerCut] += uint64(r.n)
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

// openDB opens the bbolt file, creating it when missing, and reads its
// meta bucket. With verify, or for a file of an earlier version without
// counters, it reads every record too.
func (b *Buffer) openDB(verify bool) (st dbState, db *bolt.DB, err error) {
	size := fileSize(b.path)
	if size > 0 && size < 2*int64(os.Getpagesize()) {
		return st, nil, damaged(fmt.Errorf("%d bytes is shorter than a bbolt file's meta pages", size))
	}
	err = safeTx(func() (err error) {
		db, err = b.openBolt(b.path)
		return err
	})
	if err != nil {
		return st, nil, err
	}
	err = safeTx(func() error {
		return db.Update(func(tx *bolt.Tx) error { return b.readMeta(tx, &st, size == 0, verify) })
	})
	if err != nil {
		_ = db.Close()
		return st, nil, err
	}
	if size == 0 {
		if err := syncDir(b.path); err != nil {
			_ = db.Close()
			return st, nil, err
		}
	}
	return st, db, nil
}

// readMeta reads (or, in a new file, writes) the meta bucket into st.
func (b *Buffer) readMeta(tx *bolt.Tx, st *dbState, isNew, verify bool) error {
	meta, rb := tx.Bucket(metaBucket), tx.Bucket(readingsBucket)
	if isNew {
		var err error
		if meta, err = tx.CreateBucket(metaBucket); err != nil {
			return err
		}
		if _, err = tx.CreateBucket(readingsBucket); err != nil {
			return err
		}
		st.epoch = 1
		return errors.Join(meta.Put(formatKey, []byte(format)), putU64(meta, epochKey, 1),
			putU64(meta, countKey, 0), putU64(meta, bytesKey, 0))
	}
	if meta == nil || rb == nil {
		return damaged(errors.New("not an edgegw buffer file (no meta or readings bucket)"))
	}
	if v := meta.Get(formatKey); string(v) != format {
		return damaged(fmt.Errorf("file format %q, want %q", v, format))
	}
	st.epoch, st.last = getU64(meta, epochKey, 1), rb.Sequence()
	st.clock = int64(getU64(meta, clockKey, 0))
	if k, v := rb.Cursor().First(); k != nil {
		if len(k) != 8 || len(v) < 8 {
			return damaged(fmt.Errorf("malformed record %x", k))
		}
		st.oldest = int64(binary.BigEndian.Uint64(v))
	}
	count, bytes := meta.Get(countKey), meta.Get(bytesKey)
	if !verify && len(count) == 8 && len(bytes) == 8 {
		st.count, st.bytes = int(binary.BigEndian.Uint64(count)), int64(binary.BigEndian.Uint64(bytes))
		return nil
	}
	// Count (and so check) every record: a file of an earlier version,
	// or damage was found while running.
	err := rb.ForEach(func(k, v []byte) error {
		if len(k) != 8 || len(v) < 8 {
			return damaged(fmt.Errorf("malformed record %x", k))
		}
		st.count++
		st.bytes += storedSize(v)
		st.clock = max(st.clock, int64(binary.BigEndian.Uint64(v)))
		return nil
	})
	if err != nil {
		return err
	}
	if verify {
		for cerr := range tx.Check() {
			return damaged(cerr)
		}
	}
	return errors.Join(putU64(meta, countKey, uint64(st.count)), putU64(meta, bytesKey, uint64(st.bytes)))
}

func putU64(bk *bolt.Bucket, key []byte, v uint64) error {
	return bk.Put(key, binary.BigEndian.AppendUint64(nil, v))
}

func getU64(bk *bolt.Bucket, key []byte, def uint64) uint64 {
	if v := bk.Get(key); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return def
}

// salvage moves a damaged file aside and starts a fresh one holding every
// record that could be read from it, with seq numbers going on above any
// the old file can have used; what could not be read is logged and counted.
func (b *Buffer) salvage(cause error) (dbState, *bolt.DB, error) {
	sv := readSalvage(b.path, b.seqs.ceiling())
	aside := b.path + ".corrupt-" + b.opts.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(b.path, aside); err != nil {
		return dbState{}, nil, fmt.Errorf("%s is damaged (%v) and cannot be moved aside: %w", b.path, cause, err)
	}
	if err := syncDir(b.path); err != nil {
		return dbState{}, nil, err
	}
	b.log.Error("buffer_file_replaced", "path", b.path, "moved_to", aside, "err", cause, "records_saved", len(sv.recs),
		"hint", "what could be read was kept; inspect or delete the old file")
	_, db, err := b.openDB(false)
	if err != nil {
		return dbState{}, nil, fmt.Errorf("start a fresh %s: %w", b.path, err)
	}
	var st dbState
	err = db.Update(func(tx *bolt.Tx) error {
		rb, meta := tx.Bucket(readingsBucket), tx.Bucket(metaBucket)
		rb.FillPercent = 1.0
		for _, r := range sv.recs {
			v := binary.BigEndian.AppendUint64(nil, uint64(r.stamp))
			if err := rb.Put(binary.BigEndian.AppendUint64(nil, r.Seq), append(v, r.Data...)); err != nil {
				return err
			}
			st.count++
			st.bytes += recordSize(r.Data)
			st.clock = max(st.clock, r.stamp)
		}
		if len(sv.recs) > 0 {
			st.oldest = sv.recs[0].stamp
		}
		st.last, st.epoch = sv.seq, 1
		return errors.Join(rb.SetSequence(st.last), putU64(meta, countKey, uint64(st.count)),
			putU64(meta, bytesKey, uint64(st.bytes)), putU64(meta, clockKey, uint64(st.clock)))
	})
	if err != nil {
		_ = db.Close()
		return dbState{}, nil, fmt.Errorf("start a fresh %s: %w", b.path, err)
	}
	for i, r := range sv.lost {
		n := r.n
		if sv.count >= 0 { // the file's own count says how many were lost
			n = 0
			if i == 0 {
				n = max(sv.count-len(sv.recs), 0)
			}
		}
		b.noteLost(r, n, "a damaged page of "+filepath.Base(aside))
	}
	return st, db, nil
}

// salvaged is what could be read from a damaged file.
type salvaged struct {
	recs  []Record
	seq   uint64     // its seq counter, or the highest seq seen
	count int        // its record count; -1 when unreadable
	lost  []seqRange // runs of seqs behind damaged pages
}

// readSalvage reads what it can from a damaged bbolt file: it walks the
// records, and where a page cannot be read, probes further and further
// ahead for the next readable one. ceiling bounds the seqs it probes.
func readSalvage(path string, ceiling uint64) (sv salvaged) {
	sv.count = -1
	var db *bolt.DB
	if safeTx(func() (err error) {
		db, err = bolt.Open(path, 0o640, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		return err
	}) != nil {
		if ceiling > 0 {
			sv.lost = append(sv.lost, seqRange{n: int(ceiling), first: 1, last: ceiling})
		}
		sv.seq = ceiling
		return sv
	}
	defer func() { _ = db.Close() }()
	_ = safeTx(func() error {
		return db.View(func(tx *bolt.Tx) error {
			if meta := tx.Bucket(metaBucket); meta != nil {
				if v := meta.Get(countKey); len(v) == 8 {
					sv.count = int(binary.BigEndian.Uint64(v))
				}
			}
			if rb := tx.Bucket(readingsBucket); rb != nil {
				sv.seq = rb.Sequence()
			}
			return nil
		})
	})
	upper := max(sv.seq, ceiling)
	from := uint64(1)
	for {
		err := safeTx(func() error {
			return db.View(func(tx *bolt.Tx) error {
				rb := tx.Bucket(readingsBucket)
				if rb == nil {
					return errors.New("no readings bucket")
				}
				c := rb.Cursor()
				for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, from)); k != nil; k, v = c.Next() {
					if len(k) != 8 || len(v) < 8 {
						return errors.New("malformed record")
					}
					seq := binary.BigEndian.Uint64(k)
					sv.recs = append(sv.recs, Record{Seq: seq, stamp: int64(binary.BigEndian.Uint64(v)), Data: append([]byte(nil), v[8:]...)})
					from = seq + 1
				}
				return nil
			})
		})
		if err == nil {
			break
		}
		next := probe(db, from, upper)
		last := upper
		if next > 0 {
			last = next - 1
		}
		if last >= from {
			sv.lost = append(sv.lost, seqRange{n: int(last - from + 1), first: from, last: last})
		}
		if next == 0 {
			break
		}
		from = next
	}
	if n := len(sv.recs); n > 0 {
		sv.seq = max(sv.seq, sv.recs[n-1].Seq)
	}
	return sv
}

// probe returns the first readable seq after from, looking 1, 2, 4 ...
// seqs ahead up to upper; 0 when none is found.
func probe(db *bolt.DB, from, upper uint64) uint64 {
	for step := uint64(1); from+step <= upper && step > 0; step *= 2 {
		var found uint64
		_ = safeTx(func() error {
			return db.View(func(tx *bolt.Tx) error {
				if k, _ := tx.Bucket(readingsBucket).Cursor().Seek(binary.BigEndian.AppendUint64(nil, from+step)); len(k) == 8 {
					found = binary.BigEndian.Uint64(k)
				}
				return nil
			})
		})
		if found > from {
			return found
		}
	}
	return 0
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
