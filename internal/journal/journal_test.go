package journal

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"testing"
)

func TestPrefixes(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewHandler(&buf, slog.LevelDebug, true)).With("component", "uplink")
	log.Error("mqtt_connect_failed", "broker", "tcp://b:1883")
	log.Warn("w")
	log.Info("i")
	log.Debug("d")
	want := "<3>level=ERROR msg=mqtt_connect_failed component=uplink broker=tcp://b:1883\n" +
		"<4>level=WARN msg=w component=uplink\n<6>level=INFO msg=i component=uplink\n<7>level=DEBUG msg=d component=uplink\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestIsJournal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	syscall.Fstat(int(f.Fd()), &st)
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !IsJournal(f) {
		t.Error("the named stream is not recognised")
	}
	if IsJournal(os.Stdin) {
		t.Error("another stream taken for the journal")
	}
	t.Setenv("JOURNAL_STREAM", "")
	if IsJournal(f) {
		t.Error("journal without JOURNAL_STREAM")
	}
}
