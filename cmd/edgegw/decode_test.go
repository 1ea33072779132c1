package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestDecode: decode reads what Debian's gzip and zstd wrote (not our own
// compressor), detects the encoding from the bytes or takes it from
// -encoding, and prints one reading a line.
func TestDecode(t *testing.T) {
	batch := `[{"seq":1,"ts":"2026-11-24T10:00:00Z","device":"m","values":{"v":230.1},"errors":{}},{"seq":2,"ts":"2026-11-24T10:00:01Z","device":"m","values":{"v":230.4},"errors":{}}]`
	want := `{"seq":1,"ts":"2026-11-24T10:00:00Z","device":"m","values":{"v":230.1},"errors":{}}
{"seq":2,"ts":"2026-11-24T10:00:01Z","device":"m","values":{"v":230.4},"errors":{}}
`
	compressed := func(prog string) []byte {
		cmd := exec.Command(prog, "-c")
		cmd.Stdin = strings.NewReader(batch)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v (scripts/deps.sh test installs it)", prog, err)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		args []string
		msg  []byte
	}{
		{"plain", nil, []byte(batch)},
		{"zstd auto", nil, compressed("zstd")},
		{"gzip auto", nil, compressed("gzip")},
		{"zstd named", []string{"-encoding", "zstd"}, compressed("zstd")},
		{"gzip named", []string{"-encoding", "gzip"}, compressed("gzip")},
	} {
		var stdout, stderr bytes.Buffer
		if code := cmdDecode(tc.args, bytes.NewReader(tc.msg), &stdout, &stderr); code != exitOK || stdout.String() != want {
			t.Errorf("%s: exit %d, stdout:\n%s\nstderr: %s", tc.name, code, stdout.String(), stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := cmdDecode(nil, strings.NewReader(`{"seq":3,"values":{}}`), &stdout, &stderr); code != exitOK || stdout.String() != "{\"seq\":3,\"values\":{}}\n" {
		t.Errorf("a single reading: exit %d, %q %q", code, stdout.String(), stderr.String())
	}
	for _, tc := range []struct {
		args []string
		msg  string
		err  string
	}{
		{nil, "not json", "neither a reading"},
		{[]string{"-encoding", "zstd"}, batch, "zstd"},
		{[]string{"-encoding", "lz4"}, batch, `"lz4" is not none, gzip or zstd`},
		{[]string{"file.bin"}, batch, "read from stdin"},
	} {
		var stdout, stderr bytes.Buffer
		if code := cmdDecode(tc.args, strings.NewReader(tc.msg), &stdout, &stderr); code != exitFailure || !strings.Contains(stderr.String(), tc.err) {
			t.Errorf("%v %.20q: exit %d, stderr %q; want %q", tc.args, tc.msg, code, stderr.String(), tc.err)
		}
	}
}
