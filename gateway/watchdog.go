package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"edgegw/buffer"
	"edgegw/gateway/uplink"
)

// Notifier tells the service manager how the gateway is: systemd's
// sd_notify in the binary ("READY=1", "STATUS=…", "WATCHDOG=1",
// "STOPPING=1"). It must not block.
type Notifier interface {
	Notify(state string)
}

// watchdog pings the service manager while every long-lived loop shows it is
// not stuck, so that a deadlock, not only a crash, gets the gateway
// restarted; and keeps STATUS= current.
type watchdog struct {
	notify   Notifier
	interval time.Duration    // WatchdogSec; 0: no pings, STATUS only
	pollers  func() []*poller // the current ones: a reload replaces them
	uplink   func() *uplink.Uplink
	buf      *buffer.Buffer
	log      *slog.Logger
	now      func() time.Time
}

// Run notifies until ctx ends.
func (w *watchdog) Run(ctx context.Context) error {
	every := 10 * time.Second
	if w.interval > 0 {
		every = min(w.interval/2, every)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	lastStatus, withheld := "", false
	for {
		if status := w.status(); status != lastStatus {
			w.notify.Notify("STATUS=" + status)
			lastStatus = status
		}
		if w.interval > 0 {
			stuck := w.stuck()
			switch {
			case len(stuck) == 0:
				w.notify.Notify("WATCHDOG=1")
				if withheld {
					w.log.Info("watchdog_resumed")
					withheld = false
				}
			case !withheld:
				w.log.Error("watchdog_withheld", "stuck", strings.Join(stuck, "; "),
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

// slack is what a heartbeat may lag beyond its own limit.
func (w *watchdog) slack() time.Duration { return 2 * w.interval }

// stuck names the loops whose heartbeat is too old.
func (w *watchdog) stuck() []string {
	now := w.now()
	var stuck []string
	for _, p := range w.pollers() {
		if lag := now.Sub(p.heartbeat()); lag > p.beatLimit()+w.slack() {
			stuck = append(stuck, fmt.Sprintf("bus %s for %s", p.bus.Name, lag.Round(time.Second)))
		}
	}
	if lag := now.Sub(w.uplink().Heartbeat()); lag > 10*time.Second+w.slack() {
		stuck = append(stuck, fmt.Sprintf("uplink for %s", lag.Round(time.Second)))
	}
	if lag := now.Sub(w.buf.Heartbeat()); lag > 2*time.Minute+w.slack() {
		stuck = append(stuck, fmt.Sprintf("buffer commits for %s", lag.Round(time.Second)))
	}
	return stuck
}

// status is the one-line STATUS= of systemctl status.
func (w *watchdog) status() string {
	st := w.buf.Stats()
	broker := w.uplink().Broker()
	if broker == "" {
		broker = "no broker connected"
	} else {
		broker = "publishing to " + broker
	}
	return fmt.Sprintf("%s; %d readings buffered", broker, st.Readings)
}
