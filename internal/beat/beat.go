// Package beat tells a watchdog whether a long-lived loop is alive without
// waking the loop up: the loop beats when it works and rests while it waits
// for an event in a select (which no hang holds up), so an idle loop needs
// no ticker to look alive, and a loop stuck in a call (an fsync that never
// returns, a bus that hangs) shows the time it went in.
package beat

import (
	"sync/atomic"
	"time"
)

// resting marks a loop waiting in a select.
const resting = -1

// Beat is one loop's sign of life; the zero value is a loop that never
// beat. The loop calls Work and Rest; anyone calls Last.
type Beat struct{ v atomic.Int64 }

// Work says the loop is working now.
func (b *Beat) Work() { b.v.Store(time.Now().UnixNano()) }

// Rest says the loop waits for an event: alive until it says otherwise.
func (b *Beat) Rest() { b.v.Store(resting) }

// Last is when the loop was last known alive: now while it rests.
func (b *Beat) Last() time.Time {
	v := b.v.Load()
	if v == resting {
		return time.Now()
	}
	return time.Unix(0, v)
}
