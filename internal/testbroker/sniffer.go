package testbroker

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	packets3 "github.com/eclipse/paho.mqtt.golang/packets"
)

// Packet is one MQTT packet a client sent, as a Sniffer saw it on the
// wire: what an observer at the broker (the Sparkplug TCK's HiveMQ
// extension) sees of the client.
type Packet struct {
	Conn  int // which connection through the sniffer, from 0
	Level byte
	At    time.Time
	Kind  string // CONNECT, PUBLISH, SUBSCRIBE, DISCONNECT, other
	// CONNECT
	CleanStart    bool
	SessionExpiry uint32
	Will          bool
	WillTopic     string
	WillQoS       byte
	WillRetain    bool
	WillPayload   []byte
	// PUBLISH
	Topic   string
	QoS     byte
	Retain  bool
	Payload []byte
	// SUBSCRIBE
	Filters []string
	// DISCONNECT (MQTT 5; 0 on 3.1.1)
	Reason byte
}

// Sniffer is a TCP front to a broker that passes everything through and
// records what clients send, decoded in the protocol each CONNECT names.
type Sniffer struct {
	l       net.Listener
	backend string

	mu      sync.Mutex
	packets []Packet
	conns   int
	open    map[net.Conn]bool
}

// StartSniffer listens on a free loopback port in front of backend.
func StartSniffer(t testing.TB, backend string) *Sniffer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Sniffer{l: l, backend: backend, open: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	accept(l, &wg, s.serve)
	return s
}

func (s *Sniffer) track(c net.Conn, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.open[c] = true
	} else {
		delete(s.open, c)
	}
}

func (s *Sniffer) serve(c net.Conn) {
	s.track(c, true)
	defer func() { s.track(c, false); c.Close() }()
	raw, level, ok := readConnect(c)
	if !ok {
		return
	}
	b, err := net.DialTimeout("tcp", s.backend, 5*time.Second)
	if err != nil {
		return
	}
	s.track(b, true)
	defer func() { s.track(b, false); b.Close() }()
	s.mu.Lock()
	conn := s.conns
	s.conns++
	s.mu.Unlock()
	if _, err := b.Write(raw); err != nil {
		return
	}
	s.record(conn, level, decodeConnect(raw, level))
	go func() { _, _ = io.Copy(c, b); c.Close() }()
	in := io.TeeReader(c, b) // what is read is passed on as it is
	for {
		p, ok := readPacket(in, level)
		if !ok {
			return
		}
		s.record(conn, level, p)
	}
}

func (s *Sniffer) record(conn int, level byte, p Packet) {
	p.Conn, p.Level, p.At = conn, level, time.Now()
	s.mu.Lock()
	s.packets = append(s.packets, p)
	s.mu.Unlock()
}

// decodeConnect reads a CONNECT in its protocol.
func decodeConnect(raw []byte, level byte) Packet {
	p := Packet{Kind: "CONNECT"}
	if level == 5 {
		cp, err := packets.ReadPacket(bytes.NewReader(raw))
		if err != nil {
			return p
		}
		c := cp.Content.(*packets.Connect)
		p.CleanStart, p.Will, p.WillTopic, p.WillQoS, p.WillRetain, p.WillPayload =
			c.CleanStart, c.WillFlag, c.WillTopic, c.WillQOS, c.WillRetain, c.WillMessage
		if c.Properties != nil && c.Properties.SessionExpiryInterval != nil {
			p.SessionExpiry = *c.Properties.SessionExpiryInterval
		}
		return p
	}
	cp, err := packets3.ReadPacket(bytes.NewReader(raw))
	if err != nil {
		return p
	}
	if c, ok := cp.(*packets3.ConnectPacket); ok {
		p.CleanStart, p.Will, p.WillTopic, p.WillQoS, p.WillRetain, p.WillPayload =
			c.CleanSession, c.WillFlag, c.WillTopic, c.WillQos, c.WillRetain, c.WillMessage
	}
	return p
}

// readPacket reads the client's next packet in its protocol.
func readPacket(r io.Reader, level byte) (Packet, bool) {
	if level == 5 {
		cp, err := packets.ReadPacket(r)
		if err != nil {
			return Packet{}, false
		}
		switch c := cp.Content.(type) {
		case *packets.Publish:
			return Packet{Kind: "PUBLISH", Topic: c.Topic, QoS: c.QoS, Retain: c.Retain, Payload: c.Payload}, true
		case *packets.Subscribe:
			p := Packet{Kind: "SUBSCRIBE"}
			for _, s := range c.Subscriptions {
				p.Filters = append(p.Filters, s.Topic)
			}
			return p, true
		case *packets.Disconnect:
			return Packet{Kind: "DISCONNECT", Reason: c.ReasonCode}, true
		}
		return Packet{Kind: "other"}, true
	}
	cp, err := packets3.ReadPacket(r)
	if err != nil {
		return Packet{}, false
	}
	switch c := cp.(type) {
	case *packets3.PublishPacket:
		return Packet{Kind: "PUBLISH", Topic: c.TopicName, QoS: c.Qos, Retain: c.Retain, Payload: c.Payload}, true
	case *packets3.SubscribePacket:
		return Packet{Kind: "SUBSCRIBE", Filters: c.Topics}, true
	case *packets3.DisconnectPacket:
		return Packet{Kind: "DISCONNECT"}, true
	}
	return Packet{Kind: "other"}, true
}

// Addr is host:port of the sniffer.
func (s *Sniffer) Addr() string { return s.l.Addr().String() }

// URL is the sniffer's tcp:// URL.
func (s *Sniffer) URL() string { return "tcp://" + s.Addr() }

// Packets returns what clients sent so far, in order.
func (s *Sniffer) Packets() []Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Packet(nil), s.packets...)
}
