package uplink

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"edgegw/internal/backoff"
	"edgegw/internal/testbroker"
)

// TestQoSAboveTheBrokersMaximum: qos = 2 against a broker whose Maximum QoS
// is 1 (Mosquitto's max_qos): readings are published at QoS 1, not never.
func TestQoSAboveTheBrokersMaximum(t *testing.T) {
	b := testbroker.Start(t, testbroker.WithConfig("max_qos 1"))
	sub := testbroker.Subscribe(t, b.Addr(), "test/#")
	store := openBuffer(t)
	fill(t, store, 20)
	start(t, store, []string{b.URL()}, func(c *Config) { c.QoS = 2 })
	sub.WaitFor(t, 10*time.Second, "readings at the broker's maximum QoS", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 20) })
	waitEmpty(t, store)
}

// TestClientIDClashBacksOff: two gateways with one client id take the
// session from each other at every connect (Mosquitto closes the older with
// 0x8E). Each meets the growing backoff, not a reconnect loop, and the
// clash is logged as such.
func TestClientIDClashBacksOff(t *testing.T) {
	b := testbroker.Start(t)
	logs := &logSink{}
	clash := func(c *Config) {
		c.ClientID = "edgegw-clash"
		c.Reconnect = Reconnect{Window: 20 * time.Millisecond, Away: quick, Busy: quick,
			Failed: backoff.Policy{First: 100 * time.Millisecond, Max: 5 * time.Second}.Delay}
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	r1 := start(t, openBuffer(t), []string{b.URL()}, clash)
	r2 := start(t, openBuffer(t), []string{b.URL()}, clash)
	window := time.NewTimer(3 * time.Second)
	<-window.C // an observation window: count what happens in it
	if n := r1.up.Connects() + r2.up.Connects(); n > 30 {
		t.Errorf("%d connects in 3 s: a reconnect loop", n)
	} else {
		t.Logf("%d connects in 3 s", n)
	}
	// Mosquitto 2.0 closes the older session without DISCONNECT 0x8E.
	if !strings.Contains(logs.String(), "msg=mqtt_connection_dropped_after_connect") || !strings.Contains(logs.String(), "another client with this client_id (edgegw-clash)") {
		t.Errorf("the clash is not logged as such:\n%s", logs.String())
	}
}
