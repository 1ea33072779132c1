package board

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDetect(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "model")
	if p := Detect(model); p.Name != "generic" {
		t.Errorf("no model file: %s", p.Name)
	}
	os.WriteFile(model, []byte("Raspberry Pi 4 Model B Rev 1.4\x00"), 0o644)
	if p := Detect(model); p.Name != "raspberrypi" || p.Description != "Raspberry Pi 4 Model B Rev 1.4" {
		t.Errorf("pi: %+v", p)
	}
	os.WriteFile(model, []byte("Some Industrial Gateway\x00"), 0o644)
	if p := Detect(model); p.Name != "generic" {
		t.Errorf("other board: %s", p.Name)
	}
	if p := Select("raspberrypi"); p.Name != "raspberrypi" {
		t.Errorf("named: %s", p.Name)
	}
	for _, n := range Names() {
		if _, ok := Lookup(n); !ok {
			t.Errorf("Names lists %q but Lookup misses it", n)
		}
	}
}
