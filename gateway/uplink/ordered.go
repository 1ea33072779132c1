package uplink

import (
	"context"
	"fmt"
	"io"
	"sync"

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
	return &orderedSession{SessionManager: state.New(forgetful{}, forgetful{}), tracker: t}
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

// forgetful is a session store that keeps nothing. paho's store holds a
// copy of every QoS 1/2 publish (serialized, payload and all) to resend it
// on a reconnect whose broker kept the session; edgegw connects with Clean
// Start every time, so that never happens (paho resets the store instead),
// and the buffer resends what was not acknowledged. Keeping the copies cost
// a dozen allocations and a copy of the payload per reading.
type forgetful struct{}

func (forgetful) Put(uint16, byte, io.WriterTo) error { return nil }
func (forgetful) Get(id uint16) (io.ReadCloser, error) {
	return nil, fmt.Errorf("uplink: packet %d: the session store keeps nothing", id)
}
func (forgetful) Delete(uint16) error     { return nil }
func (forgetful) Quarantine(uint16) error { return nil }
func (forgetful) List() ([]uint16, error) { return nil, nil }
func (forgetful) Reset() error            { return nil }
