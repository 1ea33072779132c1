package modbus

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// rawDevice accepts Modbus TCP connections and answers each request with
// what reply returns for it, written in the pieces given.
func rawDevice(t *testing.T, reply func(req []byte) [][]byte) (addr string, conns <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			accepted <- c
			go func() {
				req := make([]byte, 12)
				for {
					if _, err := io.ReadFull(c, req); err != nil {
						return
					}
					for _, piece := range reply(req) {
						if _, err := c.Write(piece); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), accepted
}

// readRequest is a read of 2 input registers at 0, transaction id 7, unit 1.
var readRequest = []byte{0, 7, 0, 0, 0, 6, 1, 4, 0, 0, 0, 2}

// readReply answers it with registers 0x1234, 0x5678.
var readReply = []byte{0, 7, 0, 0, 0, 7, 1, 4, 4, 0x12, 0x34, 0x56, 0x78}

func TestTCPTransportJoinsAReplyInPieces(t *testing.T) {
	addr, _ := rawDevice(t, func([]byte) [][]byte {
		var pieces [][]byte
		for i := range readReply {
			pieces = append(pieces, readReply[i:i+1]) // a byte at a time
		}
		return pieces
	})
	tr := &tcpTransport{address: addr, timeout: 5 * time.Second, idleFor: time.Minute}
	defer tr.Close()
	for range 3 {
		got, err := tr.Send(readRequest)
		if err != nil || !bytes.Equal(got, readReply) {
			t.Fatalf("Send = % x, %v; want % x", got, err, readReply)
		}
	}
}

func TestTCPTransportRefusesABadHeader(t *testing.T) {
	bad := true
	addr, conns := rawDevice(t, func([]byte) [][]byte {
		if bad {
			bad = false
			return [][]byte{{0, 7, 0, 0, 0x01, 0x00, 1}} // announces 256 bytes
		}
		return [][]byte{readReply}
	})
	tr := &tcpTransport{address: addr, timeout: 5 * time.Second, idleFor: time.Minute}
	defer tr.Close()
	if _, err := tr.Send(readRequest); err == nil || !bytes.Contains([]byte(err.Error()), []byte("256")) {
		t.Fatalf("a header announcing 256 bytes gave %v", err)
	}
	tr.Close() // as the bus does after a failure
	if got, err := tr.Send(readRequest); err != nil || !bytes.Equal(got, readReply) {
		t.Fatalf("after reconnecting: % x, %v", got, err)
	}
	if n := len(conns); n != 2 {
		t.Fatalf("%d connections, want 2 (a fresh one after the failure)", n)
	}
}

func TestTCPTransportTimesOut(t *testing.T) {
	addr, _ := rawDevice(t, func([]byte) [][]byte { return nil }) // never answers
	tr := &tcpTransport{address: addr, timeout: 50 * time.Millisecond, idleFor: time.Minute}
	defer tr.Close()
	if _, err := tr.Send(readRequest); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a silent device gave %v, want a timeout", err)
	}
}

func TestTCPTransportClosesAnIdleConnection(t *testing.T) {
	addr, conns := rawDevice(t, func([]byte) [][]byte { return [][]byte{readReply} })
	tr := &tcpTransport{address: addr, timeout: 5 * time.Second, idleFor: 50 * time.Millisecond}
	defer tr.Close()
	if _, err := tr.Send(readRequest); err != nil {
		t.Fatal(err)
	}
	c := <-conns
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the device's end of an idle connection read %v, want EOF", err)
	}
	if got, err := tr.Send(readRequest); err != nil || !bytes.Equal(got, readReply) {
		t.Fatalf("after the idle close: % x, %v", got, err)
	}
}
