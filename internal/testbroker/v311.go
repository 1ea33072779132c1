package testbroker

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// V5Refusal is how a 3.1.1-only broker answers an MQTT 5 CONNECT.
type V5Refusal int

const (
	// CloseOnV5 closes the connection without a CONNACK, as Mosquitto 1.4
	// ("Invalid protocol version 5 in CONNECT") and RabbitMQ 3.10 do.
	CloseOnV5 V5Refusal = iota
	// RefuseV5 answers with a 3.1.1 CONNACK, return code 1 (unacceptable
	// protocol version), then closes, as the 3.1.1 specification says.
	RefuseV5
)

// V311Front is a Mosquitto that speaks only MQTT 3.1.1: a TCP front that
// refuses MQTT 5 CONNECTs as an older broker does and passes every other
// connection to the real Mosquitto behind it. Mosquitto 2 speaks both
// versions and cannot be made to refuse 5.
type V311Front struct {
	l       net.Listener
	backend string
	how     V5Refusal

	mu       sync.Mutex
	refused  int
	accepted int
	conns    map[net.Conn]bool
	closed   bool
}

// StartV311Front listens on a free loopback port in front of backend
// (host:port of a broker).
func StartV311Front(t testing.TB, backend string, how V5Refusal) *V311Front {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &V311Front{l: l, backend: backend, how: how, conns: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	t.Cleanup(func() { f.Stop(); wg.Wait() })
	accept(l, &wg, func(c net.Conn) {
		if !f.track(c) {
			c.Close()
			return
		}
		f.serve(c)
	})
	return f
}

// track keeps c to be closed by Stop; false once stopped.
func (f *V311Front) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = true
	return true
}

func (f *V311Front) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *V311Front) serve(c net.Conn) {
	defer f.untrack(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	connect, level, ok := readConnect(c)
	if !ok {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if level == 5 {
		f.mu.Lock()
		f.refused++
		f.mu.Unlock()
		if f.how == RefuseV5 {
			_, _ = c.Write([]byte{0x20, 2, 0, 1})
		}
		return
	}
	b, err := net.DialTimeout("tcp", f.backend, 5*time.Second)
	if err != nil || !f.track(b) {
		return
	}
	defer f.untrack(b)
	f.mu.Lock()
	f.accepted++
	f.mu.Unlock()
	if _, err := b.Write(connect); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(c, b)
		c.Close()
		close(done)
	}()
	_, _ = io.Copy(b, c)
	b.Close()
	<-done
}

// readConnect reads a whole CONNECT packet and its protocol level.
func readConnect(c net.Conn) (packet []byte, level byte, ok bool) {
	head := make([]byte, 1, 5)
	if _, err := io.ReadFull(c, head); err != nil || head[0]>>4 != 1 {
		return nil, 0, false
	}
	length, shift := 0, 0
	for {
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || len(head) == 5 {
			return nil, 0, false
		}
		head = append(head, b[0])
		length |= int(b[0]&0x7f) << shift
		shift += 7
		if b[0]&0x80 == 0 {
			break
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(c, body); err != nil || length < 7 {
		return nil, 0, false
	}
	nameLen := int(body[0])<<8 | int(body[1])
	if 2+nameLen >= length {
		return nil, 0, false
	}
	return append(head, body...), body[2+nameLen], true
}

// Stop closes the listener and every connection: the broker is gone.
func (f *V311Front) Stop() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.l.Close()
}

// Addr is host:port of the front.
func (f *V311Front) Addr() string { return f.l.Addr().String() }

// URL is the front's tcp:// URL.
func (f *V311Front) URL() string { return "tcp://" + f.Addr() }

// Counts returns how many MQTT 5 CONNECTs were refused and how many other
// connections were passed to the broker.
func (f *V311Front) Counts() (refused, accepted int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused, f.accepted
}
