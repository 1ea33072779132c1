// Package backoff says how long a retry loop waits after failures: steps
// that double from First up to Max, with a random part (Jitter) so that a
// fleet of gateways, or the buses of one, do not retry in step. It computes
// durations only: the caller's clock (real or a test's) does the waiting.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is a capped exponential backoff. The zero Jitter waits exactly.
type Policy struct {
	// First is the wait after the first failure.
	First time.Duration
	// Max caps the wait.
	Max time.Duration
	// Jitter is the fraction of a wait taken off at random, 0 to 1: 0.25
	// waits between 75% and 100% of the step.
	Jitter float64
	// Rand returns a number in [0, 1); math/rand/v2 when nil.
	Rand func() float64
}

// Delay returns the wait after failures consecutive failures: 0 for none,
// First for one, twice as long for each more, at most Max, less the jitter.
func (p Policy) Delay(failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := p.First
	for i := 1; i < failures && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	if p.Jitter > 0 {
		r := rand.Float64
		if p.Rand != nil {
			r = p.Rand
		}
		d -= time.Duration(float64(d) * p.Jitter * r())
	}
	return d
}
