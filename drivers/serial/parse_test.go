package serial

import (
	"edgegw/drivers"

	"regexp"
	"testing"
)

func FuzzFraming(f *testing.F) {
	f.Add([]byte("T=1\nT=2\r\n\x00\xffpartial"), []byte("\n"), 0)
	f.Add([]byte{0xAA, 0x55, 1, 2, 3, 4, 5}, []byte(nil), 4)
	f.Fuzz(func(t *testing.T, buf, delim []byte, n int) {
		if n < 0 || n > 4096 {
			n = 0
		}
		if n == 0 && len(delim) == 0 {
			delim = []byte("\n")
		}
		total := len(buf)
		fr := framer{delim: delim, n: n, header: []byte{0xAA, 0x55}[:n%3], checksum: []string{"", "sum8", "xor8", "crc16"}[n%4]}
		if n > 0 && n <= len(fr.header)+2 {
			fr.n = 0
		}
		frames, rest := fr.split(buf, nil)
		size := len(rest)
		for _, f := range frames {
			size += len(f)
			if fr.n > 0 && len(f) != fr.n {
				t.Fatalf("fixed frame of %d bytes, want %d", len(f), fr.n)
			}
		}
		if size > total {
			t.Fatalf("frames and rest hold %d bytes of %d", size, total)
		}
	})
}

// FuzzParsers reads fields out of arbitrary frames with every parser and
// converts them to every type: no panic, whatever the sensor sends.
func FuzzParsers(f *testing.F) {
	f.Add([]byte("T=23.5,H=45;ALM=1"), "T")
	f.Add([]byte("12,ok,3.5"), "2")
	f.Add([]byte("WS1 T=-3.5C RH=81%"), "temp")
	re := regexp.MustCompile(`T=(?P<temp>-?[0-9.]+)C`)
	types := []string{"bool", "int16", "uint32", "int64", "float64", "string"}
	f.Fuzz(func(t *testing.T, frame []byte, name string) {
		for _, p := range []parser{kvParser{}, csvParser{}, regexParser{re}} {
			text, ok := p.field(frame, name)
			if !ok {
				continue
			}
			for _, typ := range types {
				pc := PointSpec{Name: "p", Type: typ, Scale: 1}
				value(&pc, text)
				pc.Scale = 0.1
				value(&pc, text)
			}
		}
	})
}

// BenchmarkParseLine frames and parses a kv and a csv line of 6 fields, as
// the driver does for each frame; reports lines per second and allocations.
func BenchmarkParseLine(b *testing.B) {
	for _, tc := range []struct {
		name   string
		p      parser
		line   string
		fields []string
	}{
		{"kv", kvParser{}, "T=23.5,H=45.2,P=1013.2,W=3.4,D=270,R=0.0\n", []string{"T", "H", "P", "W", "D", "R"}},
		{"csv", csvParser{}, "23.5,45.2,1013.2,3.4,270,0.0\n", []string{"0", "1", "2", "3", "4", "5"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := &sensor{parser: tc.p}
			for _, f := range tc.fields {
				s.cfg.Points = append(s.cfg.Points, PointSpec{Name: f, Field: f, Type: "float64", Scale: 1})
			}
			line := []byte(tc.line)
			fr := framer{delim: []byte("\n")}
			var frames [][]byte
			var r drivers.Reading
			b.ReportAllocs()
			for b.Loop() {
				frames, _ = fr.split(line, frames[:0])
				r.Reset("s", r.Time)
				s.parse(frames[0], &r)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
		})
	}
}
