package uplink

import (
	"context"
	"errors"

	"edgegw/buffer"
)

// Session is a protocol spoken on each connection in place of the status
// topic and the JSON commands: Sparkplug B. Its messages are numbered in
// the order they go on the wire, so the uplink calls Begin, Rebirth and
// Compose one at a time and publishes what they return before the next
// call; Will and Connected come from the connect goroutine, Received from
// the client's receiving one.
type Session interface {
	// Will is the will of the next CONNECT (published at QoS 1, not retained).
	Will() (Message, error)
	// Connected says the broker (its URL) accepted the last CONNECT: its
	// will is registered.
	Connected(broker string)
	// Filters are subscribed (QoS 1) on each connection.
	Filters() []Filter
	// Ready says whether the session may begin: a primary host it waits
	// for is online.
	Ready() bool
	// Begin returns the messages that start a session on a new connection
	// (births). Records up to backlog were committed before it. fits says
	// whether a message of that topic and payload size can go to this
	// broker (its Maximum Packet Size): the Session numbers nothing that
	// cannot, here and in Rebirth and Compose on the same connection, and
	// Compose refuses such a record with ErrTooLarge.
	Begin(backlog uint64, fits func(topic string, payload int) bool) ([]Message, error)
	// Rebirth returns the births again, on the same connection.
	Rebirth() ([]Message, error)
	// Compose returns the messages for rec: the last carries it, those
	// before go first at QoS 0. None: rec has nothing to say and is acked.
	Compose(rec buffer.Record) ([]Message, error)
	// Received handles a message on one of the filters.
	Received(topic string, payload []byte) Received
	// End is the message published before a clean disconnect (its death).
	End() (Message, error)
}

// Filter is a topic filter a Session subscribes to.
type Filter struct {
	Topic string
	// Commands says what comes on it is executed: a retained message on
	// it is not (MQTT 5 asks the broker not to send one: Retain Handling
	// 2; on 3.1.1 it is refused when it comes), or it would run again at
	// every reconnect.
	Commands bool
}

// ErrTooLarge is what a Session's Compose returns for a record whose
// message can never go to the broker in use: it is dropped and counted
// too_large, without taking a seq.
var ErrTooLarge = errors.New("uplink: the message is larger than the broker's maximum packet size")

// Message is one message a Session publishes.
type Message struct {
	Topic   string
	Payload []byte
}

// Received is what a message on a Session's filters asks of the uplink.
type Received struct {
	// Commands are writes, through Config.Commands; they are logged, not answered.
	Commands []Command
	// Rebirth asks for the births again.
	Rebirth bool
	// Online says the session became Ready; Offline that it no longer is:
	// a session that began is ended and the connection left for the next
	// broker, as is one still waiting when there are other brokers.
	Online, Offline bool
}

// onSession takes what the broker sends: only the session's filters are
// subscribed, and the Session ignores a topic it does not know.
func (u *Uplink) onSession(p inbound) {
	r := u.cfg.Session.Received(p.Topic, p.Payload)
	if p.Retain && (len(r.Commands) > 0 || r.Rebirth) {
		u.log.Warn("mqtt_command_ignored", "topic", p.Topic, "reason", "retained command messages are not executed")
		r.Commands, r.Rebirth = nil, false
	}
	for _, cmd := range r.Commands {
		cmd.Expires = u.expires(p) // command_ttl, as for the JSON commands
		u.command(cmd, reply{})
	}
	c := u.current()
	// Not on the client's receiving goroutine, which must go on reading the
	// acks that the publishes holding wireMu wait for; Run waits for them.
	async := func(f func(*connection)) {
		u.watchers.Add(1)
		go func() { defer u.watchers.Done(); f(c) }()
	}
	switch {
	case c == nil:
	case r.Offline && (c.born.Load() || len(u.urls) > 1):
		async(u.abandon)
	case r.Online:
		u.notify()
	case r.Rebirth && c.born.Load():
		async(u.rebirth)
	}
}

// begin waits until the session may begin on c, then publishes its births;
// false when c or ctx ended first.
func (u *Uplink) begin(ctx context.Context, c *connection) bool {
	s := u.cfg.Session
	waiting := false
	for !s.Ready() {
		if !waiting {
			waiting = true
			u.log.Info("sparkplug_waiting_for_primary_host", "broker", c.url,
				"hint", "readings stay on flash until the primary host application says it is online (its STATE message)")
		}
		u.rest()
		select {
		case <-ctx.Done():
			return false
		case <-c.down:
			return false
		case <-c.leaving:
			return false
		case <-u.changed:
		}
	}
	u.heartbeat()
	u.wireMu.Lock()
	defer u.wireMu.Unlock()
	msgs, err := s.Begin(u.store.LastSeq(), c.fits)
	if err == nil {
		err = u.publishAll(ctx, c, msgs)
	}
	if err != nil {
		u.log.Warn("sparkplug_birth_failed", "broker", c.url, "err", err)
		// No data may go without its births: start over. No DISCONNECT:
		// the broker publishes the will, the death of any birth that went.
		c.abort()
		return false
	}
	c.born.Store(true)
	return true
}

// rebirth publishes the births again on c, between two records.
func (u *Uplink) rebirth(c *connection) {
	u.wireMu.Lock()
	defer u.wireMu.Unlock()
	msgs, err := u.cfg.Session.Rebirth()
	if err == nil {
		err = u.publishAll(u.runCtx, c, msgs)
	}
	if err != nil {
		u.log.Warn("sparkplug_rebirth_failed", "broker", c.url, "err", err)
		c.abort()
		return
	}
	u.log.Info("sparkplug_rebirth", "broker", c.url)
}

// abandon ends the session on c and leaves the broker: its death goes
// first, then a normal DISCONNECT; the next attempt goes to another broker.
func (u *Uplink) abandon(c *connection) {
	u.wireMu.Lock()
	defer u.wireMu.Unlock() // no record between the death and the DISCONNECT
	u.endSession(c)
	c.left.Store(true)
	u.mu.Lock()
	u.abandoned = c
	u.mu.Unlock()
	u.log.Warn("sparkplug_primary_host_offline", "broker", c.url,
		"hint", "the primary host application is offline on this broker: leaving it for the next")
	u.disconnect(c)
}

// publishAll publishes msgs at QoS 0, in order; each is written when
// Publish returns.
func (u *Uplink) publishAll(ctx context.Context, c *connection, msgs []Message) error {
	pctx, cancel := context.WithTimeout(ctx, u.cfg.ConnectTimeout)
	defer cancel()
	for _, m := range msgs {
		if _, _, err := c.link.publish(pctx, &publication{Topic: m.Topic, QoS: 0, Payload: m.Payload}, nil); err != nil {
			return err
		}
	}
	return nil
}

// endSession publishes the Session's end (its death) on c, if it began
// there. The caller holds wireMu.
func (u *Uplink) endSession(c *connection) {
	if !c.born.Load() {
		return
	}
	m, err := u.cfg.Session.End()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), u.cfg.ConnectTimeout)
		defer cancel()
		_, _, err = c.link.publish(ctx, &publication{Topic: m.Topic, QoS: 1, Payload: m.Payload}, nil)
	}
	if err != nil {
		u.log.Warn("sparkplug_death_failed", "broker", c.url, "err", err)
	}
}

// sayGoodbye publishes the session's end, or the offline status, on c
// before a clean disconnect.
func (u *Uplink) sayGoodbye(c *connection) {
	if u.cfg.Session != nil {
		u.wireMu.Lock()
		defer u.wireMu.Unlock()
		u.endSession(c)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), u.cfg.ConnectTimeout)
	defer cancel()
	pub := &publication{Topic: u.cfg.StatusTopic, QoS: min(1, c.qos), Retain: true, Payload: []byte(`{"state":"offline"}`)}
	if _, _, err := c.link.publish(ctx, pub, nil); err != nil {
		u.log.Warn("mqtt_offline_status_failed", "err", err)
	}
}

// disconnect ends c on purpose, after its goodbye was said: a Session's
// edge node sends DISCONNECT 0x04 on MQTT 5 (with will: the broker
// publishes the NDEATH too, as the Sparkplug specification asks), anyone
// else a normal DISCONNECT (the broker drops the will), as 3.1.1 always does.
func (u *Uplink) disconnect(c *connection) {
	if u.cfg.Session != nil && c.proto == MQTT5 {
		c.wire.leaveWith(disconnectWithWill)
		return
	}
	c.wire.leave()
}

// abort closes c without DISCONNECT: the broker publishes the will.
func (c *connection) abort() {
	c.left.Store(true)
	_ = c.wire.Close()
}

// disconnectWithWill is an MQTT 5 DISCONNECT with reason 0x04, "disconnect
// with will message".
var disconnectWithWill = []byte{0xE0, 1, 0x04}

// fits reports whether a message of topic with a payload of n bytes can go
// on c: no larger than the broker's Maximum Packet Size (counted at QoS 1,
// the larger).
func (c *connection) fits(topic string, n int) bool {
	if c.maxPacket == 0 {
		return true
	}
	return packetSizeOf(topic, n, 1, c.proto) <= int(c.maxPacket)
}
