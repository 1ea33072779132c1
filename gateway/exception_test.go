package gateway

import (
	"strings"
	"testing"
	"time"

	"edgegw/drivers"
	"edgegw/gateway/config"
)

// poll runs one reading through e: values as name=float (or a drivers.Value),
// errors as name → message.
func poll(e *exception, at time.Time, conn uint64, values []drivers.Value, errs map[string]string) (full, send bool, got string) {
	var r drivers.Reading
	r.Reset("d", at)
	for _, v := range values {
		r.Add(v)
	}
	for p, msg := range errs {
		r.AddError(p, msg)
	}
	full, send = e.filter(&r, conn)
	var parts []string
	for _, v := range r.Values {
		parts = append(parts, v.Point+"="+v.String())
	}
	for _, pe := range r.Errors {
		parts = append(parts, pe.Point+"!"+pe.Err)
	}
	return full, send, strings.Join(parts, " ")
}

func f(point string, x float64) drivers.Value {
	return drivers.Value{Point: point, Kind: drivers.KindFloat, F: x}
}

func TestExceptionDeadbandBoundaries(t *testing.T) {
	dev := config.Device{FullEvery: config.Duration(time.Hour), Points: []config.Point{
		{Name: "v", Deadband: 0.5}, {Name: "p", DeadbandPercent: 1}, {Name: "n"}, {Name: "on"}, {Name: "s"}}}
	e := newException(dev)
	t0 := time.Unix(1e9, 0)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	full, _, got := poll(e, at(0), 1, []drivers.Value{f("v", 230), f("p", 1000), {Point: "n", Kind: drivers.KindInt, I: 7},
		{Point: "on", Kind: drivers.KindBool, B: true}, {Point: "s", Kind: drivers.KindString, S: "a"}}, nil)
	if !full || got != `v=230 p=1000 n=7 on=true s="a"` {
		t.Fatalf("first reading: full=%v %s", full, got)
	}
	steps := []struct {
		values []drivers.Value
		want   string
	}{
		{[]drivers.Value{f("v", 230.49)}, ""},                               // just below the deadband: not reported
		{[]drivers.Value{f("v", 230.5)}, "v=230.5"},                         // at it (from 230): reported
		{[]drivers.Value{f("v", 230.9)}, ""},                                // 0.4 from the last reported
		{[]drivers.Value{f("v", 231.2)}, "v=231.2"},                         // above it
		{[]drivers.Value{f("v", 2307*0.1)}, "v=230.7"},                      // at it, with the noise of scaling (0.49999999999997)
		{[]drivers.Value{f("p", 1009.99)}, ""},                              // 1% of 1000 is 10
		{[]drivers.Value{f("p", 1010)}, "p=1010"},                           // at 1%
		{[]drivers.Value{{Point: "n", Kind: drivers.KindInt, I: 7}}, ""},    // no change
		{[]drivers.Value{{Point: "n", Kind: drivers.KindInt, I: 8}}, "n=8"}, // no deadband: any change
		{[]drivers.Value{{Point: "on", Kind: drivers.KindBool, B: false}}, "on=false"},
		{[]drivers.Value{{Point: "s", Kind: drivers.KindString, S: "b"}}, `s="b"`},
	}
	for i, s := range steps {
		full, send, got := poll(e, at(i+1), 1, s.values, nil)
		if full || got != s.want || send != (s.want != "") {
			t.Errorf("step %d: full=%v send=%v %q, want %q", i, full, send, got, s.want)
		}
	}
}

func TestExceptionErrorsAndFullReadings(t *testing.T) {
	e := newException(config.Device{FullEvery: config.Duration(time.Minute), Points: []config.Point{{Name: "v", Deadband: 1}, {Name: "w", Deadband: 1}}})
	t0 := time.Unix(1e9, 0)
	both := []drivers.Value{f("v", 10), f("w", 20)}
	if full, _, _ := poll(e, t0, 1, both, nil); !full {
		t.Fatal("the first reading is not full")
	}
	if _, send, got := poll(e, t0.Add(time.Second), 1, both, nil); send {
		t.Errorf("nothing changed, yet %q", got)
	}
	// An error that appears is reported once; the value after it is reported at once.
	if _, _, got := poll(e, t0.Add(2*time.Second), 1, []drivers.Value{f("w", 20)}, map[string]string{"v": "timeout"}); got != "v!timeout" {
		t.Errorf("error appeared: %q", got)
	}
	if _, send, got := poll(e, t0.Add(3*time.Second), 1, []drivers.Value{f("w", 20)}, map[string]string{"v": "timeout"}); send {
		t.Errorf("the same error again: %q", got)
	}
	if _, _, got := poll(e, t0.Add(4*time.Second), 1, both, nil); got != "v=10" {
		t.Errorf("error cleared, same value: %q", got)
	}
	// A connect since the last full reading, or full_every, makes the next full.
	if full, _, got := poll(e, t0.Add(5*time.Second), 2, both, nil); !full || got != "v=10 w=20" {
		t.Errorf("after a reconnect: full=%v %q", full, got)
	}
	if full, _, _ := poll(e, t0.Add(64*time.Second), 2, both, nil); full {
		t.Error("full before full_every")
	}
	if full, _, got := poll(e, t0.Add(65*time.Second), 2, both, nil); !full || got != "v=10 w=20" {
		t.Errorf("at full_every: full=%v %q", full, got)
	}
}
