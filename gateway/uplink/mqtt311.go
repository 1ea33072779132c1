package uplink

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// link311 is an MQTT 3.1.1 session: paho.mqtt.golang's client, one per
// connection, on the wireConn the uplink dialled. Its reconnect, resume and
// store are off: the flash buffer is the source of truth, as on MQTT 5.
//
// Order on the wire: its Publish hands the packet to one outgoing queue
// before it returns, and one goroutine writes that queue in order, so a
// publish is "written" (cannot be overtaken) once Publish has returned.
type link311 struct {
	cli  mqtt.Client
	lost chan struct{} // closed when the connection is lost or left
}

// connect311 speaks MQTT 3.1.1 on w: CONNECT with a clean session, and
// the session once the broker accepts. On failure w is closed.
func connect311(ctx context.Context, w *wireConn, p connectParams, timeout time.Duration) (link, limits, error) {
	l := &link311{lost: make(chan struct{})}
	var lostOnce sync.Once
	opts := mqtt.NewClientOptions().
		// The address is dialled already: the URL only names it.
		AddBroker("tcp://"+w.RemoteAddr().String()).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) { return w, nil }).
		SetProtocolVersion(4).
		SetClientID(p.clientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetStore(mqtt.NewMemoryStore()).
		SetKeepAlive(time.Duration(p.keepAlive)*time.Second).
		SetPingTimeout(timeout).
		SetConnectTimeout(timeout).
		// A publish waits this long at most for the outgoing queue of a
		// connection that is going down.
		SetWriteTimeout(timeout).
		// Commands are handled in the order they came, on the client's
		// router goroutine: receive does not block.
		SetOrderMatters(true).
		SetBinaryWill(p.will.Topic, p.will.Payload, p.will.QoS, p.will.Retain).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			p.receive(inbound{Topic: m.Topic(), Payload: m.Payload(), Retain: m.Retained()})
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			lostOnce.Do(func() { close(l.lost) })
		})
	if p.username != "" {
		opts.SetUsername(p.username)
	}
	if len(p.password) > 0 {
		opts.SetPassword(string(p.password))
	}
	// No Maximum Packet Size can be announced on 3.1.1: a PUBLISH over
	// maxIncomingPacket is cut out of the stream unread, and acknowledged
	// here, so that it costs neither memory nor the connection.
	w.frames.skip = func(size int, qos byte, start []byte) {
		topicLen := int(start[0])<<8 | int(start[1])
		if qos == 1 {
			id := start[2+topicLen:]
			_, _ = w.enqueue([]byte{packets.Puback << 4, 2, id[0], id[1]})
		}
		if p.skipped != nil {
			p.skipped(string(start[2:2+topicLen]), size)
		}
	}
	l.cli = mqtt.NewClient(opts)
	// paho.mqtt.golang has no context: a cancelled attempt closes the socket.
	stop := context.AfterFunc(ctx, func() { _ = w.Close() })
	defer stop()
	tok := l.cli.Connect()
	<-tok.Done()
	if err := tok.Error(); err != nil {
		_ = w.Close()
		e := &connectError{proto: MQTT311, err: err}
		switch rc := tok.(*mqtt.ConnectToken).ReturnCode(); {
		case rc > 0 && rc < packets.ErrNetworkError:
			e.answered, e.code = true, rc
		case ctx.Err() != nil:
			e.err = ctx.Err()
		case w.received() == 0 && !isTimeout(err):
			e.closed = true
		}
		return nil, limits{}, e
	}
	return l, limits{maxQoS: 2}, nil
}

func (l *link311) publish(ctx context.Context, p *publication, written chan struct{}) (byte, string, error) {
	tok := l.cli.Publish(p.Topic, p.QoS, p.Retain, p.Payload)
	if written != nil {
		close(written)
	}
	select {
	case <-tok.Done():
		return 0, "", tok.Error()
	case <-ctx.Done():
		return 0, "", ctx.Err()
	case <-l.lost:
		return 0, "", errConnectionLost
	}
}

func (l *link311) subscribe(ctx context.Context, filters []string, _ bool) error {
	want := make(map[string]byte, len(filters))
	for _, f := range filters {
		want[f] = 1
	}
	tok := l.cli.SubscribeMultiple(want, nil)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-l.lost:
		return errConnectionLost
	}
	if err := tok.Error(); err != nil {
		return err
	}
	for f, granted := range tok.(*mqtt.SubscribeToken).Result() {
		if granted >= 0x80 {
			return fmt.Errorf("subscription to %s refused (SUBACK 0x%02x)", f, granted)
		}
	}
	return nil
}

func (l *link311) done() <-chan struct{} { return l.lost }
