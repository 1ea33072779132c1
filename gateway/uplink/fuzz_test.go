package uplink

import (
	"bytes"
	"testing"
	"time"
)

// FuzzFrames: whatever a broker sends, in whatever pieces, frames lets
// through exactly the same bytes as when it comes whole, never more than
// it was given, and cuts out (on MQTT 3.1.1) or refuses every packet over
// maxIncomingPacket without a panic.
func FuzzFrames(f *testing.F) {
	f.Add([]byte{0x20, 2, 0, 0, 0x90, 3, 0, 1, 0}, uint8(1), true)                  // CONNACK, SUBACK
	f.Add([]byte{0x30, 0xff, 0xff, 0x7f, 0, 1, 't'}, uint8(3), true)                // a 2 MiB PUBLISH, cut out
	f.Add([]byte{0x32, 0x80, 0x80, 0x08, 0, 1, 't', 0, 7, 0xd0, 0}, uint8(2), true) // QoS 1, skipped, then PINGRESP
	f.Add([]byte{0x34, 0x80, 0x80, 0x08, 0, 1, 't', 0, 7}, uint8(5), false)         // QoS 2: refused
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0xff}, uint8(1), true)               // five length bytes
	f.Fuzz(func(t *testing.T, stream []byte, piece uint8, skipping bool) {
		skip := func(size int, qos byte, start []byte) {
			if size <= maxIncomingPacket || qos > 1 {
				t.Fatalf("skipped a packet of %d bytes at QoS %d", size, qos)
			}
		}
		feed := func(pieces int) (out []byte, ok bool) {
			var fr frames
			if skipping {
				fr.skip = skip
			}
			for rest := stream; len(rest) > 0; {
				n := min(pieces, len(rest))
				if out, _, ok = fr.filter(out, rest[:n]); !ok {
					return out, false
				}
				rest = rest[n:]
			}
			return out, true
		}
		whole, wholeOK := feed(len(stream) + 1)
		cut, cutOK := feed(int(piece) + 1)
		if len(whole) > len(stream) || len(cut) > len(stream) {
			t.Fatalf("let through more than was sent")
		}
		if wholeOK && cutOK && !bytes.Equal(whole, cut) {
			t.Fatalf("pieces of %d let through %x, whole %x", piece+1, cut, whole)
		}
	})
}

// FuzzCommand: whatever a client publishes to the command topics is
// taken as a command for the device and point its topic names, or
// refused, without a panic.
func FuzzCommand(f *testing.F) {
	f.Add("edgegw/gw/pump/set/on", []byte("true"), false, "")
	f.Add("edgegw/gw/pump/set/on", []byte(`{"a":[1,2`), true, "")
	f.Add("edgegw/gw//set/", []byte{0xff, 0xfe}, false, "reply/+")
	f.Add("edgegw/gw/pump/set/on/extra", []byte("1"), false, "r\x00")
	f.Fuzz(func(t *testing.T, topic string, payload []byte, retain bool, responseTopic string) {
		var got []Command
		u := New(Config{CommandBase: "edgegw/gw", CommandTTL: time.Minute, Commands: func(cmd Command, done func(Result)) {
			got = append(got, cmd)
			done(Result{})
		}}, nil)
		u.onCommand(inbound{Topic: topic, Payload: payload, Retain: retain, ResponseTopic: responseTopic})
		for _, cmd := range got {
			if want := "edgegw/gw/" + cmd.Device + "/set/" + cmd.Point; want != topic || retain {
				t.Fatalf("command %+v from topic %q (retained %v)", cmd, topic, retain)
			}
		}
		for len(u.results) > 0 {
			<-u.results
		}
	})
}
