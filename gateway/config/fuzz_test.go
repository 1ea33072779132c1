package config_test

import (
	"edgegw/gateway"
	"edgegw/gateway/config"

	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseConfig feeds the loader arbitrary bytes: it must never panic, and
// every problem it reports must be a Error with a line in the file.
func FuzzParseConfig(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.toml")
	examples, _ := filepath.Glob("../../examples/*.toml")
	for _, s := range append(seeds, examples...) {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("[[device]]\n[[device.point]]\n[device]\n"))
	f.Add([]byte("a.b.c = 1\n[a]\n[a.b]\n"))
	f.Add([]byte("x = [1, [2, {a = 3}]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := gateway.ParseConfig("f.toml", data)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without error")
			}
			return
		}
		lines := strings.Count(string(data), "\n") + 1
		ces := config.Errors(err)
		if len(ces) == 0 {
			t.Fatalf("error without Error: %v", err)
		}
		for _, ce := range ces {
			if ce.File == "f.toml" && (ce.Line < 1 || ce.Line > lines) {
				t.Fatalf("line %d outside the file's %d lines: %v", ce.Line, lines, ce)
			}
		}
	})
}
