package buffer

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"edgegw/internal/faultfs"
)

func open(t *testing.T, path string) *Buffer {
	t.Helper()
	return openChecked(t, path, Options{CommitInterval: 10 * time.Millisecond})
}

func seqs(recs []Record) []uint64 {
	var s []uint64
	for _, r := range recs {
		s = append(s, r.Seq)
	}
	return s
}

func TestAppendCommitNextAck(t *testing.T) {
	b := open(t, filepath.Join(t.TempDir(), "buffer.db"))
	defer b.Close()
	for i := range 5 {
		if err := b.Append([]byte(fmt.Sprintf("r%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if recs, _ := b.Next(0, 10, nil); len(recs) != 0 {
		t.Fatalf("uncommitted records visible: %v", seqs(recs))
	}
	if st := b.Stats(); st.Pending != 5 {
		t.Fatalf("pending %d", st.Pending)
	}
	committed := b.Committed()
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-committed:
	default:
		t.Fatal("Committed channel not closed by a commit")
	}
	recs, err := b.Next(0, 3, nil)
	if err != nil || fmt.Sprint(seqs(recs)) != "[1 2 3]" || string(recs[0].Data) != "r0" {
		t.Fatalf("Next(0,3) = %v, %v", seqs(recs), err)
	}
	recs, _ = b.Next(3, 10, nil)
	if fmt.Sprint(seqs(recs)) != "[4 5]" {
		t.Fatalf("Next(3) = %v", seqs(recs))
	}
	b.Ack(1)
	b.Ack(3)
	if recs, _ := b.Next(0, 10, nil); fmt.Sprint(seqs(recs)) != "[2 4 5]" {
		t.Fatalf("acked records still returned: %v", seqs(recs))
	}
	if err := b.Checkpoint(); err != nil { // acks are applied at checkpoints
		t.Fatal(err)
	}
	if st := b.Stats(); st.Readings != 3 || st.Bytes != 3*(2+recordOverhead) || st.LastSeq != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSeqKeptAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	b := open(t, path)
	b.Append([]byte("a"))
	b.Append([]byte("b"))
	if err := b.Close(); err != nil { // Close commits what is pending
		t.Fatal(err)
	}
	b = open(t, path)
	recs, _ := b.Next(0, 10, nil)
	if fmt.Sprint(seqs(recs)) != "[1 2]" {
		t.Fatalf("after reopen: %v", seqs(recs))
	}
	b.Ack(1)
	b.Ack(2)
	b.Commit()
	b.Close()
	// Even with the buffer empty, numbers are never reused.
	b = open(t, path)
	defer b.Close()
	if st := b.Stats(); st.Readings != 0 || st.LastSeq != 2 {
		t.Fatalf("stats after reopen: %+v", st)
	}
	b.Append([]byte("c"))
	b.Commit()
	recs, _ = b.Next(0, 10, nil)
	if fmt.Sprint(seqs(recs)) != "[3]" {
		t.Fatalf("seq reused: %v", seqs(recs))
	}
}

func TestRunCommitsOnTickAndStop(t *testing.T) {
	b := open(t, filepath.Join(t.TempDir(), "buffer.db"))
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	committed := b.Committed()
	b.Append([]byte("x"))
	select {
	case <-committed:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not commit within 5s at a 10ms interval")
	}
	b.Append([]byte("y"))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Readings != 2 || st.Pending != 0 {
		t.Fatalf("a stop must commit what is pending: %+v", st)
	}
}

// TestAppendNowCommitsNow: AppendNow commits the reading (and what waits
// with it) without waiting for the commit interval.
func TestAppendNowCommitsNow(t *testing.T) {
	b := openChecked(t, filepath.Join(t.TempDir(), "buffer.db"), Options{CommitInterval: time.Hour})
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	committed := b.Committed()
	b.AppendNow([]byte("x"))
	select {
	case <-committed:
	case <-time.After(5 * time.Second):
		t.Fatal("AppendNow did not commit within 5s (the interval is an hour)")
	}
	if st := b.Stats(); st.Readings != 1 || st.Pending != 0 {
		t.Fatalf("after AppendNow: %+v", st)
	}
	b.Ack(1)
	checkpoints := b.Stats().Checkpoints
	b.Append([]byte("y"))
	b.AppendNow([]byte("z"))
	deadline := time.Now().Add(5 * time.Second)
	// Pending empties when the commit takes the records, LastSeq moves
	// when it is done.
	for st := b.Stats(); st.Pending != 0 || st.LastSeq != 3; st = b.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("the second AppendNow did not commit: %+v", st)
		}
		time.Sleep(time.Millisecond) // polling the buffer's counters
	}
	if st := b.Stats(); st.Readings != 2 || st.Checkpoints != checkpoints {
		t.Errorf("after acking 1 and appending y, then z now: %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestAckRidesWithNextReading: at one reading every few commit intervals,
// committed at once as the pollers do and acknowledged soon after, each reading costs
// one commit: its acknowledgement rides in the next reading's batch instead
// of being committed alone just before it.
func TestAckRidesWithNextReading(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	b := openChecked(t, path, Options{CommitInterval: 10 * time.Millisecond})
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	const readings = 6
	pace := time.NewTicker(60 * time.Millisecond) // six commit intervals apart
	defer pace.Stop()
	for i := range readings {
		committed := b.Committed()
		if err := b.AppendNow([]byte(fmt.Sprintf("reading %d", i))); err != nil {
			t.Fatal(err)
		}
		select {
		case <-committed:
		case <-time.After(5 * time.Second):
			t.Fatalf("reading %d: AppendNow did not commit", i)
		}
		b.Ack(b.LastSeq()) // the broker's acknowledgement
		<-pace.C
	}
	data, err := os.ReadFile(path + ".wal")
	if err != nil {
		t.Fatal(err)
	}
	var batches, withAcks int
	for off := int64(0); ; batches++ {
		bt, ok := decodeBatch(data, off, true)
		if !ok || bt.epoch == 0 {
			break
		}
		if len(bt.acks) > 0 {
			withAcks++
		}
		off = bt.end
	}
	if batches != readings || withAcks != readings-1 {
		t.Errorf("%d readings, each acknowledged before the next: %d commits, %d with acknowledgements; want %d and %d",
			readings, batches, withAcks, readings, readings-1)
	}
}

// walAcks returns the acknowledgement ranges the log at path holds.
func walAcks(t *testing.T, path string) []seqRange {
	t.Helper()
	data, err := os.ReadFile(path + ".wal")
	if err != nil {
		t.Fatal(err)
	}
	var acks []seqRange
	for off := int64(0); ; {
		bt, ok := decodeBatch(data, off, true)
		if !ok || bt.epoch == 0 {
			return acks
		}
		acks = append(acks, bt.acks...)
		off = bt.end
	}
}

// TestAcksAloneWaitForABatch: acknowledgements with no reading to ride in
// are committed alone once ackBatch of them wait (a drained backlog), not
// only after the linger.
func TestAcksAloneWaitForABatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	b := openChecked(t, path, Options{CommitInterval: time.Hour})
	defer b.Close()
	for i := range ackBatch {
		if err := b.Append([]byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = b.Run(ctx) }()
	for seq := uint64(1); seq < ackBatch; seq++ {
		b.Ack(seq)
	}
	if acks := walAcks(t, path); len(acks) != 0 {
		t.Fatalf("%d acknowledgements alone were committed before the linger: %v", ackBatch-1, acks)
	}
	b.Ack(ackBatch)
	deadline := time.Now().Add(5 * time.Second)
	for {
		acks := walAcks(t, path)
		if len(acks) == 1 && acks[0].first == 1 && acks[0].last == ackBatch {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledgements waiting, the log holds %v after 5 s; want them committed at once", ackBatch, acks)
		}
		time.Sleep(time.Millisecond) // polling the log file
	}
}

func TestClosedBufferRefusesAppend(t *testing.T) {
	b := open(t, filepath.Join(t.TempDir(), "buffer.db"))
	b.Close()
	if err := b.Append([]byte("x")); err != ErrClosed {
		t.Fatalf("Append after Close: %v", err)
	}
}

func TestOpenTimesOutOnLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	b := open(t, path)
	defer b.Close()
	_, err := Open(path, Options{OpenTimeout: 50 * time.Millisecond})
	if err == nil {
		t.Fatal("a second Open of a locked buffer succeeded")
	}
}

// selfCommand runs this test binary again; under qemu-user without binfmt
// (make test's ARM pass) EDGEGW_TEST_EXEC names the emulator to run it with.
func selfCommand(args ...string) *exec.Cmd {
	if emu := os.Getenv("EDGEGW_TEST_EXEC"); emu != "" {
		return exec.Command(emu, append([]string{os.Args[0]}, args...)...)
	}
	return exec.Command(os.Args[0], args...)
}

// crashChildEnv makes the test binary act as a child that appends and acks
// until killed, printing the last committed seq after every commit.
const crashChildEnv = "EDGEGW_BUFFER_CRASH_CHILD"

func TestMain(m *testing.M) {
	faultfs.ServeIfAsked()
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	os.Exit(m.Run())
}

func crashChild(path string) {
	b, err := Open(path, Options{CompactMinSize: 1})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	var acked, durableAcked uint64
	for i := 0; ; i++ {
		for range 50 {
			b.Append([]byte(strings.Repeat("x", 200)))
		}
		if err := b.Commit(); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		// Ack the oldest few to have deletes in flight too.
		recs, _ := b.Next(acked, 10, nil)
		for _, r := range recs {
			b.Ack(r.Seq)
			acked = r.Seq
		}
		switch i % 4 {
		case 1: // acks are durable once checkpointed
			if err := b.Checkpoint(); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			durableAcked = acked
		case 3:
			if err := b.Compact(); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
		}
		fmt.Printf("committed %d acked %d\n", b.Stats().LastSeq, durableAcked)
	}
}

// TestKill9KeepsCommittedRecords kills a writer at random moments (appending,
// acking, committing or compacting): every
// record it saw committed must survive, seqs stay contiguous, and a record
// comes back after its ack only if the kill beat the ack's commit.
func TestKill9KeepsCommittedRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes itself")
	}
	path := filepath.Join(t.TempDir(), "buffer.db")
	for round := range 5 {
		cmd := selfCommand("-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var lastCommitted, lastAcked uint64
		// Kill after a varying number of commits, mid-way through the next.
		for n := 0; n < 3+round*7 && sc.Scan(); n++ {
			f := strings.Fields(sc.Text())
			if f[0] == "error" {
				t.Fatalf("child: %s", sc.Text())
			}
			lastCommitted, _ = strconv.ParseUint(f[1], 10, 64)
			lastAcked, _ = strconv.ParseUint(f[3], 10, 64)
		}
		cmd.Process.Kill()
		cmd.Wait()

		b := open(t, path)
		recs, err := b.Next(0, 1<<30, nil)
		if err != nil {
			t.Fatal(err)
		}
		st := b.Stats()
		if st.LastSeq < lastCommitted {
			t.Fatalf("round %d: last seq %d, but %d was reported committed", round, st.LastSeq, lastCommitted)
		}
		// Records left are exactly (some acked prefix, LastSeq]: contiguous.
		for i, r := range recs {
			if i > 0 && r.Seq != recs[i-1].Seq+1 {
				t.Fatalf("round %d: hole between seq %d and %d", round, recs[i-1].Seq, r.Seq)
			}
			if r.Seq <= lastAcked {
				t.Fatalf("round %d: seq %d is back although its ack was committed", round, r.Seq)
			}
		}
		if len(recs) == 0 || recs[len(recs)-1].Seq != st.LastSeq || len(recs) != st.Readings {
			t.Fatalf("round %d: %d records, stats %+v", round, len(recs), st)
		}
		b.Close()
	}
}
