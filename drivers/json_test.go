package drivers

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestAppendJSONString: what it writes reads back as the same string (bad
// UTF-8 as U+FFFD), through the plain fast path and the escaping one.
func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "voltage_l1", "a b-c.d/e", `say "hi"`, `back\slash`, "line\nbreak\ttab\r", "\x00\x1f", "héllo °C", "bad\xffutf8", "<b>&</b>", "\x7f"} {
		out := AppendJSONString([]byte("x"), s)
		if out[0] != 'x' {
			t.Fatalf("%q: the prefix was overwritten", s)
		}
		var back string
		if err := json.Unmarshal(out[1:], &back); err != nil {
			t.Fatalf("%q: wrote %s, not a JSON string: %v", s, out[1:], err)
		}
		want := strings.ToValidUTF8(s, "\uFFFD")
		if back != want {
			t.Errorf("%q: wrote %s, reads back %q", s, out[1:], back)
		}
		if plainJSON(s) && string(out[1:]) != `"`+s+`"` {
			t.Errorf("%q: plain, but written as %s", s, out[1:])
		}
	}
}
