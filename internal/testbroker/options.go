package testbroker

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// WithACL restricts anonymous clients to the given ACL lines
// ("topic write test/#", …).
func WithACL(t testing.TB, lines ...string) Option {
	path := filepath.Join(t.TempDir(), "acl")
	content := ""
	for _, l := range lines {
		content += l + "\n"
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return func(int) string { return "acl_file " + path + "\n" }
}

// WithUsers makes the broker check these users' passwords (user →
// password), written with mosquitto_passwd as a user would.
func WithUsers(t testing.TB, users map[string]string) Option {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for user, pass := range users {
		if out, err := exec.Command("mosquitto_passwd", "-b", path, user, pass).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v %s", err, out)
		}
	}
	return func(int) string { return "password_file " + path + "\n" }
}

// TLSFiles are PEM files for a TLS listener.
type TLSFiles struct {
	CA, Cert, Key string
	// RequireClientCert makes the listener demand a client certificate
	// signed by CA (mutual TLS).
	RequireClientCert bool
}

// WithTLS turns the broker's listener into a TLS one.
func WithTLS(f TLSFiles) Option {
	return func(int) string {
		s := fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\n", f.CA, f.Cert, f.Key)
		if f.RequireClientCert {
			s += "require_certificate true\n"
		}
		return s
	}
}

// HAProxy is an haproxy TCP front balancing over brokers.
type HAProxy struct {
	Port int
	cmd  *exec.Cmd
}

// StartHAProxy runs haproxy on a free loopback port in front of brokers,
// checking them every 200ms, skipping tests when haproxy is not installed.
// It sends every connection to the first broker that is up (balance first).
func StartHAProxy(t testing.TB, brokers ...*Broker) *HAProxy {
	t.Helper()
	return StartHAProxyWith(t, "first", 1000, brokers...)
}

// StartHAProxyWith is StartHAProxy with haproxy's balance algorithm
// ("first", "roundrobin", "leastconn") and connection limit.
func StartHAProxyWith(t testing.TB, balance string, maxconn int, brokers ...*Broker) *HAProxy {
	t.Helper()
	bin := "/usr/sbin/haproxy"
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("haproxy"); err != nil {
			t.Skip("haproxy is not installed: run `make test` as root, or apt-get install haproxy")
		}
	}
	h := &HAProxy{Port: FreePort(t)}
	cfg := fmt.Sprintf(`global
    maxconn %d
defaults
    mode tcp
    timeout connect 1s
    timeout client 1m
    timeout server 1m
    retries 2
    option redispatch
frontend mqtt
    bind 127.0.0.1:%d
    default_backend brokers
backend brokers
    balance %s
`, maxconn, h.Port, balance)
	for i, b := range brokers {
		cfg += fmt.Sprintf("    server b%d %s check inter 200ms fall 1 rise 1\n", i, b.Addr())
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command(bin, "-f", path, "-db")
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.cmd.Process.Kill(); h.cmd.Wait() })
	WaitListening(t, h.Addr(), 10*time.Second)
	return h
}

// Addr is host:port of the front.
func (h *HAProxy) Addr() string { return fmt.Sprintf("127.0.0.1:%d", h.Port) }

// URL is the front's tcp:// URL.
func (h *HAProxy) URL() string { return "tcp://" + h.Addr() }

// WithConfig adds Mosquitto config lines ("sys_interval 1", ...).
func WithConfig(lines ...string) Option {
	return func(int) string { return strings.Join(lines, "\n") + "\n" }
}
