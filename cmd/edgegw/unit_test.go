package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
	// verify also runs man for Documentation=: give it the pages the package installs.
	manDir := t.TempDir()
	gen := exec.Command("go", "run", "./scripts/manpage", "-out", manDir)
	gen.Dir = "../.."
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("scripts/manpage: %v %s", err, out)
	}
	for page, section := range map[string]string{"edgegw.1": "man1", "sensors.toml.5": "man5"} {
		os.MkdirAll(filepath.Join(manDir, section), 0o755)
		os.Rename(filepath.Join(manDir, page), filepath.Join(manDir, section, page))
	}
	verify := exec.Command(analyze, "verify", path)
	verify.Env = append(os.Environ(), "MANPATH="+manDir)
	out, err := verify.CombinedOutput()
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

// TestUnitDoesNotRestartABrokenConfig: systemd's RestartPreventExitStatus
// looks at the main process only. A config check in ExecStartPre failed
// outside it, so Restart=always started the unit again every RestartSec,
// forever (5 s apart, never reaching the start limit). run checks the
// config itself: its exit status for a broken config must be one the unit
// does not restart, with the problem and its line in the journal.
func TestUnitDoesNotRestartABrokenConfig(t *testing.T) {
	unit, err := os.ReadFile("../../scripts/edgegw.service")
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string][]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			settings[k] = append(settings[k], v)
		}
	}
	if pre := settings["ExecStartPre"]; len(pre) > 0 {
		t.Errorf("ExecStartPre=%s: its failure is not covered by RestartPreventExitStatus", pre)
	}
	bad := filepath.Join(t.TempDir(), "sensors.toml")
	os.WriteFile(bad, []byte("[gateway]\nid = \"gw\"\n[mqtt]\nbrokers = [\"tcp://127.0.0.1:1883\"]\nqos = 7\n"), 0o644)
	out, err := exec.Command(binary, "run", "-config", bad).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("run with a broken config: %v", err)
	}
	prevented := strings.Fields(strings.Join(settings["RestartPreventExitStatus"], " "))
	if !slices.Contains(prevented, strconv.Itoa(exit.ExitCode())) {
		t.Errorf("run exits %d on a broken config; the unit restarts all but %v", exit.ExitCode(), prevented)
	}
	if !strings.Contains(string(out), bad+":5: mqtt.qos") {
		t.Errorf("run does not name the file, line and key:\n%s", out)
	}
	if len(settings["MemoryMax"]) == 0 {
		t.Error("no MemoryMax: a leak could take the board's memory")
	}
	for _, group := range []string{"ttyS", "ttyUSB", "ttyACM", "ttyAMA", "ttySC", "ttymxc", "ttyO", "ttyLP"} {
		if !slices.Contains(settings["DeviceAllow"], "char-"+group+" rw") {
			t.Errorf("no DeviceAllow=char-%s rw", group)
		}
	}
}

// TestUsageNamesTheDefaultConfig: usage.txt (also edgegw(1)) says the
// default config path the code uses.
func TestUsageNamesTheDefaultConfig(t *testing.T) {
	if !strings.Contains(usageText, "The config defaults to "+defaultConfig+".") {
		t.Errorf("usage.txt does not name %s", defaultConfig)
	}
}
