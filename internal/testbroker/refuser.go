package testbroker

import (
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Refuser{l: l}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
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
				r.answer(c, code, serverReference)
			}()
		}
	}()
	return r
}

func (r *Refuser) answer(c net.Conn, code byte, ref string) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	cp, err := packets.ReadPacket(c)
	if err != nil || cp.Type != packets.CONNECT {
		return
	}
	ack := packets.NewControlPacket(packets.CONNACK)
	ca := ack.Content.(*packets.Connack)
	ca.ReasonCode = code
	ca.Properties = &packets.Properties{ServerReference: ref}
	r.mu.Lock()
	r.at = append(r.at, time.Now())
	r.mu.Unlock()
	_, _ = ack.WriteTo(c)
}

// Addr is host:port of the refuser.
func (r *Refuser) Addr() string { return r.l.Addr().String() }

// URL is the refuser's tcp:// URL.
func (r *Refuser) URL() string { return "tcp://" + r.Addr() }

// Answered returns when each CONNECT was refused, oldest first.
func (r *Refuser) Answered() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.at...)
}
