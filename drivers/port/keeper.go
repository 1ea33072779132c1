package port

import (
	"log/slog"
	"time"

	"go.bug.st/serial"

	"edgegw/internal/backoff"
)

// Reopen paces the opens of a port that keeps failing: 1 s doubling to 30 s.
var Reopen = backoff.Policy{First: time.Second, Max: 30 * time.Second, Jitter: 0.1}

// Keeper keeps one serial port open for a driver, the same way for every
// protocol: it opens the port when first needed, closes it when a read or
// write on it fails, and opens it again at most once per Reopen step while
// that keeps failing (an unplugged USB adapter). It logs once when the port
// is lost and once when it is back. One goroutine at a time, like the bus.
type Keeper struct {
	// Bus names the bus in log lines; Device is the port's path.
	Bus, Device string
	Mode        *serial.Mode
	// Open opens the port; port.Open when nil.
	Open OpenFunc
	Log  *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	port     Port
	lost     bool // logged as lost; not yet back
	failures int
	openErr  error
	nextOpen time.Time
}

// Get returns the open port, opening it if it is closed and its backoff
// has passed; fresh is true when it was just opened (a cut frame may be in
// its input). While the port cannot be opened it returns why.
func (k *Keeper) Get() (p Port, fresh bool, err error) {
	if k.port != nil {
		return k.port, false, nil
	}
	now := k.now()
	if now.Before(k.nextOpen) {
		return nil, false, k.openErr
	}
	open := k.Open
	if open == nil {
		open = Open
	}
	p, err = open(k.Device, k.Mode)
	if err != nil {
		k.openErr = err
		k.failures++
		k.nextOpen = now.Add(Reopen.Delay(k.failures))
		if !k.lost {
			k.lost = true
			k.Log.Warn("serial_port_unavailable", "bus", k.Bus, "device", k.Device, "err", err, "hint", "reconnect the adapter; retried with backoff")
		}
		return nil, false, err
	}
	if k.lost {
		k.Log.Info("serial_port_back", "bus", k.Bus, "device", k.Device, "failed_opens", k.failures)
	}
	k.port, k.lost, k.failures, k.openErr = p, false, 0, nil
	return p, true, nil
}

// Failed closes a port on which an operation failed with err; the next Get
// opens it again, after a second.
func (k *Keeper) Failed(err error) {
	if k.port != nil {
		_ = k.port.Close() // it failed already; err says how
		k.port = nil
	}
	if !k.lost {
		k.lost = true
		k.Log.Warn("serial_port_lost", "bus", k.Bus, "device", k.Device, "err", err, "hint", "reconnect the adapter; retried with backoff")
	}
	k.openErr = err
	k.nextOpen = k.now().Add(Reopen.First)
}

// Close closes the port if it is open.
func (k *Keeper) Close() error {
	if k.port == nil {
		return nil
	}
	err := k.port.Close()
	k.port = nil
	return err
}

func (k *Keeper) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}
