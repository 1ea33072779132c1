package uplink

import (
	"context"
	"errors"
	"fmt"
)

// The uplink's logic (the window over the store, seq order on the wire,
// batches, pacing, the Session, commands, broker selection and fail-back)
// is written once, above a link: one MQTT connection, whatever protocol it
// speaks. Two protocols implement it: MQTT 5 (mqtt5.go, paho.golang) and
// MQTT 3.1.1 (mqtt311.go, paho.mqtt.golang). Both run over a wireConn the
// uplink dialled, so silence detection, the incoming packet limit and the
// DISCONNECT on leaving are the same for both.

// Protocol is the MQTT version spoken to a broker.
type Protocol int

const (
	// Auto speaks MQTT 5 and falls back to 3.1.1, per address, for a
	// broker that refuses 5 (CONNACK 0x84 or 3.1.1 return code 1, or a
	// close after CONNECT without any CONNACK).
	Auto Protocol = iota
	// MQTT5 speaks MQTT 5 only.
	MQTT5
	// MQTT311 speaks MQTT 3.1.1 only.
	MQTT311
)

func (p Protocol) String() string {
	switch p {
	case MQTT5:
		return "5"
	case MQTT311:
		return "3.1.1"
	}
	return "auto"
}

// ParseProtocol reads mqtt.protocol: "auto", "5" or "3.1.1".
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "auto", "":
		return Auto, nil
	case "5":
		return MQTT5, nil
	case "3.1.1":
		return MQTT311, nil
	}
	return Auto, fmt.Errorf("%q is not auto, 5 or 3.1.1", s)
}

// link is one connected MQTT session, MQTT 5 or 3.1.1.
type link interface {
	// publish sends p and returns once the broker acknowledged it
	// (PUBACK for QoS 1, PUBCOMP for QoS 2) or, for QoS 0, once it is
	// written. written, when not nil, is closed once p's packet is queued
	// on the wire behind every packet published before: the next publish
	// cannot overtake it. code is the acknowledgement's reason code (MQTT
	// 5; 0 on 3.1.1, which has none).
	publish(ctx context.Context, p *publication, written chan struct{}) (code byte, reason string, err error)
	// subscribe subscribes to filters at QoS 1; noRetained asks the
	// broker not to send stored retained messages (MQTT 5 only). An error
	// says a filter was refused or the broker did not answer.
	subscribe(ctx context.Context, filters []string, noRetained bool) error
	// done is closed once the connection is lost or left and the
	// client's goroutines have ended.
	done() <-chan struct{}
}

// publication is one PUBLISH, whatever the protocol.
type publication struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// MQTT 5 only; a 3.1.1 link drops them (docs/MQTT.md, "MQTT 5 vs 3.1.1").
	ContentType string
	Encoding    string // the user property content-encoding, "" for none
	Correlation []byte
}

// inbound is a PUBLISH a broker sent, whatever the protocol.
type inbound struct {
	Topic   string
	Payload []byte
	Retain  bool
	// MQTT 5 only: empty or nil on 3.1.1.
	ResponseTopic string
	Correlation   []byte
	Expiry        *uint32 // Message Expiry Interval, seconds
}

// will is the message of a CONNECT that the broker publishes when the
// connection is lost without DISCONNECT.
type will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// limits are what a broker's CONNACK says of what it takes.
type limits struct {
	// maxQoS is the highest QoS the broker accepts (MQTT 5); 2 when it
	// said nothing.
	maxQoS byte
	// maxPacket is the broker's Maximum Packet Size, 0 when it set none
	// (always on 3.1.1): it disconnects on a larger packet.
	maxPacket uint32
}

// connectParams is what a link needs to connect on a dialled wireConn.
type connectParams struct {
	clientID string
	username string
	password []byte
	// keepAlive in whole seconds.
	keepAlive uint16
	will      will
	// receive handles a message the broker sent; it must not block for
	// long: the protocol's acknowledgements wait for it.
	receive func(inbound)
	// serverDisconnect is told of the broker's DISCONNECT (MQTT 5 only):
	// its reason code, reason string and Server Reference.
	serverDisconnect func(code byte, reason, reference string)
	// clientError is told of errors of the client's own goroutines.
	clientError func(error)
	// skipped is told of a message too large to read (MQTT 3.1.1, which
	// cannot announce a limit): its topic and size. It was dropped unread.
	skipped func(topic string, size int)
}

// connectError is a CONNECT that gave no session.
type connectError struct {
	proto Protocol
	// code is the refusing CONNACK's reason code (MQTT 5) or return code
	// (3.1.1); answered says one came.
	code     byte
	answered bool
	reason   string
	// closed says the broker closed the connection before sending
	// anything: what a broker that does not speak the protocol does.
	closed bool
	err    error
}

func (e *connectError) Error() string {
	switch {
	case e.answered && e.proto == MQTT311:
		return fmt.Sprintf("CONNACK return code %d: %s", e.code, returnCodes[e.code])
	case e.answered && e.reason != "":
		return fmt.Sprintf("CONNACK reason code 0x%02x: %s", e.code, e.reason)
	case e.answered:
		return fmt.Sprintf("CONNACK reason code 0x%02x", e.code)
	case e.closed:
		return fmt.Sprintf("the broker closed the connection after an MQTT %s CONNECT without answering", e.proto)
	}
	return e.err.Error()
}

func (e *connectError) Unwrap() error { return e.err }

// refusesProtocol reports whether the broker refused the protocol version
// itself: MQTT 5's 0x84, 3.1.1's return code 1 (which a 3.1.1 broker also
// sends to a v5 CONNECT), or a close without any CONNACK.
func (e *connectError) refusesProtocol() bool {
	return e.closed || e.answered && (e.code == 1 || e.code == 0x84)
}

// busy reports whether the broker said it sheds load: MQTT 5's 0x89
// (server busy) and 0x9F (connection rate exceeded), 3.1.1's return code 3
// (server unavailable).
func (e *connectError) busy() bool {
	if !e.answered {
		return false
	}
	if e.proto == MQTT311 {
		return e.code == 3
	}
	return e.code == 0x89 || e.code == 0x9F
}

// returnCodes are the CONNACK return codes of MQTT 3.1.1.
var returnCodes = map[byte]string{
	1: "unacceptable protocol version",
	2: "identifier rejected",
	3: "server unavailable",
	4: "bad user name or password",
	5: "not authorized",
}

// errConnectionLost ends a publish whose connection went before its acknowledgement.
var errConnectionLost = errors.New("connection lost before the broker acknowledged")
