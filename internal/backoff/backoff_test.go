package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{First: time.Second, Max: 30 * time.Second}
	want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for failures, w := range want {
		if got := p.Delay(failures); got != w {
			t.Errorf("Delay(%d) = %s, want %s", failures, got, w)
		}
	}
	if got := p.Delay(1 << 30); got != 30*time.Second {
		t.Errorf("a huge count: %s", got)
	}
}

func TestJitter(t *testing.T) {
	for _, r := range []float64{0, 0.5, 0.999} {
		p := Policy{First: time.Second, Max: 8 * time.Second, Jitter: 0.25, Rand: func() float64 { return r }}
		got := p.Delay(3)
		want := 4*time.Second - time.Duration(float64(4*time.Second)*0.25*r)
		if got != want || got < 3*time.Second || got > 4*time.Second {
			t.Errorf("r=%v: %s, want %s within 75%%..100%% of 4s", r, got, want)
		}
	}
}
