package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestSystemdUnit checks scripts/edgegw.service with systemd's own tools:
// verify must print nothing (it reports bad values only as warnings), and
// the offline security analysis must rate the hardening at least "OK".
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	unit, err := os.ReadFile("../../scripts/edgegw.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that the executables exist: point them at the test's build.
	dir := t.TempDir()
	path := filepath.Join(dir, "edgegw.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/bin/edgegw", binary)), 0o644)
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, _ = exec.Command(analyze, "security", "--offline=yes", path).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for edgegw.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level > 2.5 {
		t.Errorf("exposure level %.1f, want at most 2.5:\n%s", level, out)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "SupplementaryGroups=dialout", "StateDirectory=edgegw", "User=edgegw"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
}
