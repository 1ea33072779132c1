package uplink

import (
	"bytes"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	packets3 "github.com/eclipse/paho.mqtt.golang/packets"

	"edgegw/internal/backoff"
	"edgegw/internal/testbroker"
	"edgegw/internal/testlog"
)

// TestQoSAboveTheBrokersMaximum: qos = 2 against a broker whose Maximum QoS
// is 1 (Mosquitto's max_qos): readings are published at QoS 1, not never.
// MQTT 5 only: a 3.1.1 CONNACK cannot say a maximum (docs/MQTT.md).
func TestQoSAboveTheBrokersMaximum(t *testing.T) {
	t.Run("5", func(t *testing.T) {
		b := testbroker.Start(t, testbroker.WithConfig("max_qos 1"))
		sub := testbroker.Subscribe(t, b.Addr(), "test/#")
		store := openBuffer(t)
		fill(t, store, 20)
		start(t, store, []string{b.URL()}, func(c *Config) { c.QoS = 2 })
		sub.WaitFor(t, 10*time.Second, "readings at the broker's maximum QoS", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 20) })
		waitEmpty(t, store)
	})
}

// TestClientIDClashBacksOff: two gateways with one client id take the
// session from each other at every connect (Mosquitto closes the older with
// 0x8E). Each meets the growing backoff, not a reconnect loop, and the
// clash is logged as such.
func TestClientIDClashBacksOff(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		b := testbroker.Start(t)
		logs := &testlog.Sink{}
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
	})
}

// TestReadingLargerThanTheBrokersMaximumPacket: a reading the broker can
// never take (Mosquitto's max_packet_size) is dropped, counted and logged
// with its seq; the readings behind it go out, without a reconnect loop.
// Over MQTT 5 the broker says its limit in CONNACK; over 3.1.1 it cannot,
// and closes the connection on the packet: the limit is learned after
// three such closes (closer.go).
func TestReadingLargerThanTheBrokersMaximumPacket(t *testing.T) {
	bothProtocols(t, readingLargerThanTheBrokersMaximumPacket)
}

func readingLargerThanTheBrokersMaximumPacket(t *testing.T) {
	b := testbroker.Start(t, testbroker.WithConfig("max_packet_size 1000"))
	sub := testbroker.Subscribe(t, b.Addr(), "test/#")
	store := openBuffer(t)
	for i := range 10 {
		data := []byte(strconv.Itoa(i))
		if i == 4 { // seq 5
			data = bytes.Repeat([]byte("x"), 3000)
		}
		store.Append(data)
	}
	if err := store.Commit(); err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Sink{}
	r := start(t, store, []string{b.URL()}, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	sub.WaitFor(t, 10*time.Second, "the readings behind the large one", func(m []testbroker.Message) bool {
		seqs := seqsOf(t, m)
		return len(seqs) > 0 && seqs[len(seqs)-1] == 10
	})
	waitEmpty(t, store)
	if slices.Contains(seqsOf(t, sub.Messages()), 5) {
		t.Error("the broker took the large reading: the test proves nothing")
	}
	if n := r.up.TooLarge(); n != 1 {
		t.Errorf("TooLarge = %d, want 1", n)
	}
	least, most := uint64(1), uint64(1)
	if testProtocol(t) == MQTT311 {
		// closesToLearn closes on seq 5, and on a loaded machine a few more
		// where the acknowledgements of seqs 1-4 had not come back yet:
		// bounded, not a loop.
		least, most = 1+closesToLearn, 1+3*closesToLearn
		if !strings.Contains(logs.String(), "msg=mqtt_packet_limit_learned") {
			t.Errorf("the learned limit is not logged:\n%s", logs.String())
		}
	}
	if n := r.up.Connects(); n < least || n > most {
		t.Errorf("%d connects, want %d to %d\n%s", n, least, most, logs.String())
	}
	if !strings.Contains(logs.String(), "msg=mqtt_reading_too_large") || !strings.Contains(logs.String(), "seq=5") {
		t.Errorf("the drop is not logged with its seq:\n%s", logs.String())
	}
}

// TestPacketSize: the size counted is the size each client writes, with
// and without MQTT 5 properties.
func TestPacketSize(t *testing.T) {
	for _, n := range []int{0, 100, 200, 20000, 3 << 20} {
		for qos := range byte(3) {
			for _, ct := range []string{"", "application/json"} {
				pub := &publication{Topic: "edgegw/gw/dev", QoS: qos, Payload: make([]byte, n), ContentType: ct}
				if ct != "" {
					pub.Encoding, pub.Correlation = "zstd", []byte{1, 2, 3}
				}
				var w5 bytes.Buffer
				if _, err := toPaho(pub).Packet().WriteTo(&w5); err != nil {
					t.Fatal(err)
				}
				if got := packetSize(pub, MQTT5); got != w5.Len() {
					t.Errorf("MQTT 5, payload %d, QoS %d: packetSize = %d, written %d", n, qos, got, w5.Len())
				}
				p3 := packets3.NewControlPacket(packets3.Publish).(*packets3.PublishPacket)
				p3.TopicName, p3.Qos, p3.Payload, p3.MessageID = pub.Topic, qos, pub.Payload, 1
				var w3 bytes.Buffer
				if err := p3.Write(&w3); err != nil {
					t.Fatal(err)
				}
				if got := packetSize(pub, MQTT311); got != w3.Len() {
					t.Errorf("MQTT 3.1.1, payload %d, QoS %d: packetSize = %d, written %d", n, qos, got, w3.Len())
				}
			}
		}
	}
}
