package uplink

import (
	"testing"
	"time"

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
