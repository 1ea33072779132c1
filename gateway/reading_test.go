package gateway

import (
	"edgegw/drivers"

	"encoding/json"
	"math"
	"testing"
	"time"
)

func TestMessageJSON(t *testing.T) {
	r := &drivers.Reading{}
	r.Reset("meter1", time.Date(2026, 11, 22, 12, 0, 0, 123456789, time.FixedZone("CET", 3600)))
	r.Add(drivers.Value{Point: "voltage_l1", Kind: drivers.KindFloat32, F: float64(float32(230.1))})
	r.AddFloat("energy_total", 123450*0.01)
	r.Add(drivers.Value{Point: "count", Kind: drivers.KindUint, U: math.MaxUint64})
	r.Add(drivers.Value{Point: "delta", Kind: drivers.KindInt, I: -5})
	r.Add(drivers.Value{Point: "alarm", Kind: drivers.KindBool, B: false})
	r.Add(drivers.Value{Point: "serial", Kind: drivers.KindString, S: "A\"B\\C\n\x01\xff"})
	r.AddFloat("nan", math.NaN())
	r.Add(drivers.Value{Point: "inf", Kind: drivers.KindFloat32, F: math.Inf(1)})
	r.AddError("frequency", "modbus exception 2: illegal data address")

	entry := AppendEntry(nil, r)
	topic, payload, err := Message(nil, "edgegw/line3-pi", 1842, entry)
	if err != nil {
		t.Fatal(err)
	}
	if topic != "edgegw/line3-pi/meter1" {
		t.Errorf("topic %q", topic)
	}
	want := `{"seq":1842,"ts":"2026-11-22T11:00:00.123Z","device":"meter1","values":{"voltage_l1":230.1,"energy_total":1234.5,"count":18446744073709551615,"delta":-5,"alarm":false,"serial":"A\"B\\C\n\u0001\ufffd"},"errors":{"nan":"value is not a finite number: NaN","inf":"value is not a finite number: +Inf","frequency":"modbus exception 2: illegal data address"}}`
	if string(payload) != want {
		t.Errorf("payload\n got %s\nwant %s", payload, want)
	}
	var v map[string]any
	if err := json.Unmarshal(payload, &v); err != nil {
		t.Fatalf("payload is not JSON: %v", err)
	}
}

func TestMessageRejectsBadEntry(t *testing.T) {
	for _, e := range []string{"", "no-separator", "\n{}"} {
		if _, _, err := Message(nil, "p/g", 1, []byte(e)); err == nil {
			t.Errorf("entry %q: no error", e)
		}
	}
}

func TestEncodeAllocations(t *testing.T) {
	r := &drivers.Reading{}
	r.Reset("meter1", time.Now())
	for i := 0; i < 60; i++ {
		r.Add(drivers.Value{Point: "p", Kind: drivers.KindFloat32, F: 230.1})
	}
	buf := AppendEntry(nil, r)
	allocs := testing.AllocsPerRun(100, func() { buf = AppendEntry(buf[:0], r) })
	if allocs != 0 {
		t.Errorf("AppendEntry allocates %.0f times per reading into a reused buffer", allocs)
	}
}

// BenchmarkAppendEntry encodes a 60-point reading, as a three-phase meter makes.
func BenchmarkAppendEntry(b *testing.B) {
	r := &drivers.Reading{}
	r.Reset("meter1", time.Now())
	for i := 0; i < 60; i++ {
		r.Add(drivers.Value{Point: "voltage_l1", Kind: drivers.KindFloat32, F: 230.1})
	}
	buf := AppendEntry(nil, r)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEntry(buf[:0], r)
	}
	b.SetBytes(int64(len(buf)))
}
