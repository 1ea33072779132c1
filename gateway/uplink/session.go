package uplink

import (
	"context"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// orderedSession is paho's in-memory session that also tells a publisher,
// through a channel in the request's context, when its packet has entered
// the session. Publish writes the packet right after that, so a sender that
// starts the next publish only then keeps the wire in seq order while many
// publishes wait for their acks at once.
type orderedSession struct {
	session.SessionManager
}

func newOrderedSession() *orderedSession {
	return &orderedSession{SessionManager: state.NewInMemory()}
}

type addedKey struct{}

// withAdded returns a context whose publish closes added once it is in the session.
func withAdded(ctx context.Context, added chan struct{}) context.Context {
	return context.WithValue(ctx, addedKey{}, added)
}

func (s *orderedSession) AddToSession(ctx context.Context, packet session.Packet, resp chan<- packets.ControlPacket) error {
	err := s.SessionManager.AddToSession(ctx, packet, resp)
	if err == nil {
		if added, ok := ctx.Value(addedKey{}).(chan struct{}); ok {
			close(added)
		}
	}
	return err
}
