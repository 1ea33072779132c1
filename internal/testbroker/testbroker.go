// Package testbroker runs real Mosquitto brokers on loopback for tests.
// Tests that need one skip, saying why, when mosquitto is not installed
// (make test installs it); every broker is killed when the test ends.
package testbroker

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Broker is one running mosquitto process.
type Broker struct {
	t    testing.TB
	Host string // a loopback address: 127.0.0.1 unless StartAt said otherwise
	Port int
	conf string
	cmd  *exec.Cmd
	log  string
}

// Binary returns the mosquitto path, skipping the test when it is missing.
func Binary(t testing.TB) string {
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/bin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	t.Skip("mosquitto is not installed: run `make test` as root, or apt-get install mosquitto")
	return ""
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Option adds lines to a broker's config.
type Option func(port int) string

// BridgeTo bridges the broker to another one, all topics both ways (QoS 1):
// the Mosquitto bridge recipe of the local cluster.
func BridgeTo(other *Broker) Option {
	return func(port int) string {
		return fmt.Sprintf("connection bridge-%d-%d\naddress 127.0.0.1:%d\ntopic # both 1\ncleansession true\nrestart_timeout 1\n", port, other.Port, other.Port)
	}
}

// Start runs a broker on a free loopback port and waits until it accepts.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	return StartOn(t, FreePort(t), opts...)
}

// StartOn runs a broker on the given port of 127.0.0.1.
func StartOn(t testing.TB, port int, opts ...Option) *Broker {
	t.Helper()
	return StartAt(t, "127.0.0.1", port, opts...)
}

// StartAt runs a broker on host:port, host a loopback address
// (127.0.0.2, 127.0.0.3 ... are loopback too): several brokers on one port
// stand for the addresses of one name.
func StartAt(t testing.TB, host string, port int, opts ...Option) *Broker {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	// max_inflight_messages 0: a subscriber gets each message at once, not
	// from a queue that dies with a killed broker after it acknowledged the
	// publish; tests compare what the gateway had acknowledged with what
	// subscribers saw.
	conf := fmt.Sprintf("listener %d %s\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nmax_inflight_messages 0\n", port, host)
	if os.Geteuid() == 0 {
		conf += "user root\n" // read files in the test's private temp dirs (ACL, TLS)
	}
	for _, o := range opts {
		conf += o(port)
	}
	b := &Broker{t: t, Host: host, Port: port, conf: filepath.Join(dir, "mosquitto.conf"), log: filepath.Join(dir, "mosquitto.log")}
	if err := os.WriteFile(b.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Kill)
	b.start(bin)
	return b
}

func (b *Broker) start(bin string) {
	b.t.Helper()
	logf, err := os.Create(b.log)
	if err != nil {
		b.t.Fatal(err)
	}
	b.cmd = exec.Command(bin, "-c", b.conf)
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	logf.Close()
	if err := waitListening(b.Addr(), 10*time.Second); err != nil {
		b.t.Fatalf("mosquitto: %v\n%s", err, b.Log())
	}
}

// Addr is host:port of the broker.
func (b *Broker) Addr() string { return net.JoinHostPort(b.Host, strconv.Itoa(b.Port)) }

// URL is the broker's tcp:// URL.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Kill stops the broker at once (SIGKILL); safe to call twice.
func (b *Broker) Kill() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Kill()
	b.cmd.Wait()
	b.cmd = nil
}

// Running reports whether the broker runs (it was not killed).
func (b *Broker) Running() bool { return b.cmd != nil }

// Restart starts a killed broker again on the same port.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Kill()
	b.start(Binary(b.t))
}

// Stop pauses (SIGSTOP) the broker: it keeps its sockets and answers nothing.
func (b *Broker) Stop() { b.cmd.Process.Signal(syscall.SIGSTOP) }

// Continue resumes a paused broker.
func (b *Broker) Continue() { b.cmd.Process.Signal(syscall.SIGCONT) }

// Log returns what the broker logged, for failure messages.
func (b *Broker) Log() string {
	data, _ := os.ReadFile(b.log)
	return strings.TrimSpace(string(data))
}

// WaitListening polls addr until it accepts a TCP connection.
func WaitListening(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	if err := waitListening(addr, timeout); err != nil {
		t.Fatal(err)
	}
}

func waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %s: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a port: there is no event to wait on
	}
}
