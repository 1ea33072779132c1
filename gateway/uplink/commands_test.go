package uplink

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"edgegw/internal/testbroker"
	"edgegw/internal/testlog"
)

func TestCommandsResubscribedAfterReconnectAndRetainedIgnored(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		store := openBuffer(t)
		var mu sync.Mutex
		var seen []string
		r := start(t, store, []string{br.URL()}, func(c *Config) {
			c.CommandBase = "test"
			c.Commands = func(cmd Command, done func(Result)) {
				mu.Lock()
				seen = append(seen, cmd.Device+"/"+cmd.Point+"="+string(cmd.Value))
				mu.Unlock()
				if cmd.Point == "bad" {
					done(Result{Err: errors.New("refused")})
					return
				}
				done(Result{Value: cmd.Value})
			}
		})
		result := func(topic, want string) {
			t.Helper()
			before := len(sub.Messages())
			sub.Publish(t, topic, []byte("1"))
			sub.WaitFor(t, 10*time.Second, "result of "+topic, func(m []testbroker.Message) bool {
				for _, x := range m[before:] {
					if x.Topic == topic+"/result" {
						if string(x.Payload) != want {
							t.Errorf("%s: %s, want %s", topic, x.Payload, want)
						}
						return true
					}
				}
				return false
			})
		}
		sub.WaitFor(t, 10*time.Second, "online", func(m []testbroker.Message) bool { return len(m) > 0 })
		result("test/dev/set/p", `{"ok":true,"value":1}`)
		result("test/dev/set/bad", `{"ok":false,"error":"refused"}`)

		// A new connection starts clean: the subscription must be made again.
		r.drop(t)
		sub.WaitFor(t, 10*time.Second, "online again", func(m []testbroker.Message) bool {
			n := 0
			for _, x := range m {
				if x.Topic == "test/status" && string(x.Payload) == `{"state":"online","version":"test"}` {
					n++
				}
			}
			return n >= 2
		})
		result("test/dev/set/q", `{"ok":true,"value":1}`)

		// A retained command runs once, when it is sent, and not again at the
		// next connection, when a broker would hand it over again.
		sub.PublishMessage(t, &paho.Publish{Topic: "test/dev/set/retained", QoS: 1, Retain: true, Payload: []byte("1")})
		result("test/dev/set/after", `{"ok":true,"value":1}`) // handled in order: the retained one came first
		r.drop(t)
		sub.WaitFor(t, 10*time.Second, "online a third time", func(m []testbroker.Message) bool {
			n := 0
			for _, x := range m {
				if x.Topic == "test/status" && string(x.Payload) == `{"state":"online","version":"test"}` {
					n++
				}
			}
			return n >= 3
		})
		result("test/dev/set/last", `{"ok":true,"value":1}`)
		mu.Lock()
		defer mu.Unlock()
		retained := 0
		for _, s := range seen {
			if s == "dev/retained=1" {
				retained++
			}
		}
		if retained != 1 || len(seen) != 6 {
			t.Fatalf("the retained command ran %d times; commands seen: %v", retained, seen)
		}
	})
}

// commander records the commands an uplink hands over, answering each
// with its value unless held.
type commander struct {
	mu    sync.Mutex
	cmds  []Command
	held  []func(Result)
	hold  bool
	count chan struct{}
}

func newCommander() *commander { return &commander{count: make(chan struct{}, 1000)} }

func (c *commander) take(cmd Command, done func(Result)) {
	c.mu.Lock()
	c.cmds = append(c.cmds, cmd)
	if c.hold {
		c.held = append(c.held, done)
		done = nil
	}
	c.mu.Unlock()
	if done != nil {
		done(Result{Value: cmd.Value})
	}
	c.count <- struct{}{}
}

func (c *commander) seen() []Command {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Command(nil), c.cmds...)
}

// resultOn waits for the first message on topic after the first `after` messages.
func resultOn(t *testing.T, sub *testbroker.Subscriber, after int, topic string) testbroker.Message {
	t.Helper()
	var got testbroker.Message
	sub.WaitFor(t, 10*time.Second, "a message on "+topic, func(m []testbroker.Message) bool {
		for _, x := range m[after:] {
			if x.Topic == topic {
				got = x
				return true
			}
		}
		return false
	})
	return got
}

func startCommands(t *testing.T, br *testbroker.Broker, c *commander, mutate ...func(*Config)) *running {
	return start(t, openBuffer(t), []string{br.URL()}, append([]func(*Config){func(cfg *Config) {
		cfg.CommandBase = "test"
		cfg.Commands = c.take
		cfg.CommandTTL = 30 * time.Second
	}}, mutate...)...)
}

func waitOnline(t *testing.T, sub *testbroker.Subscriber) {
	sub.WaitFor(t, 10*time.Second, "online", func(m []testbroker.Message) bool {
		for _, x := range m {
			if x.Topic == "test/status" {
				return true
			}
		}
		return false
	})
}

// TestCommandRequestResponse: a command with an MQTT v5 Response Topic and
// Correlation Data is answered there too, with the same Correlation Data;
// a Response Topic that is a filter is not published to.
func TestCommandRequestResponse(t *testing.T) {
	br := testbroker.Start(t)
	sub := testbroker.Subscribe(t, br.Addr(), "test/#")
	logs := &testlog.Sink{}
	startCommands(t, br, newCommander(), func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	waitOnline(t, sub)

	before := len(sub.Messages())
	sub.PublishMessage(t, &paho.Publish{Topic: "test/dev/set/p", QoS: 1, Payload: []byte("21.5"),
		Properties: &paho.PublishProperties{ResponseTopic: "test/replies/app1", CorrelationData: []byte{0, 1, 0xfe}}})
	res := resultOn(t, sub, before, "test/replies/app1")
	if string(res.Payload) != `{"ok":true,"value":21.5}` || res.Properties == nil || !bytes.Equal(res.Properties.CorrelationData, []byte{0, 1, 0xfe}) {
		t.Errorf("response: %s, properties %+v", res.Payload, res.Properties)
	}
	if r := resultOn(t, sub, before, "test/dev/set/p/result"); string(r.Payload) != `{"ok":true,"value":21.5}` {
		t.Errorf("result topic: %s", r.Payload)
	}

	before = len(sub.Messages())
	sub.PublishMessage(t, &paho.Publish{Topic: "test/dev/set/q", QoS: 1, Payload: []byte("1"),
		Properties: &paho.PublishProperties{ResponseTopic: "test/replies/+", CorrelationData: []byte("x")}})
	resultOn(t, sub, before, "test/dev/set/q/result")
	if !strings.Contains(logs.String(), "msg=mqtt_response_topic_invalid") {
		t.Errorf("an invalid Response Topic is not logged:\n%s", logs.String())
	}
}

// TestCommandExpiry: a command's expiry is CommandTTL after it arrived, or
// the end of its Message Expiry if sooner.
func TestCommandExpiry(t *testing.T) {
	br := testbroker.Start(t)
	sub := testbroker.Subscribe(t, br.Addr(), "test/#")
	c := newCommander()
	startCommands(t, br, c)
	waitOnline(t, sub)
	expiry := uint32(2)
	sent := time.Now()
	sub.PublishMessage(t, &paho.Publish{Topic: "test/dev/set/soon", QoS: 1, Payload: []byte("1"),
		Properties: &paho.PublishProperties{MessageExpiry: &expiry}})
	sub.Publish(t, "test/dev/set/ttl", []byte("1"))
	<-c.count
	<-c.count
	resultOn(t, sub, 0, "test/dev/set/ttl/result")
	cmds := c.seen()
	within := func(got time.Time, want time.Duration) bool {
		d := got.Sub(sent)
		return d >= want-time.Second && d <= want+time.Second
	}
	if cmds[0].Point != "soon" || !within(cmds[0].Expires, 2*time.Second) {
		t.Errorf("Message Expiry 2 s: expires %s after sending", cmds[0].Expires.Sub(sent))
	}
	if cmds[1].Point != "ttl" || !within(cmds[1].Expires, 30*time.Second) {
		t.Errorf("no Message Expiry: expires %s after sending, want the 30 s TTL", cmds[1].Expires.Sub(sent))
	}
}

// TestCommandFloodIsBounded: a publisher flooding the set topics gets at
// most maxCommands waiting; the rest are dropped and counted, without a
// goroutine each, and commands are taken again once the flood is over.
func TestCommandFloodIsBounded(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		c := newCommander()
		c.hold = true
		logs := &testlog.Sink{}
		r := startCommands(t, br, c, func(cfg *Config) { cfg.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
		waitOnline(t, sub)
		goroutines := runtime.NumGoroutine()
		const flood = 2000
		for i := range flood {
			sub.PublishMessage(t, &paho.Publish{Topic: "test/dev/set/p", QoS: 0, Payload: []byte(strconv.Itoa(i))})
		}
		waitFor(t, 10*time.Second, "every command taken or dropped", func() bool {
			return len(c.seen())+int(r.up.CommandsDropped()) == flood
		})
		if n := len(c.seen()); n != maxCommands {
			t.Errorf("%d commands waiting, want %d", n, maxCommands)
		}
		if grown := runtime.NumGoroutine() - goroutines; grown > 10 {
			t.Errorf("%d more goroutines during the flood", grown)
		}
		if n := strings.Count(logs.String(), "msg=mqtt_command_dropped"); n != 1 {
			t.Errorf("the flood is logged %d times, want once", n)
		}
		c.mu.Lock()
		c.hold = false
		held := c.held
		c.mu.Unlock()
		before := len(sub.Messages())
		for _, done := range held {
			done(Result{Value: json.RawMessage("0")})
		}
		sub.WaitFor(t, 10*time.Second, "the waiting commands' results", func(m []testbroker.Message) bool {
			return len(m)-before >= maxCommands
		})
		// A slot is free once its result is acknowledged, a moment after
		// the subscriber saw it.
		waitFor(t, 10*time.Second, "the slots of the answered commands free", func() bool { return len(r.up.commandSlot) == 0 })
		before = len(sub.Messages())
		sub.Publish(t, "test/dev/set/after", []byte("7"))
		if res := resultOn(t, sub, before, "test/dev/set/after/result"); string(res.Payload) != `{"ok":true,"value":7}` {
			t.Errorf("after the flood: %s", res.Payload)
		}
	})
}

// TestHugeCommandCostsNothing: a 200 MB publish on a set topic never
// reaches the gateway (MQTT 5: Maximum Packet Size in CONNECT), or is cut
// out of the stream unread (3.1.1, which cannot announce one), and the
// commands after it are taken on the same connection.
func TestHugeCommandCostsNothing(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/dev/set/+/result")
		c := newCommander()
		// A broker busy taking 200 MB may answer pings late: that is not what
		// this test is about.
		r := startCommands(t, br, c, func(cfg *Config) { cfg.KeepAlive = time.Minute })
		waitFor(t, 10*time.Second, "connected", func() bool { return r.up.Broker() != "" })
		in := r.up.BytesIn()
		testbroker.PublishLarge(t, br.Addr(), "test/dev/set/big", 200<<20)
		sub.Publish(t, "test/dev/set/small", []byte("1"))
		resultOn(t, sub, 0, "test/dev/set/small/result")
		switch received := r.up.BytesIn() - in; {
		case testProtocol(t) == MQTT311 && received < 200<<20:
			t.Errorf("the gateway received %d bytes: the broker should have sent the 200 MB", received)
		case testProtocol(t) == MQTT5 && received > 4<<10:
			t.Errorf("the gateway received %d bytes", received)
		default:
			t.Logf("the gateway received %d bytes for a 200 MB command and a small one", received)
		}
		if n := r.up.Connects(); n != 1 {
			t.Errorf("%d connections, want 1: the huge command must not cost the connection", n)
		}
		if cmds := c.seen(); len(cmds) != 1 || cmds[0].Point != "small" {
			t.Errorf("commands taken: %+v", cmds)
		}
	})
}

// TestBrokerIgnoringMaximumPacketSize: a broker that sends a packet larger
// than the client allowed loses the connection after a few KiB of it.
func TestBrokerIgnoringMaximumPacketSize(t *testing.T) {
	fl := testbroker.StartFlooder(t, "test/dev/set/p", 200<<20)
	logs := &testlog.Sink{}
	r := start(t, openBuffer(t), []string{fl.URL()}, func(cfg *Config) {
		cfg.CommandBase, cfg.Commands = "test", newCommander().take
		cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	waitFor(t, 10*time.Second, "the too large packet refused", func() bool {
		return strings.Contains(logs.String(), "msg=mqtt_packet_too_large")
	})
	waitFor(t, 10*time.Second, "the connection closed", func() bool { return len(fl.Answered()) > 0 })
	if n := r.up.BytesIn(); n > 64<<10 {
		t.Errorf("the gateway read %d bytes of it", n)
	} else {
		t.Logf("the gateway read %d bytes of a 200 MB packet", n)
	}
}

// TestCommandACL: with the Mosquitto ACL of docs/DEPLOY.md, a client that
// may read but not write the set topics cannot cause a write; an operator
// can.
func TestCommandACL(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		users := map[string]string{"edgegw-gw1": "gw-secret", "operator": "op-secret", "viewer": "view-secret"}
		br := testbroker.Start(t, testbroker.WithUsers(t, users), testbroker.WithACL(t,
			"user edgegw-gw1", "topic readwrite edgegw/gw1/#",
			"user operator", "topic write edgegw/+/+/set/+", "topic read edgegw/#",
			"user viewer", "topic read edgegw/#"))
		c := newCommander()
		start(t, openBuffer(t), []string{br.URL()}, func(cfg *Config) {
			cfg.ClientID, cfg.Username, cfg.Password = "edgegw-gw1", "edgegw-gw1", []byte("gw-secret")
			cfg.StatusTopic, cfg.CommandBase, cfg.Commands = "edgegw/gw1/status", "edgegw/gw1", c.take
		})
		viewer := testbroker.SubscribeAs(t, br.Addr(), "edgegw/#", "viewer", "view-secret")
		operator := testbroker.SubscribeAs(t, br.Addr(), "edgegw/#", "operator", "op-secret")
		viewer.WaitFor(t, 10*time.Second, "the gateway online", func(m []testbroker.Message) bool { return len(m) > 0 })

		err := viewer.TryPublish(&paho.Publish{Topic: "edgegw/gw1/pump/set/on", QoS: 1, Payload: []byte("true")})
		if err == nil || !strings.Contains(err.Error(), "not authorized") {
			t.Errorf("the viewer's write: %v, want not authorized", err)
		}
		operator.Publish(t, "edgegw/gw1/pump/set/speed", []byte("40"))
		resultOn(t, operator, 0, "edgegw/gw1/pump/set/speed/result")
		if cmds := c.seen(); len(cmds) != 1 || cmds[0].Point != "speed" {
			t.Errorf("commands that reached the bus: %+v", cmds)
		}
	})
}
