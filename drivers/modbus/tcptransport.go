package modbus

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"edgegw/internal/quietnet"
)

// tcpIdle is how long a Modbus TCP connection may carry no request before
// it is closed, freeing one of the device's few connection slots (as
// goburrow's transport does).
const tcpIdle = time.Minute

// tcpTransport is a goburrow Transporter for Modbus TCP. goburrow's own
// reads a reply's header and body in two system calls and resets a timer at
// every request; this one reads a reply in one call, when it arrived whole,
// through quietnet (see there why), and checks for idleness once a minute.
type tcpTransport struct {
	address string
	timeout time.Duration
	idleFor time.Duration // tcpIdle; shorter in tests

	mu       sync.Mutex
	conn     net.Conn
	lastUsed time.Time
	idle     *time.Timer // armed while connected
	buf      [tcpMaxADU]byte
}

// tcpMaxADU is the largest Modbus TCP frame: a 7-byte MBAP header and a
// 253-byte PDU.
const tcpMaxADU = 260

func newTCPTransport(o Options) *tcpTransport {
	return &tcpTransport{address: o.Address, timeout: o.Timeout, idleFor: tcpIdle}
}

// Send writes a request ADU and returns the reply ADU (a fresh slice).
func (t *tcpTransport) Send(req []byte) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.connect(); err != nil {
		return nil, err
	}
	t.lastUsed = time.Now()
	if t.timeout > 0 {
		if err := t.conn.SetDeadline(t.lastUsed.Add(t.timeout)); err != nil {
			return nil, err
		}
	}
	if _, err := t.conn.Write(req); err != nil {
		return nil, err
	}
	n := 0
	for {
		m, err := t.conn.Read(t.buf[n:])
		n += m
		if n >= 7 {
			// The MBAP length counts the unit id and the PDU.
			length := int(binary.BigEndian.Uint16(t.buf[4:6]))
			if length == 0 || 6+length > tcpMaxADU {
				return nil, fmt.Errorf("modbus: reply header announces %d bytes, not 1 to %d", length, tcpMaxADU-6)
			}
			if n >= 6+length {
				// Anything after it is no answer to this request;
				// goburrow's packager checks the transaction id.
				return append([]byte(nil), t.buf[:6+length]...), nil
			}
		}
		if err != nil {
			return nil, err
		}
	}
}

// connect dials the device if no connection is open. t.mu is held.
func (t *tcpTransport) connect() error {
	if t.conn != nil {
		return nil
	}
	d := net.Dialer{Timeout: t.timeout}
	c, err := d.Dial("tcp", t.address)
	if err != nil {
		return err
	}
	t.conn = quietnet.Wrap(c)
	if t.idle == nil {
		t.idle = time.AfterFunc(t.idleFor, t.closeIdle)
	} else {
		t.idle.Reset(t.idleFor)
	}
	return nil
}

// closeIdle closes a connection unused for idleFor, or looks again when it
// would be.
func (t *tcpTransport) closeIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil {
		return
	}
	if left := t.idleFor - time.Since(t.lastUsed); left > 0 {
		t.idle.Reset(left)
		return
	}
	_ = t.closeLocked()
}

// Close closes the connection; the next Send opens another.
func (t *tcpTransport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closeLocked()
}

func (t *tcpTransport) closeLocked() error {
	if t.conn == nil {
		return nil
	}
	if t.idle != nil {
		t.idle.Stop()
	}
	err := t.conn.Close()
	t.conn = nil
	return err
}
