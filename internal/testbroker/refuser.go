package testbroker

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// Refuser is a broker that refuses every CONNECT with one CONNACK reason
// code (0x89 server busy, 0x9C use another server, ...), as Mosquitto
// cannot be made to: a small test broker for what clients do then.
type Refuser struct {
	l  net.Listener
	mu sync.Mutex
	at []time.Time // when each CONNECT was answered
}

// StartRefuser listens on a free loopback port and answers every CONNECT
// with a CONNACK carrying code and, when not empty, a Server Reference.
func StartRefuser(t testing.TB, code byte, serverReference string) *Refuser {
	t.Helper()
	return start(t, func(c net.Conn) { answer(c, code, serverReference) })
}

// StartMover accepts every CONNECT, then at once sends DISCONNECT 0x9C
// ("use another server") with serverReference, as a cluster node that
// sheds load does; Answered says when it accepted each.
func StartMover(t testing.TB, serverReference string) *Refuser {
	t.Helper()
	return start(t, func(c net.Conn) {
		if answer(c, 0, "") {
			d := packets.NewControlPacket(packets.DISCONNECT)
			dc := d.Content.(*packets.Disconnect)
			dc.ReasonCode = 0x9C
			dc.Properties = &packets.Properties{ServerReference: serverReference}
			_, _ = d.WriteTo(c)
		}
	})
}

// StartFlooder accepts every CONNECT, then sends a PUBLISH of size bytes
// on topic whatever Maximum Packet Size the client asked for, as a broken
// or hostile broker would.
func StartFlooder(t testing.TB, topic string, size int) *Refuser {
	t.Helper()
	return start(t, func(c net.Conn) {
		if !answer(c, 0, "") {
			return
		}
		p := packets.NewControlPacket(packets.PUBLISH)
		p.Content.(*packets.Publish).Topic = topic
		p.Content.(*packets.Publish).Payload = make([]byte, size)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = p.WriteTo(c) // ends when the client closes
	})
}

func start(t testing.TB, serve func(net.Conn)) *Refuser {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Refuser{l: l}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	accept(l, &wg, func(c net.Conn) {
		defer c.Close()
		serve(c)
		r.mu.Lock()
		r.at = append(r.at, time.Now())
		r.mu.Unlock()
	})
	return r
}

// accept serves every connection l accepts on a goroutine of its own,
// counted in wg, until l is closed.
func accept(l net.Listener, wg *sync.WaitGroup, serve func(net.Conn)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(c)
			}()
		}
	}()
}

// answer reads a CONNECT and answers it with a CONNACK; it reports
// whether it did. An MQTT 3.1.1 CONNECT gets a 3.1.1 CONNACK with the
// return code of the same meaning (v311Code).
func answer(c net.Conn, code byte, ref string) bool {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	raw, level, ok := readConnect(c)
	if !ok {
		return false
	}
	if level == 4 {
		_, err := c.Write([]byte{0x20, 2, 0, v311Code(code)})
		return err == nil
	}
	cp, err := packets.ReadPacket(bytes.NewReader(raw))
	if err != nil || cp.Type != packets.CONNECT {
		return false
	}
	ack := packets.NewControlPacket(packets.CONNACK)
	ca := ack.Content.(*packets.Connack)
	ca.ReasonCode = code
	ca.Properties = &packets.Properties{ServerReference: ref}
	_, err = ack.WriteTo(c)
	return err == nil
}

// v311Code is the MQTT 3.1.1 CONNACK return code that says what an MQTT 5
// reason code says, as near as 3.1.1 can: busy, rate exceeded, use another
// server and the like are all 3 (server unavailable).
func v311Code(code byte) byte {
	switch code {
	case 0:
		return 0
	case 0x84:
		return 1 // unacceptable protocol version
	case 0x85:
		return 2 // identifier rejected
	case 0x86:
		return 4 // bad user name or password
	case 0x87:
		return 5 // not authorized
	}
	return 3
}

// Addr is host:port of the refuser.
func (r *Refuser) Addr() string { return r.l.Addr().String() }

// URL is the refuser's tcp:// URL.
func (r *Refuser) URL() string { return "tcp://" + r.Addr() }

// Answered returns when each connection was served, oldest first.
func (r *Refuser) Answered() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.at...)
}

// PublishLarge connects to the broker at addr as a plain MQTT v5 client and
// publishes size zero bytes on topic at QoS 0, written in 1 MiB pieces so
// that neither side holds the message twice; it returns once all of it
// was written and the client disconnected.
func PublishLarge(t testing.TB, addr, topic string, size int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	connect := packets.NewControlPacket(packets.CONNECT)
	cc := connect.Content.(*packets.Connect)
	cc.ProtocolName, cc.ProtocolVersion, cc.CleanStart, cc.ClientID = "MQTT", 5, true, "test-large-publisher"
	if _, err := connect.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	if ack, err := packets.ReadPacket(c); err != nil || ack.Type != packets.CONNACK {
		t.Fatalf("no CONNACK: %v", err)
	}
	// PUBLISH, QoS 0: fixed header, topic, empty properties, payload.
	body := 2 + len(topic) + 1 + size
	header := []byte{packets.PUBLISH << 4}
	for n := body; ; {
		b := byte(n & 0x7f)
		if n >>= 7; n > 0 {
			header = append(header, b|0x80)
			continue
		}
		header = append(header, b)
		break
	}
	header = append(header, byte(len(topic)>>8), byte(len(topic)))
	header = append(header, topic...)
	header = append(header, 0)
	if _, err := c.Write(header); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for left := size; left > 0; left -= len(chunk) {
		if _, err := c.Write(chunk[:min(left, len(chunk))]); err != nil {
			t.Fatalf("after %d of %d bytes: %v", size-left, size, err)
		}
	}
	_, _ = packets.NewControlPacket(packets.DISCONNECT).WriteTo(c)
}
