package uplink

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// Keeping seq order on the wire while up to MaxInflight publishes await their
// acks takes two hooks into paho, because paho.Publish both queues a packet
// and waits for its ack:
//   - orderedSession learns the packet id paho gives each PUBLISH;
//   - wireConn sees each packet written to the socket.
// The sender starts publish n+1 only when publish n's packet id was written
// (tracker), so the broker receives them in seq order.

// tracker pairs packet ids with the channels of publishes waiting to be written.
type tracker struct {
	mu      sync.Mutex
	waiting map[uint16]chan struct{}
}

func newTracker() *tracker { return &tracker{waiting: map[uint16]chan struct{}{}} }

type writtenKey struct{}

// withWritten returns a context whose QoS 1/2 publish closes ch once written.
func withWritten(ctx context.Context, ch chan struct{}) context.Context {
	return context.WithValue(ctx, writtenKey{}, ch)
}

func (t *tracker) expect(id uint16, ch chan struct{}) {
	t.mu.Lock()
	t.waiting[id] = ch
	t.mu.Unlock()
}

func (t *tracker) written(id uint16) {
	t.mu.Lock()
	ch, ok := t.waiting[id]
	delete(t.waiting, id)
	t.mu.Unlock()
	if ok {
		close(ch)
	}
}

// orderedSession is paho's in-memory session that tells the tracker which
// packet id a publish got.
type orderedSession struct {
	session.SessionManager
	tracker *tracker
}

func newOrderedSession(t *tracker) *orderedSession {
	return &orderedSession{SessionManager: state.NewInMemory(), tracker: t}
}

func (s *orderedSession) AddToSession(ctx context.Context, packet session.Packet, resp chan<- packets.ControlPacket) error {
	err := s.SessionManager.AddToSession(ctx, packet, resp)
	if err != nil {
		return err
	}
	if ch, ok := ctx.Value(writtenKey{}).(chan struct{}); ok {
		if pb, ok := packet.(*packets.Publish); ok {
			s.tracker.expect(pb.PacketID, ch)
		}
	}
	return nil
}

// wireConn is the broker connection as paho sees it. paho locks it (it is a
// sync.Locker) around each packet it writes, in pieces; wireConn gathers the
// pieces, writes the packet in one call, and reports the id of each QoS 1/2
// PUBLISH once written.
type wireConn struct {
	net.Conn
	tracker *tracker
	mu      sync.Mutex
	locked  bool
	buf     []byte
}

func (c *wireConn) Lock() {
	c.mu.Lock()
	c.locked = true
	c.buf = c.buf[:0]
}

func (c *wireConn) Write(b []byte) (int, error) {
	if !c.locked {
		return c.Conn.Write(b)
	}
	c.buf = append(c.buf, b...)
	return len(b), nil
}

func (c *wireConn) Unlock() {
	if _, err := c.Conn.Write(c.buf); err != nil {
		// paho does not see this error; a closed socket makes its reader fail at once.
		c.Conn.Close()
	}
	if id, ok := publishID(c.buf); ok {
		c.tracker.written(id)
	}
	c.locked = false
	c.mu.Unlock()
}

// publishID returns the packet id of a QoS 1 or 2 PUBLISH packet.
func publishID(p []byte) (uint16, bool) {
	if len(p) < 2 || p[0]>>4 != packets.PUBLISH || (p[0]>>1)&3 == 0 {
		return 0, false
	}
	i := 1
	for ; i < len(p) && i < 5 && p[i]&0x80 != 0; i++ { // remaining length, 1-4 bytes
	}
	i++
	if i+2 > len(p) {
		return 0, false
	}
	topicLen := int(p[i])<<8 | int(p[i+1])
	i += 2 + topicLen
	if i+2 > len(p) {
		return 0, false
	}
	return uint16(p[i])<<8 | uint16(p[i+1]), true
}

// dial opens a connection to a broker URL within timeout.
func dial(ctx context.Context, target *url.URL, tlsCfg *tls.Config, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch target.Scheme {
	case "tcp", "mqtt":
		var d net.Dialer
		return d.DialContext(ctx, "tcp", target.Host)
	case "tls", "ssl", "mqtts":
		d := tls.Dialer{Config: tlsCfg}
		return d.DialContext(ctx, "tcp", target.Host)
	default:
		return nil, fmt.Errorf("uplink: scheme %q is not supported", target.Scheme)
	}
}
