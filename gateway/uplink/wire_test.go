package uplink

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// writePublish writes a QoS 1 PUBLISH the way paho does: under the conn's
// lock, in pieces.
func writePublish(t *testing.T, w *wireConn, id uint16, payload []byte) {
	t.Helper()
	pb := &packets.Publish{Topic: "t", QoS: 1, PacketID: id, Payload: payload}
	if _, err := pb.WriteTo(w); err != nil {
		t.Error(err)
	}
}

// TestWireConnWritersQueue: PUBLISHes written from many goroutines at once,
// with the client's own pings in between, all reach the broker whole, each
// reported written; the DISCONNECT of a leave is the last thing on the wire.
func TestWireConnWritersQueue(t *testing.T) {
	client, server := net.Pipe() // unbuffered: every write waits for the reader
	tr := newTracker()
	w := newWireConn(client, 0, nil)
	w.tracker = tr
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(server); got <- b }()

	const writers, each = 8, 50
	var written sync.WaitGroup
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := uint16(g*each + i + 1)
				ch := make(chan struct{})
				written.Add(1)
				go func() { <-ch; written.Done() }()
				// The tracker learns the id as paho's session hands it out.
				tr.expect(id, ch)
				writePublish(t, w, id, bytes.Repeat([]byte{byte(g)}, 100+i))
				if i%10 == 0 { // the client's keepalive, under the lock as paho writes it
					if _, err := packets.NewControlPacket(packets.PINGREQ).WriteTo(w); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	written.Wait()
	w.leave()
	var wire []byte
	select {
	case wire = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not closed after the leave")
	}
	seen := map[uint16]bool{}
	pings := 0
	r := bytes.NewReader(wire)
	var last byte
	for r.Len() > 0 {
		if r.Len() == len(disconnectPacket) && bytes.HasSuffix(wire, disconnectPacket) {
			last = packets.DISCONNECT // two bytes paho's reader does not take
			break
		}
		cp, err := packets.ReadPacket(r)
		if err != nil {
			t.Fatalf("the wire holds a broken packet after %d publishes: %v", len(seen), err)
		}
		last = cp.Type
		switch cp.Type {
		case packets.PUBLISH:
			pb := cp.Content.(*packets.Publish)
			if seen[pb.PacketID] {
				t.Fatalf("PUBLISH %d twice", pb.PacketID)
			}
			seen[pb.PacketID] = true
		case packets.PINGREQ:
			pings++
		}
	}
	if len(seen) != writers*each || pings != writers*each/10 {
		t.Errorf("%d PUBLISHes and %d PINGREQs on the wire, want %d and %d", len(seen), pings, writers*each, writers*each/10)
	}
	if last != packets.DISCONNECT {
		t.Errorf("the last packet is of type %d, want the DISCONNECT", last)
	}
}

// TestWireConnWriteFailure: a failed write closes the connection: the
// flusher ends, later writes are refused, Close does not hang.
func TestWireConnWriteFailure(t *testing.T) {
	client, server := net.Pipe()
	w := newWireConn(client, 0, nil)
	w.tracker = newTracker()
	_ = server.Close() // the broker is gone: the first write fails
	writePublish(t, w, 1, []byte("x"))
	select {
	case <-w.stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the flusher did not end after the failed write")
	}
	if _, err := w.Write(pingreq); err == nil {
		t.Error("a write after the failure was taken")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Close() }()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Close hung after a failed write")
	}
}
