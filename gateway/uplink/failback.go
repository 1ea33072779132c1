package uplink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/eclipse/paho.golang/packets"
	packets3 "github.com/eclipse/paho.mqtt.golang/packets"
)

// Fail-back, in the Ordered mode: while connected to a broker other than the
// first of the list, the uplink asks the earlier ones, now and then, whether
// they would take a connection (probe). One that has answered every probe
// for FailbackAfter is where the gateway goes back to: after a random part
// of the reconnect window (a fleet does not move in one second), the
// publishes in flight are let finish, and the connection is closed with a
// normal DISCONNECT, so that the broker drops the will and nobody sees the
// gateway go offline.

// probePeriod is how often earlier brokers are probed: often enough that
// the stable period is measured to a tenth, rarely enough to cost nothing.
func probePeriod(failbackAfter time.Duration) time.Duration {
	return min(max(failbackAfter/10, time.Second), 30*time.Second)
}

// failBack runs while c is up on a broker after the first of the list.
func (u *Uplink) failBack(ctx context.Context, c *connection) {
	period := probePeriod(u.cfg.FailbackAfter)
	var (
		target = -1      // the earliest broker that answered the last probe
		since  time.Time // when target began answering without a miss
		timer  = time.NewTimer(u.jitter(period))
	)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.down:
			return
		case <-timer.C:
		}
		j := u.firstAnswering(ctx, c)
		switch {
		case j < 0:
			target = -1
		case j != target:
			target, since = j, time.Now()
		case time.Since(since) >= u.cfg.FailbackAfter:
			u.leaveFor(ctx, c, target, time.Since(since))
			return
		}
		wait := u.jitter(period)
		if target >= 0 {
			// Probe again when the stable period is up, not a period later.
			wait = min(wait, max(time.Until(since.Add(u.cfg.FailbackAfter)), 0))
		}
		timer.Reset(wait)
	}
}

// jitter returns d less up to half of it, at random.
func (u *Uplink) jitter(d time.Duration) time.Duration {
	return d - time.Duration(u.rand()*float64(d)/2)
}

// firstAnswering returns the index of the first broker before c's that
// answers a probe at one of its addresses, or -1.
func (u *Uplink) firstAnswering(ctx context.Context, c *connection) int {
	for i := range c.cand.broker {
		for _, cand := range u.sel.resolveURL(ctx, i, u.urls[i]) {
			if cand.err == nil && u.probe(ctx, cand) == nil {
				return i
			}
		}
	}
	return -1
}

// leaveFor waits a random part of the reconnect window, lets the publishes
// in flight finish, and closes c cleanly so that the next attempt goes to
// broker i.
func (u *Uplink) leaveFor(ctx context.Context, c *connection, i int, stable time.Duration) {
	if w := u.sel.pace.Window; w > 0 {
		t := time.NewTimer(time.Duration(u.rand() * float64(w)))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-c.down:
			return
		case <-t.C:
		}
	}
	u.mu.Lock()
	u.failingBack = i
	u.mu.Unlock()
	u.log.Info("mqtt_failback", "from", c.cand.String(), "to", u.urls[i].String(), "reachable_for", stable.Round(time.Second))
	c.left.Store(true)
	close(c.leaving)
	select {
	case <-c.settled:
	case <-c.down:
	case <-ctx.Done():
	case <-time.After(u.cfg.ConnectTimeout): // acks that do not come are resent there
	}
	if u.cfg.Session != nil {
		// An intentional disconnect of an edge node publishes its death.
		u.wireMu.Lock()
		u.endSession(c)
		u.wireMu.Unlock()
	}
	u.disconnect(c)
}

// probe asks the broker at cand for a session and ends it at once: it
// answers when its CONNACK accepts. It speaks the protocol the address is
// known to speak (with Auto, 3.1.1 after a refused MQTT 5 probe), sends no
// will and a client id of its own, so the gateway's session elsewhere is
// untouched.
func (u *Uplink) probe(ctx context.Context, cand candidate) error {
	proto := u.sel.protocol(cand.addr)
	err := u.probeIn(ctx, cand, proto)
	var ce *connectError
	if u.cfg.Protocol == Auto && proto == MQTT5 && errors.As(err, &ce) && ce.refusesProtocol() {
		err = u.probeIn(ctx, cand, MQTT311)
	}
	return err
}

// probeIn probes cand in protocol proto.
func (u *Uplink) probeIn(ctx context.Context, cand candidate, proto Protocol) error {
	conn, err := dial(ctx, cand, u.cfg.TLS, u.cfg.ConnectTimeout)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }() // a probe: nothing to lose
	_ = conn.SetDeadline(time.Now().Add(u.cfg.ConnectTimeout))
	if proto == MQTT311 {
		err = probe311(conn, u.cfg.ClientID+"-probe", u.cfg.Username, u.cfg.Password)
	} else {
		err = probe5(conn, u.cfg.Username, u.cfg.Password)
	}
	if err == nil {
		_, _ = conn.Write(disconnectPacket)
	}
	return err
}

// probe5 sends an MQTT 5 CONNECT with an empty client id (the broker
// assigns one) and reads the CONNACK.
func probe5(conn net.Conn, username string, password []byte) error {
	cp := packets.NewControlPacket(packets.CONNECT)
	connect := cp.Content.(*packets.Connect)
	connect.ProtocolName, connect.ProtocolVersion, connect.CleanStart = "MQTT", 5, true
	if username != "" {
		connect.UsernameFlag, connect.Username = true, username
	}
	if len(password) > 0 {
		connect.PasswordFlag, connect.Password = true, password
	}
	if _, err := cp.WriteTo(conn); err != nil {
		return err
	}
	raw, err := readReply(conn)
	if err != nil {
		return &connectError{proto: MQTT5, closed: true, err: err}
	}
	resp, err := packets.ReadPacket(bytes.NewReader(raw))
	if err != nil {
		return &connectError{proto: MQTT5, closed: true, err: err}
	}
	ack, ok := resp.Content.(*packets.Connack)
	if !ok {
		return fmt.Errorf("probe: %s instead of CONNACK", resp.PacketType())
	}
	if ack.ReasonCode >= 0x80 {
		return &connectError{proto: MQTT5, answered: true, code: ack.ReasonCode}
	}
	return nil
}

// probe311 sends an MQTT 3.1.1 CONNECT (a client id of its own: some 3.1.1
// brokers refuse an empty one) and reads the CONNACK.
func probe311(conn net.Conn, clientID, username string, password []byte) error {
	cp := packets3.NewControlPacket(packets3.Connect).(*packets3.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion, cp.CleanSession, cp.ClientIdentifier = "MQTT", 4, true, clientID
	if username != "" {
		cp.UsernameFlag, cp.Username = true, username
	}
	if len(password) > 0 {
		cp.PasswordFlag, cp.Password = true, password
	}
	if err := cp.Write(conn); err != nil {
		return err
	}
	raw, err := readReply(conn)
	if err != nil {
		return &connectError{proto: MQTT311, closed: true, err: err}
	}
	resp, err := packets3.ReadPacket(bytes.NewReader(raw))
	if err != nil {
		return &connectError{proto: MQTT311, closed: true, err: err}
	}
	ack, ok := resp.(*packets3.ConnackPacket)
	if !ok {
		return fmt.Errorf("probe: %s instead of CONNACK", resp.String())
	}
	if ack.ReturnCode != 0 {
		return &connectError{proto: MQTT311, answered: true, code: ack.ReturnCode}
	}
	return nil
}

// maxReply bounds a probe's reply: a CONNACK is a few bytes, a few hundred
// with MQTT 5 properties. A broker declaring a larger packet is refused
// before anything is allocated for it.
const maxReply = 4 << 10

// readReply reads one packet of at most maxReply bytes, whole.
func readReply(r io.Reader) ([]byte, error) {
	head := make([]byte, 1, 5)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, err
	}
	for {
		var b [1]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		head = append(head, b[0])
		if b[0]&0x80 == 0 {
			break
		}
		if len(head) == 5 {
			return nil, errors.New("probe: malformed remaining length")
		}
	}
	length := remainingLength(head[1:])
	if len(head)+length > maxReply {
		return nil, fmt.Errorf("probe: a reply of %d bytes, over the %d a CONNACK may have", len(head)+length, maxReply)
	}
	packet := append(head, make([]byte, length)...)
	if _, err := io.ReadFull(r, packet[len(head):]); err != nil {
		return nil, err
	}
	return packet, nil
}

// disconnectPacket is a DISCONNECT, the same two bytes in MQTT 3.1.1 and in
// MQTT 5 (reason "normal disconnection" left out): the broker discards the will.
var disconnectPacket = []byte{packets.DISCONNECT << 4, 0}
