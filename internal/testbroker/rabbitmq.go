package testbroker

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// RabbitMQ is a running RabbitMQ 3.10 (Debian's rabbitmq-server) with its
// MQTT plugin: a broker that speaks MQTT 3.1.1 only and closes an MQTT 5
// CONNECT without a CONNACK. It runs as a plain process with its own node
// name, config, data directory and ports, not as the system service.
type RabbitMQ struct {
	t    testing.TB
	dir  string
	Port int // MQTT
	env  []string
	cmd  *exec.Cmd
}

// rabbitmqServer is Debian's start script of the node itself.
const rabbitmqServer = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// StartRabbitMQ runs a RabbitMQ node with the MQTT plugin on free loopback
// ports and waits until its MQTT listener accepts; it skips the test when
// rabbitmq-server is not installed (make test installs it).
func StartRabbitMQ(t testing.TB) *RabbitMQ {
	t.Helper()
	if _, err := os.Stat(rabbitmqServer); err != nil {
		t.Skip("rabbitmq-server is not installed: run `make test` as root, or apt-get install rabbitmq-server")
	}
	dir := t.TempDir()
	r := &RabbitMQ{t: t, dir: dir, Port: FreePort(t)}
	amqp, dist := FreePort(t), FreePort(t)
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nmqtt.listeners.tcp.default = 127.0.0.1:%d\n"+
		"mqtt.allow_anonymous = true\nloopback_users = none\n", amqp, r.Port)
	for name, content := range map[string]string{"rabbitmq.conf": conf, "enabled_plugins": "[rabbitmq_mqtt].\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.env = append(os.Environ(),
		"HOME="+dir, // the Erlang cookie
		"RABBITMQ_NODENAME=edgegw-test-"+strconv.Itoa(r.Port)+"@localhost",
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(amqp),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"),
	)
	t.Cleanup(r.kill)
	r.start()
	return r
}

func (r *RabbitMQ) start() {
	r.t.Helper()
	logf, err := os.OpenFile(filepath.Join(r.dir, "out.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	defer logf.Close()
	r.cmd = exec.Command(rabbitmqServer)
	r.cmd.Dir, r.cmd.Env = r.dir, r.env
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers die with it
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	if err := waitListening(r.Addr(), 90*time.Second); err != nil {
		out, _ := os.ReadFile(filepath.Join(r.dir, "out.log"))
		r.t.Fatalf("rabbitmq: %v\n%s", err, out)
	}
}

// Stop stops the node cleanly (SIGTERM, as the service does).
func (r *RabbitMQ) Stop() { r.stop(syscall.SIGTERM, time.Minute) }

// Start starts a stopped node again on the same data directory and ports.
func (r *RabbitMQ) Start() {
	r.t.Helper()
	r.start()
}

func (r *RabbitMQ) kill() { r.stop(syscall.SIGKILL, 10*time.Second) }

func (r *RabbitMQ) stop(sig syscall.Signal, wait time.Duration) {
	if r.cmd == nil {
		return
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, sig)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL) // what is left of the group
	r.cmd = nil
}

// Addr is host:port of the MQTT listener.
func (r *RabbitMQ) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port)) }

// URL is the MQTT listener's tcp:// URL.
func (r *RabbitMQ) URL() string { return "tcp://" + r.Addr() }

// Subscriber311 is an MQTT 3.1.1 subscriber with a persistent session
// (clean session false, QoS 1) that reconnects by itself: what it missed
// while its broker restarted is delivered when it is back.
type Subscriber311 struct {
	cli  mqtt.Client
	mu   sync.Mutex
	msgs []Message
}

// Subscribe311 subscribes to filter at addr as clientID over MQTT 3.1.1.
func Subscribe311(t testing.TB, addr, filter, clientID string) *Subscriber311 {
	t.Helper()
	s := &Subscriber311{}
	handler := func(_ mqtt.Client, m mqtt.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), Retain: m.Retained()})
		s.mu.Unlock()
	}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(500 * time.Millisecond).
		SetConnectTimeout(5 * time.Second).SetDefaultPublishHandler(handler).
		SetOnConnectHandler(func(c mqtt.Client) { c.Subscribe(filter, 1, nil) }) // again after a restart
	s.cli = mqtt.NewClient(opts)
	if tok := s.cli.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 subscriber: %v", tok.Error())
	}
	if tok := s.cli.Subscribe(filter, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.cli.Disconnect(100) })
	return s
}

// Messages returns a copy of what was received so far.
func (s *Subscriber311) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}
