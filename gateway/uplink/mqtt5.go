package uplink

import (
	"context"
	"fmt"

	"github.com/eclipse/paho.golang/paho"

	"edgegw/gateway/batch"
)

// The limits sent in an MQTT 5 CONNECT for what the broker sends us: commands.
const (
	// receiveMaximum is how many QoS 1/2 commands may be unacknowledged at once.
	receiveMaximum = 16
	// maxIncomingPacket bounds one command's packet; an MQTT 5 broker
	// drops larger ones rather than send them, and a wireConn closes the
	// connection at one, whatever the protocol.
	maxIncomingPacket = 64 << 10
)

// link5 is an MQTT 5 session: paho.golang's client on a wireConn, which
// orders its publishes on the wire (wire.go).
type link5 struct {
	cli *paho.Client
}

// connect5 speaks MQTT 5 on w: CONNECT with a clean start, and the session
// once the broker accepts. On failure w is closed.
func connect5(ctx context.Context, w *wireConn, p connectParams) (link, limits, error) {
	t := newTracker()
	w.tracker = t
	cli := paho.NewClient(paho.ClientConfig{
		Conn:     w,
		ClientID: p.clientID,
		Session:  newOrderedSession(t),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			m := pr.Packet
			in := inbound{Topic: m.Topic, Payload: m.Payload, Retain: m.Retain}
			if props := m.Properties; props != nil {
				in.ResponseTopic, in.Correlation, in.Expiry = props.ResponseTopic, props.CorrelationData, props.MessageExpiry
			}
			p.receive(in)
			return true, nil
		}},
		OnClientError: p.clientError,
		OnServerDisconnect: func(d *paho.Disconnect) {
			var reason, ref string
			if d.Properties != nil {
				reason, ref = d.Properties.ReasonString, d.Properties.ServerReference
			}
			p.serverDisconnect(d.ReasonCode, reason, ref)
		},
	})
	// What the broker may send us is commands: a few at a time, small.
	// paho sizes its incoming queue by Receive Maximum (65,535 slots,
	// 512 KiB a connection, when none is sent).
	rm, mps := uint16(receiveMaximum), uint32(maxIncomingPacket)
	cp := &paho.Connect{
		ClientID:   p.clientID,
		CleanStart: true, // every connection starts clean: the buffer resends what matters
		KeepAlive:  p.keepAlive,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &rm, MaximumPacketSize: &mps},
		WillMessage: &paho.WillMessage{
			Topic: p.will.Topic, Payload: p.will.Payload, QoS: p.will.QoS, Retain: p.will.Retain,
		},
		WillProperties: &paho.WillProperties{},
	}
	if p.username != "" {
		cp.UsernameFlag, cp.Username = true, p.username
	}
	if len(p.password) > 0 {
		cp.PasswordFlag, cp.Password = true, p.password
	}
	ack, err := cli.Connect(ctx, cp)
	if err != nil {
		return nil, limits{}, classify5(ack, err, w)
	}
	lim := limits{maxQoS: 2}
	if props := ack.Properties; props != nil {
		if props.MaximumQoS != nil {
			lim.maxQoS = *props.MaximumQoS
		}
		if props.MaximumPacketSize != nil {
			lim.maxPacket = *props.MaximumPacketSize
		}
	}
	return &link5{cli: cli}, lim, nil
}

// classify5 turns paho's failed Connect into a connectError.
func classify5(ack *paho.Connack, err error, w *wireConn) error {
	e := &connectError{proto: MQTT5, err: err}
	switch rc, v3 := w.v3Connack(); {
	case ack != nil:
		e.answered, e.code = true, ack.ReasonCode
		if ack.Properties != nil {
			e.reason = ack.Properties.ReasonString
		}
	case v3:
		// A 3.1.1 broker's answer to a version it does not know.
		e.answered, e.code, e.reason = true, rc, returnCodes[rc]
	case w.received() == 0 && !isTimeout(err):
		e.closed = true
	}
	return e
}

func (l *link5) publish(ctx context.Context, p *publication, written chan struct{}) (byte, string, error) {
	if written != nil {
		ctx = withWritten(ctx, written)
	}
	pr, err := l.cli.Publish(ctx, toPaho(p))
	if pr == nil {
		return 0, "", err
	}
	reason := ""
	if pr.Properties != nil {
		reason = pr.Properties.ReasonString
	}
	if pr.ReasonCode >= 0x80 {
		// paho reports a refusal as an error too; the code says it all.
		return pr.ReasonCode, reason, nil
	}
	return pr.ReasonCode, reason, err
}

func (l *link5) subscribe(ctx context.Context, filters []string, noRetained bool) error {
	sub := &paho.Subscribe{}
	for _, f := range filters {
		o := paho.SubscribeOptions{Topic: f, QoS: 1}
		if noRetained {
			o.RetainHandling = 2
		}
		sub.Subscriptions = append(sub.Subscriptions, o)
	}
	ack, err := l.cli.Subscribe(ctx, sub)
	if err != nil {
		return err
	}
	for i, code := range ack.Reasons {
		if code >= 0x80 && i < len(filters) {
			return fmt.Errorf("subscription to %s refused: reason code 0x%02x", filters[i], code)
		}
	}
	return nil
}

func (l *link5) done() <-chan struct{} { return l.cli.Done() }

// toPaho is p as paho.golang publishes it, with its MQTT 5 properties.
func toPaho(p *publication) *paho.Publish {
	pub := &paho.Publish{Topic: p.Topic, QoS: p.QoS, Retain: p.Retain, Payload: p.Payload}
	if p.ContentType != "" || p.Encoding != "" || p.Correlation != nil {
		pub.Properties = &paho.PublishProperties{ContentType: p.ContentType, CorrelationData: p.Correlation}
		if p.Encoding != "" {
			pub.Properties.User = paho.UserProperties{{Key: batch.EncodingProperty, Value: p.Encoding}}
		}
	}
	return pub
}

// packetSize is the size of p on the wire in protocol proto, as a broker's
// Maximum Packet Size counts it: the whole packet, fixed header included,
// with MQTT 5's properties as toPaho sets them.
func packetSize(p *publication, proto Protocol) int {
	n := 2 + len(p.Topic) + len(p.Payload)
	if proto != MQTT311 {
		n += propertiesSize(p)
	}
	if p.QoS > 0 {
		n += 2 // packet id
	}
	return 1 + varintLen(n) + n
}

// packetSizeOf is packetSize of a PUBLISH without properties.
func packetSizeOf(topic string, payload int, qos byte, proto Protocol) int {
	n := 2 + len(topic) + payload
	if proto != MQTT311 {
		n++ // no properties
	}
	if qos > 0 {
		n += 2 // packet id
	}
	return 1 + varintLen(n) + n
}

// propertiesSize is the size of p's MQTT 5 properties, their length included.
func propertiesSize(p *publication) int {
	props := 0
	if p.ContentType != "" {
		props += 1 + 2 + len(p.ContentType)
	}
	if len(p.Correlation) > 0 {
		props += 1 + 2 + len(p.Correlation)
	}
	if p.Encoding != "" {
		props += 1 + 2 + len(batch.EncodingProperty) + 2 + len(p.Encoding)
	}
	return varintLen(props) + props
}

// varintLen is the length of n as an MQTT variable byte integer.
func varintLen(n int) int {
	l := 1
	for n >>= 7; n > 0; n >>= 7 {
		l++
	}
	return l
}
