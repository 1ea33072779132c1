package uplink

import (
	"context"
	"edgegw/buffer"
	"edgegw/internal/testbroker"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// commandSession is a Session whose every message is one write.
type commandSession struct{ Session }

func (commandSession) Received(string, []byte) Received {
	return Received{Commands: []Command{{Device: "plc", Point: "setpoint", Value: []byte("21.5")}}}
}

// TestSessionCommandsExpire: a Session's writes get command_ttl (or the
// message's expiry, if sooner) as the JSON commands do.
func TestSessionCommandsExpire(t *testing.T) {
	var got []Command
	u := New(Config{Session: commandSession{}, CommandTTL: time.Minute,
		Commands: func(cmd Command, done func(Result)) { got = append(got, cmd); done(Result{}) }}, nil)
	expiry := uint32(5)
	before := time.Now()
	u.onSession(inbound{Topic: "spBv1.0/g/DCMD/n/plc"})
	u.onSession(inbound{Topic: "spBv1.0/g/DCMD/n/plc", Expiry: &expiry})
	if len(got) != 2 {
		t.Fatalf("%d commands, want 2", len(got))
	}
	if e := got[0].Expires; e.Before(before.Add(time.Minute)) || e.After(time.Now().Add(time.Minute)) {
		t.Errorf("expires %v, want command_ttl (1m) after it came", e)
	}
	if e := got[1].Expires; e.Before(before.Add(5*time.Second)) || e.After(time.Now().Add(5*time.Second)) {
		t.Errorf("expires %v, want the message's expiry (5s) after it came", e)
	}
}

// recordingSession is a Session on plain test topics that records what the
// uplink asks of it: births on test/birth, data on test/data, commands on
// test/cmd, a host's state on test/state, its will and death on test/death.
type recordingSession struct {
	mu    sync.Mutex
	wills int
}

func (s *recordingSession) Will() (Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wills++
	return Message{Topic: "test/death", Payload: []byte(strconv.Itoa(s.wills))}, nil
}

func (s *recordingSession) willsMade() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wills
}

func (*recordingSession) Connected(string) {}
func (*recordingSession) Filters() []Filter {
	return []Filter{{Topic: "test/cmd", Commands: true}, {Topic: "test/state"}}
}
func (*recordingSession) Ready() bool { return true }
func (*recordingSession) Begin(uint64, func(string, int) bool) ([]Message, error) {
	return []Message{{Topic: "test/birth", Payload: []byte("born")}}, nil
}
func (s *recordingSession) Rebirth() ([]Message, error) { return s.Begin(0, nil) }
func (*recordingSession) Compose(rec buffer.Record) ([]Message, error) {
	return []Message{{Topic: "test/data", Payload: fmt.Appendf(nil, `{"seq":%d}`, rec.Seq)}}, nil
}
func (*recordingSession) Received(topic string, payload []byte) Received {
	if topic != "test/cmd" {
		return Received{}
	}
	return Received{Commands: []Command{{Device: "plc", Point: "p", Value: append([]byte(nil), payload...)}}}
}
func (*recordingSession) End() (Message, error) {
	return Message{Topic: "test/death", Payload: []byte("end")}, nil
}

// TestSessionRetainedCommandNotExecuted: a command left retained on the
// broker would be written again at every reconnect: it is not executed
// (MQTT 5: not even sent, Retain Handling 2; 3.1.1: refused), a live one is.
func TestSessionRetainedCommandNotExecuted(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		sub.PublishMessage(t, &paho.Publish{Topic: "test/cmd", QoS: 1, Retain: true, Payload: []byte("retained")})
		c := newCommander()
		r := start(t, openBuffer(t), []string{br.URL()}, func(cfg *Config) {
			cfg.Session, cfg.Commands = &recordingSession{}, c.take
		})
		sub.WaitFor(t, 10*time.Second, "the birth", func(m []testbroker.Message) bool {
			return slices.ContainsFunc(m, func(x testbroker.Message) bool { return x.Topic == "test/birth" })
		})
		sub.Publish(t, "test/cmd", []byte("live"))
		waitFor(t, 10*time.Second, "the live command", func() bool { return len(c.seen()) > 0 })
		r.drop(t) // a reconnect: the retained one is offered again
		// The births come after the subscriptions: then a command is taken.
		sub.WaitFor(t, 10*time.Second, "the second birth", func(m []testbroker.Message) bool {
			n := 0
			for _, x := range m {
				if x.Topic == "test/birth" {
					n++
				}
			}
			return n >= 2
		})
		sub.Publish(t, "test/cmd", []byte("live again"))
		waitFor(t, 10*time.Second, "the second live command", func() bool { return len(c.seen()) >= 2 })
		for _, cmd := range c.seen() {
			if string(cmd.Value) == "retained" {
				t.Errorf("the retained command was executed: %+v", c.seen())
			}
		}
	})
}

// refusingLink is a link whose broker refuses every subscription, as
// HiveMQ or EMQX do under an ACL (Mosquitto grants a denied subscription
// and filters what it delivers, so it cannot show this).
type refusingLink struct{ link }

func (refusingLink) subscribe(context.Context, []string, bool) error {
	return errors.New("subscription to spBv1.0/STATE/scada refused: reason code 0x87")
}

// TestSessionSubscriptionRefusedMovesOn: an edge node whose command or
// STATE subscription is refused leaves the broker for the next before any
// birth, rather than be born without commands or wait for a host it can
// never hear.
func TestSessionSubscriptionRefusedMovesOn(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	w := newWireConn(client, 0, nil)
	c := &connection{link: refusingLink{}, wire: w, proto: MQTT5, url: "tcp://strict:1883",
		down: make(chan struct{}), leaving: make(chan struct{}), settled: make(chan struct{})}
	began := false
	u := New(Config{Session: beginRecorder{&recordingSession{}, &began}, ConnectTimeout: time.Second}, nil)
	go func() { _, _ = io.Copy(io.Discard, server) }()
	if u.birth(context.Background(), c) {
		t.Fatal("records may go on a connection whose subscriptions were refused")
	}
	if began {
		t.Error("the session began without its subscriptions")
	}
	if u.abandoned != c || !c.left.Load() {
		t.Error("the broker is not left for the next")
	}
}

// beginRecorder says whether Begin was called.
type beginRecorder struct {
	*recordingSession
	began *bool
}

func (b beginRecorder) Begin(backlog uint64, fits func(string, int) bool) ([]Message, error) {
	*b.began = true
	return b.recordingSession.Begin(backlog, fits)
}

// TestSessionWillsOnlyForSentConnects: a will (with Sparkplug, a bdSeq) is
// made for each CONNECT sent, not for dials that never reached a broker.
func TestSessionWillsOnlyForSentConnects(t *testing.T) {
	refused := fmt.Sprintf("tcp://127.0.0.1:%d", testbroker.FreePort(t))
	br := testbroker.Start(t)
	s := &recordingSession{}
	r := start(t, openBuffer(t), []string{refused, refused, br.URL()}, func(cfg *Config) {
		cfg.Session, cfg.Commands = s, newCommander().take
	})
	waitFor(t, 10*time.Second, "connected", func() bool { return r.up.Broker() == br.URL() })
	if n := s.willsMade(); n != 1 {
		t.Errorf("%d wills made for 1 CONNECT sent", n)
	}
}
