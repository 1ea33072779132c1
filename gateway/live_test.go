package gateway

import (
	"testing"
	"time"

	"edgegw/drivers"
	"edgegw/gateway/config"
)

// TestLiveLending: readings lent to a snapshot are never written again;
// while nobody takes snapshots, keeping readings allocates nothing.
func TestLiveLending(t *testing.T) {
	l := newLiveDevice(config.Device{Name: "m", Points: []config.Point{{Name: "v", Unit: "V"}}})
	l.keep([]byte(`"n":1}`))
	l.keep([]byte(`"n":2}`))
	d := l.snapshot(nil, true)
	if string(d.Reading) != `{"n":2}` || string(d.Previous) != `{"n":1}` || string(d.PointsJSON) != `[{"name":"v","unit":"V"}]` {
		t.Fatalf("snapshot: %s %s %s", d.Reading, d.Previous, d.PointsJSON)
	}
	for i := 3; i < 6; i++ {
		l.keep([]byte(`"n":` + string(rune('0'+i)) + `}`))
	}
	if string(d.Reading) != `{"n":2}` || string(d.Previous) != `{"n":1}` {
		t.Errorf("lent readings were written over: %s %s", d.Reading, d.Previous)
	}
	if allocs := testing.AllocsPerRun(100, func() { l.keep([]byte(`"n":9}`)) }); allocs != 0 {
		t.Errorf("keep allocates %.0f times a reading while nobody watches", allocs)
	}
}

// TestLiveFailing: a device is failing from the first poll that read no
// point, and its points keep their last values.
func TestLiveFailing(t *testing.T) {
	l := newLiveDevice(config.Device{Name: "m", Points: []config.Point{{Name: "v"}}})
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	var r drivers.Reading
	r.Reset("m", t0)
	r.AddFloat("v", 230)
	l.note(&r, t0, time.Millisecond)
	for i := 1; i <= 2; i++ {
		r.Reset("m", t0.Add(time.Duration(i)*time.Second))
		r.AddError("v", "timeout")
		l.note(&r, r.Time, time.Millisecond)
	}
	d := l.snapshot(nil, false)
	if !d.FailingSince.Equal(t0.Add(time.Second)) || d.LastError != "v: timeout" {
		t.Errorf("failing since %s, last error %q", d.FailingSince, d.LastError)
	}
	if p := d.Points[0]; p.Value != "230" || !p.At.Equal(t0) || p.Error != "timeout" {
		t.Errorf("point: %+v", p)
	}
}
