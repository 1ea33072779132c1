package uplink

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"edgegw/internal/testbroker"
	"edgegw/internal/testlog"
)

// TestAutoFallsBackTo311: with protocol auto, a broker that refuses MQTT 5
// (by closing, as Mosquitto 1.4 and RabbitMQ 3.10 do, or with 3.1.1's
// return code 1) is dialled again at once in 3.1.1, the fallback is logged
// once for the address, and every reading arrives; later connections to
// that address go straight to 3.1.1.
func TestAutoFallsBackTo311(t *testing.T) {
	for _, how := range []struct {
		name string
		v5   testbroker.V5Refusal
		did  string
	}{
		{"closed", testbroker.CloseOnV5, "closed the connection after an MQTT 5 CONNECT"},
		{"return code 1", testbroker.RefuseV5, "CONNACK reason code 0x01"},
	} {
		t.Run(how.name, func(t *testing.T) {
			br := testbroker.Start(t)
			front := testbroker.StartV311Front(t, br.Addr(), how.v5)
			sub := testbroker.Subscribe(t, br.Addr(), "test/#")
			logs := &testlog.Sink{}
			store := openBuffer(t)
			fill(t, store, 50)
			r := start(t, store, []string{front.URL()}, func(c *Config) {
				c.Logger = slog.New(slog.NewTextHandler(logs, nil))
			})
			sub.WaitFor(t, 10*time.Second, "every reading over 3.1.1", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 50) })
			if p := r.up.Protocol(); p != "3.1.1" {
				t.Errorf("protocol %q, want 3.1.1", p)
			}
			r.drop(t) // a second connection: no MQTT 5 attempt this time
			waitFor(t, 10*time.Second, "a second connection", func() bool { return r.up.Connects() >= 2 && r.up.Broker() != "" })
			refused, accepted := front.Counts()
			if refused != 1 || accepted != 2 {
				t.Errorf("%d MQTT 5 CONNECTs refused, %d 3.1.1 taken: want 1 and 2", refused, accepted)
			}
			out := logs.String()
			if n := strings.Count(out, "msg=mqtt_protocol_fallback"); n != 1 || !strings.Contains(out, how.did) {
				t.Errorf("want one mqtt_protocol_fallback saying %q:\n%s", how.did, out)
			}
			if strings.Contains(out, "mqtt_connect_failed") {
				t.Errorf("a fallback is not a failed attempt:\n%s", out)
			}
		})
	}
}

// TestForced5NamesTheKey: with protocol = "5", a broker that closes after
// an MQTT 5 CONNECT is never spoken 3.1.1 to, and the log names the key
// that would fix it instead of saying EOF.
func TestForced5NamesTheKey(t *testing.T) {
	br := testbroker.Start(t)
	front := testbroker.StartV311Front(t, br.Addr(), testbroker.CloseOnV5)
	logs := &testlog.Sink{}
	start(t, openBuffer(t), []string{front.URL()}, func(c *Config) {
		c.Protocol = MQTT5
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	waitFor(t, 10*time.Second, "a few refused attempts", func() bool { refused, _ := front.Counts(); return refused >= 3 })
	if _, accepted := front.Counts(); accepted != 0 {
		t.Errorf("%d connections in 3.1.1 with protocol = 5", accepted)
	}
	out := logs.String()
	if !strings.Contains(out, "msg=mqtt_connect_failed") || !strings.Contains(out, `mqtt.protocol = \"3.1.1\"`) || strings.Contains(out, "err=EOF") {
		t.Errorf("want mqtt_connect_failed naming mqtt.protocol, not EOF:\n%s", out)
	}
}

// TestMixedListFailsOverBothWays: a list of an MQTT 5 broker and a
// 3.1.1-only one, protocol auto: the gateway fails over from the first to
// the second (3.1.1) and back (5), and together they received every seq.
func TestMixedListFailsOverBothWays(t *testing.T) {
	v5 := testbroker.Start(t)
	behind := testbroker.Start(t)
	old := testbroker.StartV311Front(t, behind.Addr(), testbroker.CloseOnV5)
	sub5 := testbroker.Subscribe(t, v5.Addr(), "test/data")
	sub311 := testbroker.Subscribe(t, behind.Addr(), "test/data")
	store := openBuffer(t)
	r := start(t, store, []string{v5.URL(), old.URL()})
	next := 0
	feed := func(n int) {
		for range n {
			store.Append([]byte(strconv.Itoa(next)))
			next++
		}
		if err := store.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	feed(100)
	sub5.WaitFor(t, 10*time.Second, "the first 100 over MQTT 5", func(m []testbroker.Message) bool { return covers(seqsOf(t, m), 100) })
	v5.Kill()
	feed(100)
	waitFor(t, 10*time.Second, "3.1.1 to the second broker", func() bool { return r.up.Protocol() == "3.1.1" })
	waitEmpty(t, store)
	v5.Restart()
	sub5again := testbroker.Subscribe(t, v5.Addr(), "test/data")
	old.Stop()
	feed(100)
	waitFor(t, 10*time.Second, "MQTT 5 to the first broker again", func() bool { return r.up.Protocol() == "5" })
	waitEmpty(t, store)
	if all := union(t, sub5, sub311, sub5again); !covers(all, 300) {
		t.Errorf("the brokers together miss seqs of 1..300")
	}
}

// TestRabbitMQ: a real 3.1.1-only broker (RabbitMQ 3.10 and its MQTT
// plugin, which closes an MQTT 5 CONNECT without a CONNACK). The default
// protocol (auto) publishes into it, and nothing is lost across a restart
// of RabbitMQ while readings keep coming.
func TestRabbitMQ(t *testing.T) {
	rmq := testbroker.StartRabbitMQ(t)
	sub := testbroker.Subscribe311(t, rmq.Addr(), "test/data", "test-rabbitmq-consumer")
	store := openBuffer(t)
	logs := &testlog.Sink{}
	r := start(t, store, []string{rmq.URL()}, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	fill(t, store, 200)
	waitFor(t, 20*time.Second, "200 readings at RabbitMQ", func() bool { return covers(seqsOf(t, sub.Messages()), 200) })
	if p := r.up.Protocol(); p != "3.1.1" {
		t.Errorf("protocol %q, want 3.1.1", p)
	}
	if !strings.Contains(logs.String(), "msg=mqtt_protocol_fallback") {
		t.Errorf("the fallback is not logged:\n%s", logs.String())
	}
	rmq.Stop()
	fill(t, store, 200) // taken while RabbitMQ is away
	rmq.Start()
	waitFor(t, 60*time.Second, "400 readings across the restart", func() bool { return covers(seqsOf(t, sub.Messages()), 400) })
	waitEmpty(t, store)
}

// TestFailBackTo311Broker: the first broker of the list speaks 3.1.1 only;
// after a failover to an MQTT 5 broker, fail-back's probes of the first
// speak 3.1.1 (the front never sees another MQTT 5 CONNECT) and the
// gateway returns to it in 3.1.1 once it is back.
func TestFailBackTo311Broker(t *testing.T) {
	behind, other := testbroker.Start(t), testbroker.Start(t)
	old := testbroker.StartV311Front(t, behind.Addr(), testbroker.CloseOnV5)
	store := openBuffer(t)
	fill(t, store, 50)
	r := start(t, store, []string{old.URL(), other.URL()}, func(c *Config) {
		c.FailbackAfter = time.Second
		c.Reconnect.Window = 100 * time.Millisecond
	})
	waitFor(t, 10*time.Second, "3.1.1 to the first broker", func() bool { return r.up.Protocol() == "3.1.1" })
	waitEmpty(t, store)
	behind.Kill()
	waitFor(t, 10*time.Second, "the move to the MQTT 5 broker", func() bool { return r.up.Broker() == other.URL() && r.up.Protocol() == "5" })
	behind.Restart()
	waitFor(t, 15*time.Second, "the return to the first broker", func() bool { return r.up.Broker() == old.URL() })
	if p := r.up.Protocol(); p != "3.1.1" {
		t.Errorf("back on the first broker in %q, want 3.1.1", p)
	}
	if refused, _ := old.Counts(); refused != 1 {
		t.Errorf("the 3.1.1-only broker saw %d MQTT 5 CONNECTs, want only the first", refused)
	}
	fill(t, store, 50)
	waitEmpty(t, store)
}
