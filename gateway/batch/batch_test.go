package batch

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	doc := []byte(`[{"seq":1,"values":{"v":230.1}},{"seq":2,"values":{"v":230.2}}]`)
	for _, e := range []Encoding{None, Gzip, Zstd} {
		c, err := NewCompressor(e)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the encoder is reused between batches
			out, err := Decompress(c.Compress(nil, doc), e, 1<<10)
			if err != nil || !bytes.Equal(out, doc) {
				t.Errorf("%q: %q, %v", e, out, err)
			}
		}
	}
}

// TestDecompressBounded: a small message that inflates past the limit is
// refused without inflating it all.
func TestDecompressBounded(t *testing.T) {
	huge := bytes.Repeat([]byte{' '}, 64<<20)
	for _, e := range []Encoding{Gzip, Zstd} {
		c, _ := NewCompressor(e)
		bomb := c.Compress(nil, huge)
		if len(bomb) > 1<<20 {
			t.Fatalf("%s: %d bytes is no bomb", e, len(bomb))
		}
		if _, err := Decompress(bomb, e, 1<<20); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: %d bytes inflating to 64 MiB: err %v, want ErrTooLarge", e, len(bomb), err)
		}
	}
	if _, err := Decompress(huge[:2<<20], None, 1<<20); !errors.Is(err, ErrTooLarge) {
		t.Errorf("none: err %v", err)
	}
}

func TestReadings(t *testing.T) {
	for doc, want := range map[string]int{
		`[{"seq":1},{"seq":2}]`: 2,
		` {"seq":7} `:           1,
		`[]`:                    0,
	} {
		rs, err := Readings([]byte(doc))
		if err != nil || len(rs) != want {
			t.Errorf("%s: %d readings, %v; want %d", doc, len(rs), err, want)
		}
	}
	for _, doc := range []string{``, `[{"seq":1}`, `"x"`, `42`, `{"seq":`} {
		if _, err := Readings([]byte(doc)); err == nil {
			t.Errorf("%q accepted", doc)
		}
	}
}

func TestParseEncoding(t *testing.T) {
	for s, want := range map[string]Encoding{"": None, "none": None, "gzip": Gzip, "zstd": Zstd} {
		if got, err := ParseEncoding(s); err != nil || got != want {
			t.Errorf("%q: %q, %v", s, got, err)
		}
	}
	if _, err := ParseEncoding("br"); err == nil || !strings.Contains(err.Error(), "none, gzip or zstd") {
		t.Errorf("br: %v", err)
	}
}

// FuzzDecode: whatever arrives, decoding ends with readings or an error,
// never a panic, and never more than the limit.
func FuzzDecode(f *testing.F) {
	z, _ := NewCompressor(Zstd)
	g, _ := NewCompressor(Gzip)
	doc := []byte(`[{"seq":1,"values":{"v":1}}]`)
	f.Add(doc, "")
	f.Add(z.Compress(nil, doc), "zstd")
	f.Add(g.Compress(nil, doc), "gzip")
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0}, "zstd")
	f.Fuzz(func(t *testing.T, msg []byte, enc string) {
		e, err := ParseEncoding(enc)
		if err != nil {
			return
		}
		out, err := Decompress(msg, e, 1<<16)
		if err != nil {
			return
		}
		if len(out) > 1<<16 {
			t.Fatalf("%d bytes past the limit", len(out))
		}
		rs, err := Readings(out)
		for _, r := range rs {
			if err == nil && !json.Valid(r) {
				t.Fatalf("invalid reading %q", r)
			}
		}
	})
}
