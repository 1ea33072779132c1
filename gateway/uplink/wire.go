package uplink

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"edgegw/internal/quietnet"
	"github.com/eclipse/paho.golang/packets"
)

// wireConn is the broker connection as paho sees it. paho locks it (it is a
// sync.Locker) around each packet it writes, in pieces; wireConn appends the
// whole packet to an output queue, reports the id of each QoS 1/2 PUBLISH as
// queued (the queue is the wire's order), and a flusher writes what the
// queue holds in one call: one packet per write when idle, many under load.
type wireConn struct {
	net.Conn
	tracker *tracker // MQTT 5's; nil on 3.1.1, whose client orders its own writes
	// silence is how long the broker may send nothing before the
	// connection counts as hung; lastRead is when it last sent (unix nanos).
	silence  time.Duration
	lastRead atomic.Int64
	onHung   func()
	// read counts the bytes the broker sent on this connection.
	read atomic.Uint64
	// first collects the broker's first bytes until they hold its
	// CONNACK; only the reading goroutine touches it.
	first   []byte
	connack atomic.Pointer[packets.Connack]
	// frames follows the packets the broker sends, so that one larger
	// than we allowed in CONNECT ends the connection (or is cut out)
	// before the client reads it into memory; in holds what it let
	// through and the client has not read yet, readErr the error to give
	// once in is empty. Only the reading goroutine touches them.
	frames     frames
	in         []byte
	readErr    error
	scratch    []byte         // the buffer of reads smaller than readSize
	tooBig     error          // the refusal, once a packet was too large
	onTooLarge func(error)    // told of it, once
	bytesIn    *atomic.Uint64 // the uplink's count of bytes received

	mu     sync.Mutex // held by paho from Lock to Unlock
	locked bool
	packet []byte

	qmu   sync.Mutex
	queue []byte
	// pings are the PINGREQs on the wire not answered yet, in order: nil
	// for the client's own, a channel for a barrier's (closed, and the
	// PINGRESP kept from the client, when it is answered).
	pings   []chan struct{}
	err     error         // the first write error; the connection is closed then
	wake    chan struct{} // the flusher has work
	stopped chan struct{} // the flusher has exited
	done    chan struct{} // closed by Close: the watchdog exits
	closing bool
}

// newWireConn starts the flusher and, when silence > 0, the watchdog; both
// end with Close.
func newWireConn(c net.Conn, silence time.Duration, onHung func()) *wireConn {
	w := &wireConn{Conn: c, silence: silence, onHung: onHung,
		wake: make(chan struct{}, 1), stopped: make(chan struct{}), done: make(chan struct{})}
	w.frames.pong = w.pong
	w.lastRead.Store(time.Now().UnixNano())
	go w.flush()
	if silence > 0 {
		go w.watch()
	}
	return w
}

// Read gives the client what the broker sent, less the packets frames cut out.
func (c *wireConn) Read(b []byte) (int, error) {
	for len(c.in) == 0 {
		if c.readErr != nil {
			return 0, c.readErr
		}
		c.fill(b)
	}
	n := copy(b, c.in)
	c.in = c.in[n:]
	return n, nil
}

// fill reads once from the broker, using b as the buffer, and appends to
// c.in what the client may read; an error is kept for when c.in is empty.
func (c *wireConn) fill(b []byte) {
	if c.tooBig != nil {
		c.readErr = c.tooBig
		return
	}
	if len(b) < readSize {
		// The clients read a packet's header a byte at a time: one
		// system call each would also make skipping a huge packet slow.
		if c.scratch == nil {
			c.scratch = make([]byte, readSize)
		}
		b = c.scratch
	}
	n, err := c.Conn.Read(b)
	if errors.Is(err, net.ErrClosed) {
		// paho.mqtt.golang takes "use of closed network connection" for
		// its own Disconnect and would never report the loss.
		err = errClosedHere
	}
	c.readErr = err
	if n == 0 {
		return
	}
	c.lastRead.Store(time.Now().UnixNano())
	c.read.Add(uint64(n))
	if c.bytesIn != nil {
		c.bytesIn.Add(uint64(n))
	}
	from := len(c.in)
	var ok bool
	var size int
	if c.in, size, ok = c.frames.filter(c.in, b[:n]); !ok {
		// Not one byte of it reaches the client: the connection is lost.
		c.tooBig = fmt.Errorf("the broker sent a packet of %d bytes, over the %d bytes allowed in CONNECT (Maximum Packet Size)", size, maxIncomingPacket)
		if c.onTooLarge != nil {
			c.onTooLarge(c.tooBig)
		}
		_ = c.Conn.Close()
		c.in, c.readErr = c.in[:from], c.tooBig
		return
	}
	if c.connack.Load() == nil && len(c.in) > from {
		c.sniff(c.in[from:])
	}
}

// readSize is the least a wireConn reads from the socket at once.
const readSize = 8 << 10

// errClosedHere is what reading a connection the uplink closed returns:
// it left the broker, found it silent, or refused what it sent.
var errClosedHere = errors.New("connection closed by the gateway")

// frames tracks packet boundaries in what the broker sends: the fixed
// header of each packet (type byte, 1–4 bytes of remaining length), then
// its body. A packet over maxIncomingPacket is refused; on MQTT 3.1.1,
// which cannot announce a Maximum Packet Size, a PUBLISH at QoS 0 or 1 over
// it is cut out of the stream instead (skip), so that a huge message on a
// command topic costs neither memory nor the connection.
type frames struct {
	header []byte // the current packet's fixed header, while incomplete: held back
	body   int    // bytes of the current packet's body still to come
	// skip, when set, takes the oversized PUBLISHes cut out; it gets the
	// packet's size, QoS and the start of its body (topic and packet id).
	skip     func(size int, qos byte, start []byte)
	skipping bool // the current packet's bytes are dropped
	// pong, when set, is told of each PINGRESP and says whether to keep it
	// from the client (a barrier's).
	pong  func() bool
	size  int    // the size of the packet being skipped
	qos   byte   // its QoS
	start []byte // its first body bytes, until topic and packet id are known
}

// filter follows b and appends to out what the client may read; ok is
// false, with the packet's size, at a packet larger than maxIncomingPacket
// that cannot be skipped (or a malformed length).
func (f *frames) filter(out, b []byte) (_ []byte, size int, ok bool) {
	for len(b) > 0 {
		if f.body > 0 {
			n := min(f.body, len(b))
			if f.skipping {
				f.capture(b[:n])
			} else {
				out = append(out, b[:n]...)
			}
			f.body, b = f.body-n, b[n:]
			if f.body == 0 && f.skipping {
				f.skipping = false
			}
			continue
		}
		f.header = append(f.header, b[0])
		b = b[1:]
		if len(f.header) < 2 || f.header[len(f.header)-1]&0x80 != 0 {
			if len(f.header) == 5 {
				return out, 0, false // a fifth length byte: not MQTT
			}
			continue
		}
		length := remainingLength(f.header[1:])
		size := len(f.header) + length
		qos := (f.header[0] >> 1) & 3
		switch {
		case f.header[0] == 0xD0 && length == 0 && f.pong != nil && f.pong():
			// A barrier's PINGRESP: not the client's.
		case size <= maxIncomingPacket:
			out = append(out, f.header...)
		case f.skip != nil && f.header[0]>>4 == packets.PUBLISH && qos < 2:
			f.skipping, f.size, f.qos, f.start = true, size, qos, f.start[:0]
		default:
			return out, size, false
		}
		f.header, f.body = f.header[:0], length
	}
	return out, 0, true
}

// remainingLength decodes the Remaining Length of a fixed header from its
// 1–4 length bytes (those after the type byte).
func remainingLength(b []byte) int {
	length, shift := 0, 0
	for _, x := range b {
		length |= int(x&0x7f) << shift
		shift += 7
	}
	return length
}

// capture keeps the start of a skipped PUBLISH's body until its topic (and
// packet id, at QoS 1) are known, then reports it, once.
func (f *frames) capture(b []byte) {
	if f.size == 0 {
		return // reported
	}
	for len(b) > 0 && len(f.start) < f.need() {
		take := min(f.need()-len(f.start), len(b))
		f.start, b = append(f.start, b[:take]...), b[take:]
	}
	if len(f.start) >= f.need() {
		f.skip(f.size, f.qos, f.start)
		f.size = 0
	}
}

// need is how many body bytes hold a PUBLISH's topic and packet id.
func (f *frames) need() int {
	if len(f.start) < 2 {
		return 2
	}
	n := 2 + (int(f.start[0])<<8 | int(f.start[1]))
	if f.qos > 0 {
		n += 2
	}
	return n
}

// received returns how many bytes the broker has sent on this connection.
func (c *wireConn) received() uint64 { return c.read.Load() }

// sniff keeps the first packet the broker sends, its CONNACK, whose
// properties paho does not pass on when it refuses (a Server Reference).
func (c *wireConn) sniff(b []byte) {
	c.first = append(c.first, b...)
	if _, v3 := c.v3Connack(); v3 {
		c.connack.Store(&packets.Connack{}) // no properties to find
		return
	}
	if len(c.first) > maxIncomingPacket {
		c.connack.Store(&packets.Connack{}) // not a CONNACK we can use; stop looking
		return
	}
	cp, err := packets.ReadPacket(bytes.NewReader(c.first))
	if err != nil {
		return // not complete yet
	}
	ack, ok := cp.Content.(*packets.Connack)
	if !ok {
		ack = &packets.Connack{}
	}
	c.connack.Store(ack)
	c.first = nil
}

// v3Connack returns the return code of the broker's first packet when it
// is an MQTT 3.1.1 CONNACK (remaining length 2, where MQTT 5's has at least
// 3): a 3.1.1 broker's answer to an MQTT 5 CONNECT. Only for the
// connecting goroutine, after the CONNECT failed.
func (c *wireConn) v3Connack() (code byte, ok bool) {
	f := c.first
	if len(f) >= 4 && f[0] == 0x20 && f[1] == 2 {
		return f[3], true
	}
	return 0, false
}

// serverReference returns the Server Reference of the CONNACK, if any.
func (c *wireConn) serverReference() string {
	if ack := c.connack.Load(); ack != nil && ack.Properties != nil {
		return ack.Properties.ServerReference
	}
	return ""
}

// leave ends the session cleanly: a normal DISCONNECT after whatever packet
// the client is writing, so the broker drops the will, then the connection
// closes and the client sees it lost. The two bytes are the same DISCONNECT
// in MQTT 5 (reason 0x00 left out) and 3.1.1.
func (c *wireConn) leave() { c.leaveWith(disconnectPacket) }

// leaveWith is leave with the DISCONNECT packet given.
func (c *wireConn) leaveWith(disconnect []byte) {
	c.mu.Lock()
	_, _ = c.enqueue(disconnect)
	c.qmu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed // nothing of paho's after the DISCONNECT
	}
	c.qmu.Unlock()
	c.mu.Unlock()
	_ = c.Close()
}

// watch closes the connection when the broker has been silent too long.
// The client pings after a keepalive without traffic, so a live broker is
// never silent for much longer; the client itself would notice only a
// keepalive later. One timer, set for when the silence would run out since
// the last read: on a live connection it fires about once a keepalive.
func (c *wireConn) watch() {
	t := time.NewTimer(c.silence)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			quiet := time.Since(time.Unix(0, c.lastRead.Load()))
			if quiet <= c.silence {
				t.Reset(c.silence - quiet + time.Millisecond)
				continue
			}
			c.onHung()
			_ = c.Conn.Close() // the client's reader fails: connection lost
			return
		}
	}
}

func (c *wireConn) Lock() {
	c.mu.Lock()
	c.locked = true
	c.packet = c.packet[:0]
}

func (c *wireConn) Write(b []byte) (int, error) {
	if !c.locked {
		return c.enqueue(b)
	}
	c.packet = append(c.packet, b...)
	return len(b), nil
}

func (c *wireConn) Unlock() {
	_, _ = c.enqueue(c.packet) // on a failed connection paho hears of it from its reader
	if id, ok := publishID(c.packet); ok && c.tracker != nil {
		c.tracker.written(id)
	}
	c.locked = false
	c.mu.Unlock()
}

func (c *wireConn) enqueue(b []byte) (int, error) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if len(b) == 2 && b[0] == pingreq[0] && b[1] == 0 {
		c.pings = append(c.pings, nil) // the client's keepalive
	}
	c.queue = append(c.queue, b...)
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(b), nil
}

// flush writes the queue until the connection closes.
func (c *wireConn) flush() {
	defer close(c.stopped)
	var out []byte
	for range c.wake {
		c.qmu.Lock()
		out, c.queue = c.queue, out[:0]
		closing := c.closing
		c.qmu.Unlock()
		if len(out) > 0 {
			if _, err := c.Conn.Write(out); err != nil {
				c.qmu.Lock()
				c.err = err
				c.qmu.Unlock()
				// paho does not see write errors; a closed socket makes
				// its reader fail at once.
				_ = c.Conn.Close()
				return
			}
		}
		if closing {
			return
		}
	}
}

// Close writes what is queued (paho's DISCONNECT last) and closes.
func (c *wireConn) Close() error {
	c.qmu.Lock()
	already := c.closing
	c.closing = true
	c.qmu.Unlock()
	if !already {
		close(c.done)
		select {
		case c.wake <- struct{}{}:
		default:
		}
		select {
		case <-c.stopped:
		case <-time.After(time.Second): // a hung peer must not hold up the close
		}
	}
	return c.Conn.Close()
}

// pingreq is an MQTT PINGREQ, the same in 3.1.1 and 5.
var pingreq = []byte{0xC0, 0}

// barrier writes a PINGREQ after every packet queued before it, and
// returns a channel closed when the broker answers it. A broker reads a
// connection's packets in order and answers a PINGREQ once it has read
// it: the PINGRESP says it has read every packet before, the QoS 0
// PUBLISHes among them. The PINGRESP is not passed to the client.
func (c *wireConn) barrier() (<-chan struct{}, error) {
	c.mu.Lock() // between two of the client's packets
	defer c.mu.Unlock()
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	pong := make(chan struct{})
	c.pings = append(c.pings, pong)
	c.queue = append(c.queue, pingreq...)
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return pong, nil
}

// pong takes a PINGRESP: it reports whether it answers a barrier (which
// it then releases) rather than the client.
func (c *wireConn) pong() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if len(c.pings) == 0 {
		return false
	}
	head := c.pings[0]
	c.pings = c.pings[1:]
	if head == nil {
		return false
	}
	close(head)
	return true
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

// dial opens a connection to one address of a broker within timeout; TLS
// verifies the name of the broker's URL, not the address.
func dial(ctx context.Context, c candidate, tlsCfg *tls.Config, timeout time.Duration) (net.Conn, error) {
	if c.err != nil {
		return nil, c.err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var tlsOn bool
	switch c.url.Scheme {
	case "tcp", "mqtt":
	case "tls", "ssl", "mqtts":
		tlsOn = true
	default:
		return nil, fmt.Errorf("uplink: scheme %q is not supported", c.url.Scheme)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	if !tlsOn {
		return quietnet.Wrap(conn), nil
	}
	cfg := &tls.Config{}
	if tlsCfg != nil {
		cfg = tlsCfg.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = c.url.Hostname()
	}
	tc := tls.Client(quietnet.Wrap(conn), cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return tc, nil
}
