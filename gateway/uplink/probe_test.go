package uplink

import (
	"context"
	"io"
	"net"
	"net/url"
	"runtime"
	"testing"
	"time"
)

// TestProbeRefusesAHugeReply: a fail-back probe answered with a header
// declaring a 256 MiB packet fails at once, having allocated nothing for
// it (the main connection is guarded by wireConn; the probe reads alone).
func TestProbeRefusesAHugeReply(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Read(make([]byte, 512))                     // the CONNECT
				_, _ = c.Write([]byte{0x20, 0xff, 0xff, 0xff, 0x7f}) // a CONNACK of 256 MiB
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	target := candidate{url: &url.URL{Scheme: "tcp", Host: l.Addr().String()}, addr: l.Addr().String()}
	for _, proto := range []Protocol{MQTT5, MQTT311} {
		t.Run(proto.String(), func(t *testing.T) {
			u := New(Config{Protocol: proto, ClientID: "probe-test", ConnectTimeout: 2 * time.Second}, nil)
			u.sel = newSelector(nil, Ordered, proto, "probe-test", nil, time.Second, steps)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			began := time.Now()
			if err := u.probe(context.Background(), target); err == nil {
				t.Fatal("the probe accepted a 256 MiB reply")
			}
			runtime.ReadMemStats(&after)
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
				t.Errorf("the probe allocated %d bytes", grown)
			}
			if took := time.Since(began); took > time.Second {
				t.Errorf("the probe took %s", took)
			}
		})
	}
}
