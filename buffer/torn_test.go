package buffer

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"edgegw/internal/testlog"
)

// TestTornTailAndDamageInside: a log whose last batch is torn (a power cut
// during its commit) is reported once as such, at WARN, counted as
// power_cut; a log with a damaged batch followed by whole ones is reported
// once as damage, at ERROR with its seqs, counted as corrupt. Neither is
// reported or counted again at the next start, and no seq is reused.
func TestTornTailAndDamageInside(t *testing.T) {
	for _, tc := range []struct {
		name        string
		damage      int // which batch of three loses a body byte
		msg, absent string
		level       string
		reason      string
		lost        []uint64
		kept        int
	}{
		{"torn tail", 2, "msg=buffer_commit_torn", "msg=buffer_readings_lost", "level=WARN", DropPowerCut, []uint64{5, 6}, 4},
		{"damage inside", 1, "msg=buffer_readings_lost", "msg=buffer_commit_torn", "level=ERROR", DropCorrupt, []uint64{3, 4}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "buffer.db")
			b, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for batch := range 3 {
				for i := range 2 {
					b.Append([]byte(fmt.Sprintf("reading %d.%d", batch, i)))
				}
				if err := b.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			// The files as a power cut leaves them (a clean close would
			// checkpoint the log into bbolt).
			path = snapshot(t, path)
			_ = b.Close()
			damageBatch(t, path+".wal", tc.damage)

			logs := &testlog.Sink{}
			b, err = Open(path, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			out := logs.String()
			want := fmt.Sprintf("first_seq=%d last_seq=%d count=2", tc.lost[0], tc.lost[1])
			if !strings.Contains(out, tc.msg) || !strings.Contains(out, tc.level) || !strings.Contains(out, want) || strings.Contains(out, tc.absent) {
				t.Errorf("want %s at %s with %s, and no %s:\n%s", tc.msg, tc.level, want, tc.absent, out)
			}
			if tc.reason == DropPowerCut && strings.Contains(out, "level=ERROR") {
				t.Errorf("a torn tail logged at ERROR:\n%s", out)
			}
			if n := b.Stats().Dropped[tc.reason]; n != 2 {
				t.Errorf("dropped %s = %d, want 2", tc.reason, n)
			}
			if n := b.Stats().Readings; n != tc.kept {
				t.Errorf("%d readings kept, want %d", n, tc.kept)
			}
			lastSeq := b.Stats().LastSeq
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}

			again := &testlog.Sink{}
			b, err = Open(path, Options{Logger: slog.New(slog.NewTextHandler(again, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if s := again.String(); strings.Contains(s, "level=WARN") || strings.Contains(s, "level=ERROR") {
				t.Errorf("the next start reports again:\n%s", s)
			}
			if n := sumDropped(b.Stats().Dropped); n != 0 {
				t.Errorf("the next start counts %d drops again", n)
			}
			b.Append([]byte("after"))
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			if next := b.Stats().LastSeq; next <= lastSeq || next <= 6 {
				t.Errorf("the next reading got seq %d: a seq is reused", next)
			}
		})
	}
}

// damageBatch flips a byte in the body of the n-th batch (from 0) of the log.
func damageBatch(t *testing.T, walPath string, n int) {
	t.Helper()
	data, err := os.ReadFile(walPath)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(0)
	for i := 0; ; i++ {
		b, ok := decodeBatch(data, off, true)
		if !ok || !b.bodyOK {
			t.Fatalf("batch %d not found", n)
		}
		if i == n {
			data[b.end-1] ^= 0xff
			break
		}
		off = b.end
	}
	if err := os.WriteFile(walPath, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

// snapshot copies the buffer's files at path to a new directory, as they
// are now, and returns the copy's path.
func snapshot(t *testing.T, path string) string {
	t.Helper()
	dir := t.TempDir()
	for _, suffix := range []string{"", ".wal", ".seq"} {
		data, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(path)+suffix), data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, filepath.Base(path))
}
