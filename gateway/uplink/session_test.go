package uplink

import (
	"testing"
	"time"
)

// commandSession is a Session whose every message is one write.
type commandSession struct{ Session }

func (commandSession) Received(string, []byte) Received {
	return Received{Commands: []Command{{Device: "plc", Point: "setpoint", Value: []byte("21.5")}}}
}

// TestSessionCommandsExpire: a Session's writes get command_ttl (or the
// message's expiry, if sooner) as the JSON commands do.
func TestSessionCommandsExpire(t *testing.T) {
	var got []Command
	u := New(Config{Session: commandSession{}, CommandTTL: time.Minute,
		Commands: func(cmd Command, done func(Result)) { got = append(got, cmd); done(Result{}) }}, nil)
	expiry := uint32(5)
	before := time.Now()
	u.onSession(inbound{Topic: "spBv1.0/g/DCMD/n/plc"})
	u.onSession(inbound{Topic: "spBv1.0/g/DCMD/n/plc", Expiry: &expiry})
	if len(got) != 2 {
		t.Fatalf("%d commands, want 2", len(got))
	}
	if e := got[0].Expires; e.Before(before.Add(time.Minute)) || e.After(time.Now().Add(time.Minute)) {
		t.Errorf("expires %v, want command_ttl (1m) after it came", e)
	}
	if e := got[1].Expires; e.Before(before.Add(5*time.Second)) || e.After(time.Now().Add(5*time.Second)) {
		t.Errorf("expires %v, want the message's expiry (5s) after it came", e)
	}
}
