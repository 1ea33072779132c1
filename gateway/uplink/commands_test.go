package uplink

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"edgegw/internal/testbroker"
)

func TestCommandsResubscribedAfterReconnectAndRetainedIgnored(t *testing.T) {
	br := testbroker.Start(t)
	sub := testbroker.Subscribe(t, br.Addr(), "test/#")
	store := openBuffer(t)
	var mu sync.Mutex
	var seen []string
	r := start(t, store, []string{br.URL()}, func(c *Config) {
		c.CommandBase = "test"
		c.Commands = func(device, point string, value []byte, done func(error)) {
			mu.Lock()
			seen = append(seen, device+"/"+point+"="+string(value))
			mu.Unlock()
			if point == "bad" {
				done(errors.New("refused"))
				return
			}
			done(nil)
		}
	})
	result := func(topic, want string) {
		t.Helper()
		before := len(sub.Messages())
		sub.Publish(t, topic, []byte("1"))
		sub.WaitFor(t, 10*time.Second, "result of "+topic, func(m []testbroker.Message) bool {
			for _, x := range m[before:] {
				if x.Topic == topic+"/result" {
					if string(x.Payload) != want {
						t.Errorf("%s: %s, want %s", topic, x.Payload, want)
					}
					return true
				}
			}
			return false
		})
	}
	sub.WaitFor(t, 10*time.Second, "online", func(m []testbroker.Message) bool { return len(m) > 0 })
	result("test/dev/set/p", `{"ok":true}`)
	result("test/dev/set/bad", `{"ok":false,"error":"refused"}`)

	// A new connection starts clean: the subscription must be made again.
	r.up.mu.Lock()
	cm := r.up.conn.cm
	r.up.mu.Unlock()
	cm.TerminateConnectionForTest()
	sub.WaitFor(t, 10*time.Second, "online again", func(m []testbroker.Message) bool {
		n := 0
		for _, x := range m {
			if x.Topic == "test/status" && string(x.Payload) == `{"state":"online","version":"test"}` {
				n++
			}
		}
		return n >= 2
	})
	result("test/dev/set/q", `{"ok":true}`)

	// A retained command runs once, when it is sent, and not again at the
	// next connection, when a broker would hand it over again.
	sub.PublishMessage(t, &paho.Publish{Topic: "test/dev/set/retained", QoS: 1, Retain: true, Payload: []byte("1")})
	result("test/dev/set/after", `{"ok":true}`) // handled in order: the retained one came first
	r.up.mu.Lock()
	cm = r.up.conn.cm
	r.up.mu.Unlock()
	cm.TerminateConnectionForTest()
	sub.WaitFor(t, 10*time.Second, "online a third time", func(m []testbroker.Message) bool {
		n := 0
		for _, x := range m {
			if x.Topic == "test/status" && string(x.Payload) == `{"state":"online","version":"test"}` {
				n++
			}
		}
		return n >= 3
	})
	result("test/dev/set/last", `{"ok":true}`)
	mu.Lock()
	defer mu.Unlock()
	retained := 0
	for _, s := range seen {
		if s == "dev/retained=1" {
			retained++
		}
	}
	if retained != 1 || len(seen) != 6 {
		t.Fatalf("the retained command ran %d times; commands seen: %v", retained, seen)
	}
}
