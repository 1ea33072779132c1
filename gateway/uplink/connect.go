package uplink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// silence is how long a broker may send nothing before its connection is
// given up: a keepalive, after which the client pings, plus a grace for the
// answer. paho.mqtt.golang (3.1.1) looks whether to ping only every
// keepalive/4, or every 5 s above 10 s, so its ping may come that much later.
func silence(keepAlive time.Duration, proto Protocol) time.Duration {
	if keepAlive <= 0 {
		return 0
	}
	grace := min(keepAlive/4, 5*time.Second)
	if proto == MQTT311 {
		check := keepAlive / 4
		if keepAlive > 10*time.Second {
			check = 5 * time.Second
		}
		grace += check
	}
	return keepAlive + grace
}

// parseBrokers reads the broker URLs.
func parseBrokers(brokers []string) ([]*url.URL, error) {
	var urls []*url.URL
	for _, b := range brokers {
		pu, err := url.Parse(b)
		if err != nil {
			return nil, fmt.Errorf("uplink: broker %q: %w", b, err)
		}
		urls = append(urls, pu)
	}
	if len(urls) == 0 {
		return nil, errors.New("uplink: no brokers")
	}
	return urls, nil
}

// connectLoop keeps one connection up at a time, each attempt to the
// address and in the protocol the selector says, until ctx ends; then it
// leaves the connection in use with a normal DISCONNECT and returns once
// its client has stopped. It is the only goroutine that touches the
// selector and the attempt fields.
func (u *Uplink) connectLoop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		timer.Reset(u.sel.delay())
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		c := u.connect(ctx)
		if c == nil {
			continue
		}
		u.onConnectionUp(c)
		select {
		case <-c.link.done():
			u.onConnectionDown()
		case <-ctx.Done():
			c.left.Store(true)
			u.disconnect(c)
			<-c.link.done()
			u.mu.Lock()
			u.conn = nil
			close(c.down)
			u.mu.Unlock()
			return
		}
	}
}

// connect makes one attempt: the next address, in the protocol remembered
// for it; with Auto, an MQTT 5 CONNECT the broker refuses as a protocol it
// does not speak is followed at once by a 3.1.1 one. nil when it failed
// (told to the selector and logged) or ctx ended.
func (u *Uplink) connect(ctx context.Context) *connection {
	u.mu.Lock()
	ref := u.referral
	u.referral = ""
	u.mu.Unlock()
	if ref != "" && u.attempt.url != nil {
		u.followReference(ref, false)
	}
	target := u.sel.next(ctx)
	proto := u.sel.protocol(target.addr)
	for {
		c, err := u.attemptOn(ctx, target, proto)
		if err == nil {
			return c
		}
		if ctx.Err() != nil {
			return nil
		}
		var ce *connectError
		if u.cfg.Protocol == Auto && errors.As(err, &ce) && ce.refusesProtocol() {
			if proto == MQTT5 {
				u.sel.remember(target.addr, MQTT311)
				if u.sel.firstFallback(target.addr) {
					u.log.Info("mqtt_protocol_fallback", "broker", target.String(), "address", target.addr, "from", MQTT5, "to", MQTT311,
						"broker_did", ce.Error(), "hint", "the broker does not speak MQTT 5: speaking 3.1.1 to this address (logged once per address)")
				}
				proto = MQTT311
				continue
			}
			u.sel.remember(target.addr, MQTT5) // 3.1.1 refused too: 5 again next time
		}
		u.onConnectError(err)
		return nil
	}
}

// attemptOn dials target and connects in protocol proto.
func (u *Uplink) attemptOn(ctx context.Context, target candidate, proto Protocol) (*connection, error) {
	u.attempt, u.attemptProto, u.attemptWire, u.dialFailure = target, proto, nil, 0
	conn, err := dial(ctx, target, u.cfg.TLS, u.cfg.ConnectTimeout)
	if err != nil {
		u.dialFailure = away
		if isTimeout(err) {
			u.dialFailure = failed // a host that drops SYNs holds the attempt as long as a silent broker
		}
		return nil, err
	}
	broker := target.String()
	quiet := silence(u.cfg.KeepAlive, proto)
	w := newWireConn(conn, quiet, func() {
		u.log.Warn("mqtt_broker_unresponsive", "broker", broker, "silent_for", quiet)
	})
	w.bytesIn = &u.bytesIn
	w.onTooLarge = func(err error) {
		u.log.Warn("mqtt_packet_too_large", "broker", broker, "err", err,
			"hint", "the broker ignores the client's Maximum Packet Size; the connection is closed before the packet is read")
	}
	u.attemptWire = w
	params, err := u.connectParams()
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, u.cfg.ConnectTimeout)
	defer cancel()
	var (
		l   link
		lim limits
	)
	if proto == MQTT311 {
		l, lim, err = connect311(cctx, w, params, u.cfg.ConnectTimeout)
	} else {
		l, lim, err = connect5(cctx, w, params)
	}
	if err != nil {
		return nil, err
	}
	return &connection{link: l, proto: proto, url: broker, cand: target, wire: w, qos: u.cfg.QoS,
		limits: lim, since: time.Now(),
		down: make(chan struct{}), leaving: make(chan struct{}), settled: make(chan struct{})}, nil
}

// connectParams are those of the next CONNECT: its will is the Session's
// (a new one for each CONNECT), or the offline status.
func (u *Uplink) connectParams() (connectParams, error) {
	p := connectParams{
		clientID:  u.cfg.ClientID,
		username:  u.cfg.Username,
		password:  u.cfg.Password,
		keepAlive: uint16(u.cfg.KeepAlive / time.Second),
		will:      will{Topic: u.cfg.StatusTopic, Payload: []byte(`{"state":"offline"}`), QoS: 1, Retain: true},
		receive:   u.onCommand,
		clientError: func(err error) {
			u.log.Debug("mqtt_client_error", "err", err)
		},
		serverDisconnect: u.onServerDisconnect,
		skipped: func(topic string, size int) {
			u.log.Warn("mqtt_message_too_large", "topic", excerpt([]byte(topic)), "size", size, "limit", maxIncomingPacket,
				"hint", "a message larger than the gateway takes was dropped unread (MQTT 3.1.1 cannot tell the broker the limit); commands are small JSON values")
		},
	}
	if s := u.cfg.Session; s != nil {
		m, err := s.Will()
		if err != nil {
			return p, err
		}
		p.will = will{Topic: m.Topic, Payload: m.Payload, QoS: 1}
		p.receive = u.onSession
	}
	return p, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func (u *Uplink) onConnectionUp(c *connection) {
	if l := u.learnedLimit(c.cand.addr); l > 0 && (c.maxPacket == 0 || l < c.maxPacket) {
		c.maxPacket = l
	}
	if c.limits.maxQoS < c.qos {
		// A publish above the broker's maximum would be refused by the
		// client itself: nothing would ever be published.
		c.qos = c.limits.maxQoS
		if !u.downgraded {
			u.downgraded = true
			u.log.Warn("mqtt_qos_downgraded", "broker", c.url, "qos", u.cfg.QoS, "broker_maximum", c.qos,
				"hint", "the broker supports no higher QoS; readings go at its maximum (logged once)")
		}
	}
	u.sel.connected()
	if s := u.cfg.Session; s != nil {
		s.Connected(c.url)
	}
	if u.cfg.OnConnect != nil {
		u.cfg.OnConnect()
	}
	u.mu.Lock()
	u.conn = c
	u.connects++
	u.failingBack = -1
	u.mu.Unlock()
	attrs := []any{"broker", c.url, "address", c.cand.addr, "protocol", c.proto.String()}
	if u.connectFailures > 0 {
		attrs = append(attrs, "failed_attempts", u.connectFailures)
	}
	u.log.Info("mqtt_connected", attrs...)
	u.connectFailures = 0
	if u.cfg.Order == Ordered && u.cfg.FailbackAfter > 0 && c.cand.broker > 0 {
		// Not from a referred server: the list's brokers sent us there.
		u.watchers.Add(1)
		go func() {
			defer u.watchers.Done()
			u.failBack(u.runCtx, c)
		}()
	}
	u.notify()
}

func (u *Uplink) onConnectionDown() {
	u.mu.Lock()
	c, to, abandoned := u.conn, u.failingBack, u.abandoned
	u.conn, u.abandoned = nil, nil
	if c != nil {
		c.lostAt = time.Now()
		close(c.down)
	}
	u.mu.Unlock()
	switch {
	case c == nil:
	case to >= 0:
		u.sel.failBack(to) // logged when it was decided
	case c == abandoned:
		// The next round starts after it, at the pace of a failed one.
		u.sel.lostConnection(c.cand.addr, 0) // logged when it was decided
	default:
		upFor := time.Since(c.since)
		if u.sel.lostConnection(c.cand.addr, upFor) {
			// Mosquitto closes a session taken over without saying why
			// (others send DISCONNECT 0x8E, logged as mqtt_session_taken_over).
			u.log.Warn("mqtt_connection_dropped_after_connect", "broker", c.url, "address", c.cand.addr, "up_for", upFor.Round(time.Millisecond),
				"hint", "the broker accepted the connection, then closed it: most often another client with this client_id ("+u.cfg.ClientID+"), else an ACL or a proxy; backing off")
		} else {
			u.log.Warn("mqtt_connection_lost", "broker", c.url, "address", c.cand.addr)
		}
		u.noteError(c.url + ": connection lost after " + upFor.Round(time.Second).String())
	}
	u.notify()
}

// onServerDisconnect logs why the broker closed the connection (MQTT 5)
// and keeps the server it refers us to, if any (0x9C use another server,
// 0x9D server moved), for the next attempt. The client calls it on a
// goroutine of its own, perhaps after the connection is down.
func (u *Uplink) onServerDisconnect(code byte, reason, reference string) {
	ref := ""
	if code == 0x9C || code == 0x9D {
		ref = reference
	}
	if code == 0x8E {
		u.log.Warn("mqtt_session_taken_over", "client_id", u.cfg.ClientID,
			"hint", "another client connected with this client_id: give every gateway its own gateway.id (or mqtt.client_id)")
	} else {
		u.log.Warn("mqtt_server_disconnect", "reason_code", fmt.Sprintf("0x%02x", code), "reason", reason, "server_reference", ref)
	}
	if ref != "" {
		u.mu.Lock()
		u.referral = ref
		u.mu.Unlock()
	}
}

// onConnectError tells the selector how the attempt failed and logs the
// first failed attempt of a run of them.
func (u *Uplink) onConnectError(err error) {
	u.connectFailures++
	broker := u.attempt.String()
	u.noteError(broker + ": " + err.Error())
	how := u.dialFailure
	var ce *connectError
	switch {
	case errors.As(err, &ce) && ce.answered:
		how = failed
		switch {
		case ce.busy():
			how = busy
		case ce.proto == MQTT5 && (ce.code == 0x9C || ce.code == 0x9D): // use another server, server moved
			if w := u.attemptWire; w != nil {
				u.followReference(w.serverReference(), ce.code == 0x9D)
			}
		}
	case how == 0:
		how = failed // connected, but closed or silent before CONNACK
	}
	u.sel.failed(how)
	if how == busy {
		if u.sel.busy == 1 {
			u.log.Warn("mqtt_broker_busy", "broker", broker, "reason_code", fmt.Sprintf("0x%02x", ce.code),
				"hint", "the broker sheds load: backing off longer; logged again only when connected")
		}
		return
	}
	if u.connectFailures > 1 {
		return
	}
	hint := "trying the next address; logged again only when connected"
	if isTimeout(err) {
		err = fmt.Errorf("no answer within connect_timeout (%s)", u.cfg.ConnectTimeout)
	}
	switch {
	case ce != nil && ce.refusesProtocol() && u.cfg.Protocol == MQTT5:
		hint = `the broker may not speak MQTT 5 (Mosquitto before 1.6, RabbitMQ before 3.13, Azure IoT Hub): set mqtt.protocol = "3.1.1" or "auto"; ` + hint
	case ce != nil && ce.refusesProtocol() && u.cfg.Protocol == MQTT311:
		hint = `the broker may not speak MQTT 3.1.1: set mqtt.protocol = "5" or "auto"; ` + hint
	}
	u.log.Warn("mqtt_connect_failed", "broker", broker, "address", u.attempt.addr, "protocol", u.attemptProto.String(), "err", err,
		"hint", hint)
}

// followReference makes a broker's Server Reference the next address, if
// it may be followed, and logs what was decided.
func (u *Uplink) followReference(ref string, permanent bool) {
	to, ok, err := u.sel.refer(u.attempt.url, ref)
	switch {
	case err != nil:
		u.log.Warn("mqtt_server_reference_refused", "broker", u.attempt.String(), "to", to.String(), "err", err,
			"hint", "a broker may refer a TLS client only to another TLS address")
	case ok:
		u.log.Info("mqtt_server_reference", "broker", u.attempt.String(), "to", to.String(), "permanent", permanent)
	}
}
