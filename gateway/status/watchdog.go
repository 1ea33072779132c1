package status

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Notifier tells the service manager how the gateway is: systemd's
// sd_notify in the binary ("READY=1", "STATUS=…", "WATCHDOG=1",
// "STOPPING=1"). It must not block.
type Notifier interface {
	Notify(state string)
}

// Watchdog pings the service manager while no loop is stuck (see Stuck),
// so that a deadlock, not only a crash, gets the gateway restarted; and
// keeps STATUS= current.
type Watchdog struct {
	Notify Notifier
	// Interval is WatchdogSec; 0: no pings, STATUS only.
	Interval time.Duration
	Source   Source
	Log      *slog.Logger
	Started  time.Time
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Run notifies until ctx ends.
func (w *Watchdog) Run(ctx context.Context) error {
	every := 10 * time.Second
	if w.Interval > 0 {
		every = min(w.Interval/2, every)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	lastStatus, withheld := "", false
	for {
		r := w.Source()
		if status := statusLine(r); status != lastStatus {
			w.Notify.Notify("STATUS=" + status)
			lastStatus = status
		}
		if w.Interval > 0 {
			stuck := Stuck(w.now(), w.Started, r.Loops)
			switch {
			case len(stuck) == 0:
				w.Notify.Notify("WATCHDOG=1")
				if withheld {
					w.Log.Info("watchdog_resumed")
					withheld = false
				}
			case !withheld:
				w.Log.Error("watchdog_withheld", "stuck", strings.Join(stuck, "; "),
					"hint", "systemd restarts the gateway when its watchdog runs out")
				withheld = true
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (w *Watchdog) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// statusLine is the one-line STATUS= of systemctl status.
func statusLine(r Report) string {
	broker := "no broker connected"
	if r.Uplink != nil && r.Uplink.Broker != "" {
		broker = "publishing to " + r.Uplink.Broker
	}
	readings := 0
	if r.Buffer != nil {
		readings = r.Buffer.Readings
	}
	return fmt.Sprintf("%s; %d readings buffered", broker, readings)
}
