package buffer

import (
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"edgegw/internal/faultfs"
	"edgegw/internal/testlog"
)

var crashStates = flag.Int("crash.states", 600, "power-cut states TestCrashStates opens (make fuzz raises it)")

// crashMark is what the workload knew when an operation returned.
type crashMark struct {
	committed uint64              // every seq up to it was reported committed
	durable   map[uint64]struct{} // acks that this operation made durable
}

// crashWorkload appends, commits, acknowledges (partly out of order),
// checkpoints and compacts, marking in the record what it was told.
func crashWorkload(t *testing.T, ffs *faultfs.FS, path string) (data map[uint64]string, acked map[uint64]struct{}, marks []crashMark) {
	data, acked = map[uint64]string{}, map[uint64]struct{}{}
	rng := rand.New(rand.NewPCG(7, 11))
	b, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// mark notes an operation that returned; makesAcksDurable: it wrote
	// the acks given before it (a commit, a checkpoint), not a compaction.
	mark := func(what string, makesAcksDurable bool) {
		durable := map[uint64]struct{}{}
		if n := len(marks); n > 0 {
			durable = marks[n-1].durable
		}
		if makesAcksDurable {
			durable = make(map[uint64]struct{}, len(acked))
			for s := range acked {
				durable[s] = struct{}{}
			}
		}
		marks = append(marks, crashMark{committed: b.Stats().LastSeq, durable: durable})
		ffs.Mark(fmt.Sprintf("%d %s", len(marks)-1, what))
	}
	var appended []string
	n := 0
	for round := range 36 {
		for range 1 + round%5 {
			n++
			// Some readings cross a 4 KiB block, most are small.
			d := fmt.Sprintf("reading-%d-", n) + strings.Repeat("x", []int{40, 200, 3000}[rng.IntN(3)])
			appended = append(appended, d)
			if err := b.Append([]byte(d)); err != nil {
				t.Fatal(err)
			}
		}
		first := b.Stats().LastSeq + 1
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		for i, d := range appended {
			data[first+uint64(i)] = d
		}
		appended = appended[:0]
		mark("commit", true)
		// Acknowledge a window of the oldest, in a shuffled order, and
		// leave some for later.
		recs, err := b.Next(0, 6, nil)
		if err != nil {
			t.Fatal(err)
		}
		rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
		for _, r := range recs[:rng.IntN(len(recs)+1)] {
			b.Ack(r.Seq)
			acked[r.Seq] = struct{}{}
		}
		switch round % 12 {
		case 5:
			if err := b.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			mark("checkpoint", true)
		case 10:
			if err := b.Compact(); err != nil {
				t.Fatal(err)
			}
			mark("compact", false)
		}
	}
	last := b.Stats().LastSeq
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	durable := make(map[uint64]struct{}, len(acked))
	for s := range acked {
		durable[s] = struct{}{}
	}
	marks = append(marks, crashMark{committed: last, durable: durable})
	ffs.Mark(fmt.Sprintf("%d close", len(marks)-1))
	return data, acked, marks
}

// TestCrashStates records every write and sync the buffer makes (through
// FUSE, bbolt's included), builds from the record the states a power cut
// can leave (what was synced, plus none, all, a prefix or a subset of the
// rest, the last write torn at a sector), and opens each: it must open,
// hold every committed reading not durably acknowledged with its own data,
// hold no reading whose acknowledgement was durable, leave no hole that an
// acknowledgement or an uncommitted batch does not explain, and number the
// next reading above every seq it ever reported committed.
func TestCrashStates(t *testing.T) {
	if testing.Short() {
		t.Skip("opens hundreds of states")
	}
	ffs := faultfs.Mount(t)
	ffs.Record(true)
	data, ackedEver, marks := crashWorkload(t, ffs, filepath.Join(ffs.Dir, "buffer.db"))
	ffs.Record(false)
	ops := ffs.Ops()
	t.Logf("%d operations recorded, %d readings", len(ops), len(data))

	scratch := t.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "crash"); err == nil {
		scratch = shm // states are written and read in RAM
		t.Cleanup(func() { os.RemoveAll(shm) })
	}
	rng := rand.New(rand.NewPCG(3, 5))
	kinds := []faultfs.Survivors{faultfs.None, faultfs.All, faultfs.Prefix, faultfs.Subset}
	violations, tornTails := 0, 0
	for i := range *crashStates {
		n := rng.IntN(len(ops) + 1)
		if i < 2*(len(ops)+1) && *crashStates >= 2*(len(ops)+1) {
			n = i / 2 // every point at least twice, then at random
		}
		keep := kinds[i%len(kinds)]
		var last crashMark
		for _, op := range ops[:n] {
			if op.Kind == faultfs.Mark {
				var idx int
				fmt.Sscan(op.Label, &idx)
				last = marks[idx]
			}
		}
		dir := filepath.Join(scratch, fmt.Sprint(i))
		os.Mkdir(dir, 0o750)
		if err := faultfs.WriteState(dir, faultfs.CrashState(ops, n, keep, rng)); err != nil {
			t.Fatal(err)
		}
		problem, torn := checkCrashState(filepath.Join(dir, "buffer.db"), data, ackedEver, last)
		tornTails += torn
		if problem != "" {
			violations++
			if violations <= 5 {
				t.Errorf("state %d (cut after %d of %d operations, %v survive): %s", i, n, len(ops), keep, problem)
			}
		}
		os.RemoveAll(dir)
	}
	if violations > 0 {
		t.Errorf("%d of %d states violate the promise", violations, *crashStates)
	}
	t.Logf("%d power-cut states opened twice and checked; %d had a torn commit at the log's end, reported once as such", *crashStates, tornTails)
}

// checkCrashState opens the buffer at path twice and says what is wrong,
// "" if nothing, and whether the first start found a torn commit. The
// first start may report the commit a cut tore (as such, never as damage:
// the workload damages nothing); the second, after a close without a new
// commit, must report and count nothing, and number above the first.
func checkCrashState(path string, data map[uint64]string, ackedEver map[uint64]struct{}, last crashMark) (string, int) {
	first := &testlog.Sink{}
	b, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(first, nil))})
	if err != nil {
		return fmt.Sprintf("first open: %v", err), 0
	}
	firstLast := b.Stats().LastSeq
	if err := b.Close(); err != nil {
		return fmt.Sprintf("first close: %v", err), 0
	}
	var problems []string
	torn := strings.Count(first.String(), "msg=buffer_commit_torn")
	if strings.Contains(first.String(), "msg=buffer_readings_lost") || strings.Contains(first.String(), "msg=buffer_dropping_oldest") {
		problems = append(problems, "a cut's torn commit reported as damage: "+first.String())
	}
	second := &testlog.Sink{}
	b, err = Open(path, Options{Logger: slog.New(slog.NewTextHandler(second, nil))})
	if err != nil {
		return fmt.Sprintf("second open: %v", err), torn
	}
	for _, again := range []string{"buffer_commit_torn", "buffer_readings_lost", "buffer_seqs_skipped", "buffer_dropping_oldest"} {
		if strings.Contains(second.String(), "msg="+again) {
			problems = append(problems, "the second start reports again: "+second.String())
			break
		}
	}
	if d := b.Stats().Dropped; len(d) > 0 && sumDropped(d) > 0 {
		problems = append(problems, fmt.Sprintf("the second start counts drops again: %v", d))
	}
	if b.Stats().LastSeq < firstLast {
		problems = append(problems, fmt.Sprintf("the second start's last seq %d is below the first's %d: a seq would be reused", b.Stats().LastSeq, firstLast))
	}
	recs, err := b.Next(0, 1<<20, nil)
	if err != nil {
		b.Close()
		return fmt.Sprintf("next: %v", err), torn
	}
	st := b.Stats()
	present := map[uint64]bool{}
	for _, r := range recs {
		present[r.Seq] = true
		if want, ok := data[r.Seq]; !ok || want != string(r.Data) {
			problems = append(problems, fmt.Sprintf("seq %d holds %.20q, was given to %.20q", r.Seq, r.Data, want))
		}
	}
	if st.LastSeq < last.committed {
		problems = append(problems, fmt.Sprintf("last seq %d, but %d was reported committed", st.LastSeq, last.committed))
	}
	for s := uint64(1); s <= max(st.LastSeq, last.committed); s++ {
		_, ackedAny := ackedEver[s]
		_, durable := last.durable[s]
		switch {
		case durable && present[s]:
			problems = append(problems, fmt.Sprintf("seq %d is back although its ack was durable", s))
		case s <= last.committed && !ackedAny && !present[s]:
			problems = append(problems, fmt.Sprintf("committed seq %d is gone", s))
		}
	}
	if st.Readings != len(recs) {
		problems = append(problems, fmt.Sprintf("stats say %d readings, Next gives %d", st.Readings, len(recs)))
	}
	b.Append([]byte("after the cut"))
	if err := b.Commit(); err != nil {
		problems = append(problems, fmt.Sprintf("commit after reopen: %v", err))
	}
	if next := b.Stats().LastSeq; next <= last.committed || next <= firstLast || present[next] {
		problems = append(problems, fmt.Sprintf("the next reading got seq %d (committed up to %d, first start's last %d)", next, last.committed, firstLast))
	}
	if err := b.Close(); err != nil {
		problems = append(problems, fmt.Sprintf("close: %v", err))
	}
	if err := checkIntegrity(path); err != nil {
		problems = append(problems, err.Error())
	}
	slices.Sort(problems)
	if len(problems) > 3 {
		problems = append(problems[:3], fmt.Sprintf("and %d more", len(problems)-3))
	}
	return strings.Join(problems, "; "), torn
}

func sumDropped(d map[string]uint64) uint64 {
	var n uint64
	for _, v := range d {
		n += v
	}
	return n
}
