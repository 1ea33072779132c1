package testbroker

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Message is one message a Subscriber received.
type Message struct {
	Topic      string
	Payload    []byte
	Retain     bool
	Properties *paho.PublishProperties
}

// Subscriber collects what a broker delivers on a topic filter.
type Subscriber struct {
	mu   sync.Mutex
	msgs []Message
	more chan struct{} // closed and replaced at each message
	cli  *paho.Client
}

// Subscribe connects to the broker at addr and subscribes to filter with QoS 1.
func Subscribe(t testing.TB, addr, filter string) *Subscriber {
	t.Helper()
	return SubscribeAs(t, addr, filter, "", "")
}

// SubscribeAs is Subscribe with a username and password ("" for none).
func SubscribeAs(t testing.TB, addr, filter, user, password string) *Subscriber {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("subscriber: %v", err)
	}
	s := &Subscriber{more: make(chan struct{})}
	s.cli = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			s.mu.Lock()
			s.msgs = append(s.msgs, Message{Topic: pr.Packet.Topic, Payload: pr.Packet.Payload, Retain: pr.Packet.Retain, Properties: pr.Packet.Properties})
			close(s.more)
			s.more = make(chan struct{})
			s.mu.Unlock()
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: "test-sub-" + user + "-" + filter, CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = user, true, []byte(password), true
	}
	if _, err := s.cli.Connect(ctx, cp); err != nil {
		t.Fatalf("subscriber connect: %v", err)
	}
	if _, err := s.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() { s.cli.Disconnect(&paho.Disconnect{}) })
	return s
}

// Messages returns a copy of what was received so far.
func (s *Subscriber) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitFor waits until cond holds for the messages received, or fails the test.
func (s *Subscriber) WaitFor(t testing.TB, timeout time.Duration, what string, cond func([]Message) bool) []Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		msgs := append([]Message(nil), s.msgs...)
		more := s.more
		s.mu.Unlock()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-more:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s (%d messages received)", timeout, what, len(msgs))
			return nil
		}
	}
}

// Publish sends a QoS 1 message from the subscriber's connection.
func (s *Subscriber) Publish(t testing.TB, topic string, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.cli.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// PublishMessage sends p as is (retain flag included) from the subscriber's connection.
func (s *Subscriber) PublishMessage(t testing.TB, p *paho.Publish) {
	t.Helper()
	if err := s.TryPublish(p); err != nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
}

// TryPublish sends p and returns the broker's refusal, if any.
func (s *Subscriber) TryPublish(p *paho.Publish) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.cli.Publish(ctx, p)
	return err
}

// Close disconnects the subscriber before the test ends.
func (s *Subscriber) Close() { _ = s.cli.Disconnect(&paho.Disconnect{}) }
