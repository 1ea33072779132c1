package config

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"128MiB": 128 << 20, "2GB": 2e9, "1024": 1024, "1.5KiB": 1536, "10 MB": 10e6, "7B": 7} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "12XB", "1e30GB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q): no error", in)
		}
	}
}
