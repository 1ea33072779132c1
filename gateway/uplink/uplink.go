// Package uplink publishes the buffer's records to MQTT brokers.
//
// It promises: a record is acknowledged to the store only after the broker
// acknowledged it (PUBACK for QoS 1, PUBCOMP for QoS 2; written for QoS 0);
// records go out oldest first, in seq order, at most MaxInflight unacknowledged
// at once; after every (re)connect, to the same broker or another, every
// unacknowledged record is sent again from the store, because the store and
// not the MQTT session is the source of truth. Each connection starts clean.
//
// Connection management is paho's autopaho; this package wraps it and waits
// for it on stop.
package uplink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"edgegw/buffer"
	"edgegw/internal/backoff"
)

// Store is what the uplink drains: the flash buffer.
type Store interface {
	// Next appends to dst up to max committed, unacknowledged records with seq > after, oldest first.
	Next(after uint64, max int, dst []buffer.Record) ([]buffer.Record, error)
	// Ack marks a record delivered.
	Ack(seq uint64)
	// Committed returns a channel closed when new records are committed.
	Committed() <-chan struct{}
	// LastSeq returns the seq of the newest committed record.
	LastSeq() uint64
}

// ComposeFunc turns a record into the topic and payload to publish,
// appending the payload to dst.
type ComposeFunc func(dst []byte, rec buffer.Record) (topic string, payload []byte, err error)

// Config configures an Uplink.
type Config struct {
	// Brokers are URLs; every address of a name is a candidate. Order
	// says which is tried first.
	Brokers []string
	Order   Order
	// FailbackAfter, in the Ordered mode, moves the gateway back to an
	// earlier broker once it has answered probes this long; 0 never.
	FailbackAfter time.Duration
	// Reconnect paces connection attempts; DefaultReconnect's for zero fields.
	Reconnect Reconnect
	// Resolve looks up a broker's name; the system resolver when nil.
	Resolve  Resolver
	ClientID string
	Username string
	Password []byte
	QoS      byte
	// KeepAlive is the MQTT keepalive, whole seconds.
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt.
	ConnectTimeout time.Duration
	// MaxInflight bounds the unacknowledged publishes at once.
	MaxInflight int
	TLS         *tls.Config
	// StatusTopic receives the retained birth and will messages.
	StatusTopic string
	// Version goes into the birth message.
	Version string
	// Compose builds what is published from a record.
	Compose ComposeFunc
	// Batch, when on, publishes several records in one message.
	Batch Batching
	// MaxRate, when set, caps the backlog's drain (docs/MQTT.md, "Delivery").
	MaxRate Rate
	// CommandBase is the topic under which commands arrive:
	// CommandBase/{device}/set/{point}; results go to that topic + "/result".
	CommandBase string
	// Commands, when set, receives each command; it must not block, and
	// calls done once, from any goroutine, with the outcome. At most
	// maxCommands are waiting for their done at once; more are dropped.
	Commands func(cmd Command, done func(Result))
	// Session, when set, is spoken on each connection in place of the
	// status topic and the JSON commands; Compose and Batch are unused.
	Session Session
	// CommandTTL is how long a command may wait for its bus; 0 is no limit.
	CommandTTL time.Duration
	// OnConnect, when set, is called at each connection, before anything
	// is published on it.
	OnConnect func()
	// Backoff is the wait before publishing is retried on a connection
	// where publishes failed (attempt counts from 1); capped exponential
	// with jitter when nil.
	Backoff func(attempt int) time.Duration
	Logger  *slog.Logger
}

// Uplink publishes a Store's records. Create it with New and start it with Run.
type Uplink struct {
	cfg   Config
	store Store
	log   *slog.Logger

	tracker *tracker
	batcher *batcher // when batching; one pass at a time uses it
	pacer   *pacer   // with MaxRate; one pass at a time uses it

	urls []*url.URL
	sel  *selector // only autopaho's connect goroutine calls it
	rand func() float64
	// What autopaho's connect goroutine knows of the attempt in progress.
	attempt     candidate
	attemptWire *wireConn // nil when the dial failed
	dialFailure failure   // how the dial failed, 0 when it did not
	downgraded  bool      // a QoS downgrade was logged

	// wireMu keeps a Session's messages on the wire in the order it
	// numbered them: held from Compose (or Begin) until they are written.
	wireMu sync.Mutex

	mu          sync.Mutex
	conn        *connection   // nil while down
	abandoned   *connection   // left on its Session's word: its loss is not a fault
	failingBack int           // broker the connection is left for, -1 when none
	referral    string        // the Server Reference of the broker's DISCONNECT
	changed     chan struct{} // signalled on every up and down
	published   uint64
	connects    uint64
	rejected    uint64
	tooLarge    uint64
	replies     sync.WaitGroup  // commands accepted and not yet answered
	results     chan reply      // answered commands, for the reply worker
	commandSlot chan struct{}   // one per accepted command not yet answered
	flooded     bool            // a command was dropped since one was last accepted (paho's receiving goroutine only)
	droppedCmds atomic.Uint64   // commands dropped: too many waiting
	watchers    sync.WaitGroup  // fail-back watchers
	runCtx      context.Context // Run's: the watchers end with it

	// bytesIn counts the bytes received from brokers, all connections.
	bytesIn atomic.Uint64

	// beat is when the publish loop last showed it is not stuck (unix
	// nanos); it beats on every tick of beatTick while waiting.
	beat     atomic.Int64
	beatTick <-chan time.Time
	// connectFailures counts failed attempts since the last connection;
	// only autopaho's connect goroutine touches it.
	connectFailures int
}

// Heartbeat returns when the publish loop last showed it is not stuck: it
// beats at least every second while it runs, waiting or working.
func (u *Uplink) Heartbeat() time.Time { return time.Unix(0, u.beat.Load()) }

func (u *Uplink) heartbeat() { u.beat.Store(time.Now().UnixNano()) }

// connection is one live connection to one broker.
type connection struct {
	cm   *autopaho.ConnectionManager
	url  string
	cand candidate
	wire *wireConn
	qos  byte // readings go at this QoS: Config.QoS, or the broker's maximum if lower
	// maxPacket is the broker's Maximum Packet Size, 0 when it set none:
	// it disconnects (0x95) on a larger packet.
	maxPacket uint32
	since     time.Time     // when it came up
	down      chan struct{} // closed when the connection is lost
	// leaving closes when the connection is to be left (fail-back): no new
	// publish starts; settled closes once the publishing has stopped.
	leaving chan struct{}
	settled chan struct{}
	// born says the Session began here: records may go.
	born atomic.Bool
}

// New returns an Uplink; it does nothing until Run.
func New(cfg Config, store Store) *Uplink {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 64
	}
	if cfg.Backoff == nil {
		cfg.Backoff = DefaultBackoff
	}
	return &Uplink{cfg: cfg, store: store, log: cfg.Logger, changed: make(chan struct{}, 1), tracker: newTracker(),
		rand: rand.Float64, failingBack: -1,
		results: make(chan reply, maxCommands), commandSlot: make(chan struct{}, maxCommands)}
}

// DefaultBackoff doubles from 250ms up to 30s, with up to 25% random jitter.
func DefaultBackoff(attempt int) time.Duration {
	return backoff.Policy{First: 250 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.25}.Delay(attempt)
}

// Broker returns the URL of the broker in use, "" while disconnected.
func (u *Uplink) Broker() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil {
		return ""
	}
	return u.conn.url
}

// Connects returns how many connections to brokers came up.
func (u *Uplink) Connects() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.connects
}

// BytesIn returns how many bytes brokers have sent, all connections together.
func (u *Uplink) BytesIn() uint64 { return u.bytesIn.Load() }

// Published returns how many records the brokers have acknowledged.
func (u *Uplink) Published() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.published
}

func (u *Uplink) notify() {
	select {
	case u.changed <- struct{}{}:
	default:
	}
}

func (u *Uplink) current() *connection {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.conn
}

// Run connects and publishes until ctx ends, then publishes the offline
// status, disconnects and waits for the MQTT client to stop.
func (u *Uplink) Run(ctx context.Context) error {
	acfg, err := u.clientConfig()
	if err != nil {
		return err
	}
	if u.cfg.Batch.on() {
		if u.batcher, err = newBatcher(u.cfg.Batch, u.cfg.Compose); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
	}
	if u.cfg.MaxRate.on() {
		u.pacer = newPacer(u.cfg.MaxRate)
	}
	u.runCtx = ctx
	cmCtx, cancelCM := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCM()
	cm, err := autopaho.NewConnection(cmCtx, acfg)
	if err != nil {
		return fmt.Errorf("uplink: %w", err)
	}
	repliesDone := make(chan struct{})
	go func() { u.replyWorker(); close(repliesDone) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	u.beatTick = tick.C
	u.heartbeat()
	u.publishLoop(ctx)

	// Say goodbye on a clean stop: the will is only sent on a lost connection.
	if c := u.current(); c != nil {
		u.sayGoodbye(c)
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), u.cfg.ConnectTimeout)
	defer cancel()
	_ = cm.Disconnect(stopCtx)
	<-cm.Done()
	u.watchers.Wait()
	// Commands still queued on a bus (a stopping bus answers them) and
	// results still to publish end now: the connection is gone.
	u.replies.Wait()
	close(u.results)
	<-repliesDone
	return nil
}

// The limits sent in CONNECT for what the broker sends us: commands.
const (
	// receiveMaximum is how many QoS 1/2 commands may be unacknowledged at once.
	receiveMaximum = 16
	// maxIncomingPacket bounds one command's packet; the broker drops
	// larger ones rather than send them.
	maxIncomingPacket = 64 << 10
)

// silence is how long a broker may send nothing before its connection is
// given up: a keepalive, in which paho pings, plus a grace for the answer.
func silence(keepAlive time.Duration) time.Duration {
	if keepAlive <= 0 {
		return 0
	}
	return keepAlive + min(keepAlive/4, 5*time.Second)
}

func (u *Uplink) clientConfig() (autopaho.ClientConfig, error) {
	var urls []*url.URL
	for _, b := range u.cfg.Brokers {
		pu, err := url.Parse(b)
		if err != nil {
			return autopaho.ClientConfig{}, fmt.Errorf("uplink: broker %q: %w", b, err)
		}
		urls = append(urls, pu)
	}
	if len(urls) == 0 {
		return autopaho.ClientConfig{}, errors.New("uplink: no brokers")
	}
	u.urls = urls
	u.sel = newSelector(urls, u.cfg.Order, u.cfg.ClientID, u.cfg.Resolve, u.cfg.ConnectTimeout, u.cfg.Reconnect)
	acfg := autopaho.ClientConfig{
		// autopaho tries each of ServerUrls in turn, then waits; the
		// selector decides instead, one attempt at a time: one URL here,
		// the wait it says (ReconnectBackoff), then AttemptConnection
		// dials the address it picks.
		ServerUrls:                    urls[:1],
		ReconnectBackoff:              func(int) time.Duration { return u.sel.delay() },
		AttemptConnection:             u.attemptConnection,
		TlsCfg:                        u.cfg.TLS,
		KeepAlive:                     uint16(u.cfg.KeepAlive / time.Second),
		CleanStartOnInitialConnection: true,
		SessionExpiryInterval:         0,
		ConnectTimeout:                u.cfg.ConnectTimeout,
		ConnectUsername:               u.cfg.Username,
		ConnectPassword:               u.cfg.Password,
		WillMessage: &paho.WillMessage{
			Topic: u.cfg.StatusTopic, QoS: 1, Retain: true, Payload: []byte(`{"state":"offline"}`),
		},
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			// Every connection starts clean: the buffer resends what matters.
			cp.CleanStart = true
			// What the broker may send us is commands: a few at a time,
			// small. paho sizes its incoming queue by Receive Maximum
			// (65,535 slots, 512 KiB a connection, when none is sent).
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			rm, mps := uint16(receiveMaximum), uint32(maxIncomingPacket)
			cp.Properties.ReceiveMaximum, cp.Properties.MaximumPacketSize = &rm, &mps
			if s := u.cfg.Session; s != nil {
				will, err := s.Will()
				if err != nil {
					return nil, err
				}
				cp.WillMessage, cp.WillProperties = will, &paho.WillProperties{}
			}
			return cp, nil
		},
		OnConnectionUp:   u.onConnectionUp,
		OnConnectionDown: u.onConnectionDown,
		OnConnectError:   u.onConnectError,
		ClientConfig: paho.ClientConfig{
			ClientID:          u.cfg.ClientID,
			OnPublishReceived: u.receivers(),
			Session:           newOrderedSession(u.tracker),
			OnClientError: func(err error) {
				u.log.Debug("mqtt_client_error", "err", err)
			},
			OnServerDisconnect: u.onServerDisconnect,
		},
	}
	return acfg, nil
}

// receivers are the handlers of what brokers send: commands, or the Session's.
func (u *Uplink) receivers() []func(paho.PublishReceived) (bool, error) {
	if u.cfg.Session != nil {
		return []func(paho.PublishReceived) (bool, error){u.onSession}
	}
	return []func(paho.PublishReceived) (bool, error){u.onCommand}
}

// attemptConnection dials the address the selector picks, not the URL
// autopaho passes.
func (u *Uplink) attemptConnection(ctx context.Context, _ autopaho.ClientConfig, _ *url.URL) (net.Conn, error) {
	u.mu.Lock()
	ref := u.referral
	u.referral = ""
	u.mu.Unlock()
	if ref != "" && u.attempt.url != nil {
		if to, ok := u.sel.refer(u.attempt.url, ref); ok {
			u.log.Info("mqtt_server_reference", "broker", u.attempt.String(), "to", to.String())
		}
	}
	target := u.sel.next(ctx)
	u.attempt, u.attemptWire, u.dialFailure = target, nil, 0
	conn, err := dial(ctx, target, u.cfg.TLS, u.cfg.ConnectTimeout)
	if err != nil {
		u.dialFailure = away
		if isTimeout(err) {
			u.dialFailure = failed // a host that drops SYNs holds the attempt as long as a silent broker
		}
		return nil, err
	}
	broker := target.String()
	w := newWireConn(conn, u.tracker, silence(u.cfg.KeepAlive), func() {
		u.log.Warn("mqtt_broker_unresponsive", "broker", broker, "silent_for", silence(u.cfg.KeepAlive))
	})
	w.bytesIn = &u.bytesIn
	w.onTooLarge = func(err error) {
		u.log.Warn("mqtt_packet_too_large", "broker", broker, "err", err,
			"hint", "the broker ignores the client's Maximum Packet Size; the connection is closed before the packet is read")
	}
	u.attemptWire = w
	return w, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func (u *Uplink) onConnectionUp(cm *autopaho.ConnectionManager, ack *paho.Connack) {
	c := &connection{cm: cm, url: u.attempt.String(), cand: u.attempt, wire: u.attemptWire, qos: u.cfg.QoS, since: time.Now(),
		down: make(chan struct{}), leaving: make(chan struct{}), settled: make(chan struct{})}
	if ack != nil && ack.Properties != nil && ack.Properties.MaximumQoS != nil && *ack.Properties.MaximumQoS < c.qos {
		// A publish above the broker's maximum is refused by paho itself:
		// nothing would ever be published.
		c.qos = *ack.Properties.MaximumQoS
		if !u.downgraded {
			u.downgraded = true
			u.log.Warn("mqtt_qos_downgraded", "broker", c.url, "qos", u.cfg.QoS, "broker_maximum", c.qos,
				"hint", "the broker supports no higher QoS; readings go at its maximum (logged once)")
		}
	}
	if ack != nil && ack.Properties != nil && ack.Properties.MaximumPacketSize != nil {
		c.maxPacket = *ack.Properties.MaximumPacketSize
	}
	u.sel.connected()
	if s := u.cfg.Session; s != nil {
		s.Connected()
	}
	if u.cfg.OnConnect != nil {
		u.cfg.OnConnect()
	}
	u.mu.Lock()
	u.conn = c
	u.connects++
	u.failingBack = -1
	u.mu.Unlock()
	if u.connectFailures > 0 {
		u.log.Info("mqtt_connected", "broker", c.url, "address", c.cand.addr, "failed_attempts", u.connectFailures)
	} else {
		u.log.Info("mqtt_connected", "broker", c.url, "address", c.cand.addr)
	}
	u.connectFailures = 0
	if u.cfg.Order == Ordered && u.cfg.FailbackAfter > 0 && c.cand.broker > 0 {
		// Not from a referred server: the list's brokers sent us there.
		u.watchers.Add(1)
		go func() {
			defer u.watchers.Done()
			u.failBack(u.runCtx, c)
		}()
	}
	u.notify()
}

func (u *Uplink) onConnectionDown() bool {
	u.mu.Lock()
	c, to, abandoned := u.conn, u.failingBack, u.abandoned
	u.conn, u.abandoned = nil, nil
	if c != nil {
		close(c.down)
	}
	u.mu.Unlock()
	switch {
	case c == nil:
	case to >= 0:
		u.sel.failBack(to) // logged when it was decided
	case c == abandoned:
		// The next round starts after it, at the pace of a failed one.
		u.sel.lostConnection(c.cand.addr, 0) // logged when it was decided
	default:
		upFor := time.Since(c.since)
		if u.sel.lostConnection(c.cand.addr, upFor) {
			// Mosquitto closes a session taken over without saying why
			// (others send DISCONNECT 0x8E, logged as mqtt_session_taken_over).
			u.log.Warn("mqtt_connection_dropped_after_connect", "broker", c.url, "address", c.cand.addr, "up_for", upFor.Round(time.Millisecond),
				"hint", "the broker accepted the connection, then closed it: most often another client with this client_id ("+u.cfg.ClientID+"), else an ACL or a proxy; backing off")
		} else {
			u.log.Warn("mqtt_connection_lost", "broker", c.url, "address", c.cand.addr)
		}
	}
	u.notify()
	return true
}

// onServerDisconnect logs why the broker closed the connection and keeps
// the server it refers us to, if any (0x9C use another server, 0x9D
// server moved), for the next attempt. autopaho calls it on a goroutine of
// its own, perhaps after the connection is down.
func (u *Uplink) onServerDisconnect(d *paho.Disconnect) {
	ref := ""
	if d.Properties != nil && (d.ReasonCode == 0x9C || d.ReasonCode == 0x9D) {
		ref = d.Properties.ServerReference
	}
	if d.ReasonCode == 0x8E {
		u.log.Warn("mqtt_session_taken_over", "client_id", u.cfg.ClientID,
			"hint", "another client connected with this client_id: give every gateway its own gateway.id (or mqtt.client_id)")
	} else {
		u.log.Warn("mqtt_server_disconnect", "reason_code", fmt.Sprintf("0x%02x", d.ReasonCode), "reason", reasonString(d), "server_reference", ref)
	}
	if ref != "" {
		u.mu.Lock()
		u.referral = ref
		u.mu.Unlock()
	}
}

// onConnectError tells the selector how the attempt failed and logs the
// first failed attempt of a run of them; autopaho calls it, and
// onConnectionUp, from its one connect goroutine.
func (u *Uplink) onConnectError(err error) {
	u.connectFailures++
	broker := u.attempt.String()
	how := u.dialFailure
	var cerr *autopaho.ConnackError
	switch {
	case errors.As(err, &cerr):
		how = failed
		switch cerr.ReasonCode {
		case 0x89, 0x9F: // server busy, connection rate exceeded
			how = busy
		case 0x9C, 0x9D: // use another server, server moved
			if w := u.attemptWire; w != nil {
				if ref, ok := u.sel.refer(u.attempt.url, w.serverReference()); ok {
					u.log.Info("mqtt_server_reference", "broker", broker, "to", ref.String(), "permanent", cerr.ReasonCode == 0x9D)
				}
			}
		}
	case how == 0:
		how = failed // connected, but closed or silent before CONNACK
	}
	u.sel.failed(how)
	if how == busy {
		if u.sel.busy == 1 {
			u.log.Warn("mqtt_broker_busy", "broker", broker, "reason_code", fmt.Sprintf("0x%02x", cerr.ReasonCode),
				"hint", "the broker sheds load: backing off longer; logged again only when connected")
		}
		return
	}
	if u.connectFailures > 1 {
		return
	}
	// autopaho's message names the URL it meant to dial, not ours.
	switch {
	case cerr != nil:
		err = fmt.Errorf("CONNACK reason code 0x%02x", cerr.ReasonCode)
		if cerr.Reason != "" {
			err = fmt.Errorf("%w: %s", err, cerr.Reason)
		}
	case isTimeout(err):
		err = fmt.Errorf("no answer within connect_timeout (%s)", u.cfg.ConnectTimeout)
	case errors.Unwrap(err) != nil:
		err = errors.Unwrap(err)
	}
	u.log.Warn("mqtt_connect_failed", "broker", broker, "address", u.attempt.addr, "err", err,
		"hint", "trying the next address; logged again only when connected")
}

func reasonString(d *paho.Disconnect) string {
	if d.Properties != nil {
		return d.Properties.ReasonString
	}
	return ""
}

// publishLoop serves one connection after another until ctx ends.
func (u *Uplink) publishLoop(ctx context.Context) {
	for {
		u.heartbeat()
		c := u.current()
		if c == nil {
			select {
			case <-ctx.Done():
				return
			case <-u.changed:
			case <-u.beatTick:
			}
			continue
		}
		if !u.birth(ctx, c) {
			select { // no records without the session's births
			case <-c.down:
			case <-c.leaving:
			case <-ctx.Done():
			}
			continue
		}
		u.drain(ctx, c)
		if ctx.Err() != nil {
			return
		}
		select {
		case <-c.leaving:
			// Everything in flight was answered: the connection may go.
			close(c.settled)
			select {
			case <-c.down:
			case <-ctx.Done():
				return
			}
		default:
		}
	}
}

// birth subscribes to commands, then publishes the retained online status:
// online means commands are taken. With a Session, it subscribes to its
// filters and begins it instead; false when records may not go on c.
func (u *Uplink) birth(ctx context.Context, c *connection) bool {
	pctx, cancel := context.WithTimeout(ctx, u.cfg.ConnectTimeout)
	defer cancel()
	if s := u.cfg.Session; s != nil {
		var subs []paho.SubscribeOptions
		for _, f := range s.Filters() {
			subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 1})
		}
		if _, err := c.cm.Subscribe(pctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
			u.log.Warn("mqtt_subscribe_failed", "broker", c.url, "filter", strings.Join(s.Filters(), " "), "err", err)
		}
		return u.begin(ctx, c)
	}
	if u.cfg.Commands != nil {
		// Every connection starts clean: subscribe again each time. A
		// retained command would run again at every reconnect: ask the
		// broker not to send stored ones (Retain Handling 2).
		filter := u.cfg.CommandBase + "/+/set/+"
		sub := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1, RetainHandling: 2}}}
		if _, err := c.cm.Subscribe(pctx, sub); err != nil {
			u.log.Warn("mqtt_subscribe_failed", "broker", c.url, "filter", filter, "err", err)
		} else {
			u.log.Debug("mqtt_subscribed", "broker", c.url, "filter", filter)
		}
	}
	payload := fmt.Appendf(nil, `{"state":"online","version":%q}`, u.cfg.Version)
	if _, err := c.cm.Publish(pctx, &paho.Publish{Topic: u.cfg.StatusTopic, QoS: min(1, c.qos), Retain: true, Payload: payload}); err != nil {
		u.log.Warn("mqtt_online_status_failed", "broker", c.url, "err", err)
	}
	return true
}

// errRetry ends a drain pass whose publishes failed while connected.
var errRetry = errors.New("uplink: publish failed")

// drain publishes the store's records on connection c, from the oldest
// unacknowledged, until c goes down or ctx ends. A publish the broker
// rejects while c stays up restarts the pass after a backoff, so one bad
// message cannot cause a resend storm.
func (u *Uplink) drain(ctx context.Context, c *connection) {
	// over closes when publishing on c must stop: ctx ended, c was lost,
	// or c is being left.
	over := make(chan struct{})
	watch, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		select {
		case <-watch.Done():
		case <-c.down:
		case <-c.leaving:
		}
		close(over)
	}()
	for attempt := 0; ; attempt++ {
		err := u.pass(ctx, c, over)
		if !errors.Is(err, errRetry) {
			return
		}
		timer := time.NewTimer(u.cfg.Backoff(attempt + 1))
	backoff:
		for {
			select {
			case <-over:
				timer.Stop()
				return
			case <-u.beatTick:
				u.heartbeat()
			case <-timer.C:
				break backoff
			}
		}
	}
}

// pass sends every record once, in order, keeping up to MaxInflight unacked.
func (u *Uplink) pass(ctx context.Context, c *connection, over <-chan struct{}) error {
	// Publishes still waiting when the pass ends are abandoned: paho's
	// session forgets them on a lost connection without waking them, and
	// their records are resent from the store by the next pass anyway.
	pctx, cancel := context.WithCancel(ctx)
	ps := &pass{u: u, c: c, ctx: ctx, pctx: pctx, over: over, failed: make(chan struct{}), window: make(chan struct{}, u.cfg.MaxInflight),
		batch: u.batcher}
	defer func() {
		select {
		case <-c.leaving:
			ps.settle()
		default:
		}
		cancel()
		ps.wg.Wait()
	}()
	if u.pacer != nil {
		return ps.paced()
	}
	return ps.inOrder()
}

// fetch is how many records a pass reads from the store at a time.
func (p *pass) fetch() int {
	if p.batch != nil {
		return max(p.u.cfg.MaxInflight, p.batch.cfg.Max)
	}
	return p.u.cfg.MaxInflight
}

// next reads the records after seq from the store into *buf.
func (p *pass) next(after uint64, buf *[]buffer.Record) ([]buffer.Record, error) {
	recs, err := p.u.store.Next(after, p.fetch(), (*buf)[:0])
	*buf = recs
	if err != nil {
		p.u.log.Error("buffer_read_failed", "err", err)
		return nil, errRetry
	}
	return recs, nil
}

// inOrder sends every record once, in seq order.
func (p *pass) inOrder() error {
	u := p.u
	var (
		after uint64
		buf   []buffer.Record
	)
	for {
		u.heartbeat()
		committed := u.store.Committed()
		recs, err := p.next(after, &buf)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			if over, err := p.idle(committed); over {
				return err
			}
			continue
		}
		var over bool
		if after, over, err = p.sendAll(recs); over {
			return err
		}
	}
}

// sendAll sends recs, after a linger for more when they would not fill a
// batch, and returns the seq of the last record sent.
func (p *pass) sendAll(recs []buffer.Record) (last uint64, over bool, err error) {
	if p.batch != nil && p.batch.cfg.Linger > 0 && len(recs) < p.batch.cfg.Max {
		if recs, over, err = p.linger(recs); over {
			return 0, over, err
		}
	}
	for len(recs) > 0 {
		n, over, err := p.send(recs)
		if over {
			return 0, over, err
		}
		last, recs = recs[n-1].Seq, recs[n:]
	}
	return last, false, nil
}

// paced sends the records committed since the pass began (live) as they
// come, and the older ones (the backlog) in seq order within the rate the
// live ones leave: live readings are never held back by the backlog.
func (p *pass) paced() error {
	u := p.u
	boundary := u.store.LastSeq() // the backlog: seqs up to here
	live, back := boundary, uint64(0)
	var buf []buffer.Record
	for {
		u.heartbeat()
		committed := u.store.Committed()
		recs, err := p.next(live, &buf)
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			var over bool
			if live, over, err = p.sendAll(recs); over {
				return err
			}
			continue
		}
		if back >= boundary {
			if over, err := p.idle(committed); over {
				return err
			}
			continue
		}
		if recs, err = p.next(back, &buf); err != nil {
			return err
		}
		recs = recs[:sort.Search(len(recs), func(i int) bool { return recs[i].Seq > boundary })]
		if len(recs) == 0 {
			back = boundary
			continue
		}
		if paid, over, err := p.awaitPacer(committed); over {
			return err
		} else if !paid {
			continue // live records came: they go first
		}
		n, over, err := p.send(recs)
		if over {
			return err
		}
		back = recs[n-1].Seq
	}
}

// awaitPacer waits until the pacer lets the backlog send (paid), or until
// records are committed (not paid: live ones go first).
func (p *pass) awaitPacer(committed <-chan struct{}) (paid, over bool, err error) {
	d := p.u.pacer.delay()
	if d <= 0 {
		return true, false, nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	return p.await(timer.C, committed)
}

// await waits until timer fires (fired) or records are committed (not
// fired), with heartbeats meanwhile; over when the pass ends first.
func (p *pass) await(timer <-chan time.Time, committed <-chan struct{}) (fired, over bool, err error) {
	for {
		select {
		case <-timer:
			return true, false, nil
		case <-committed:
			return false, false, nil
		case <-p.over:
			return false, true, nil
		case <-p.failed:
			return false, true, errRetry
		case <-p.u.beatTick:
			p.u.heartbeat()
		}
	}
}

// pass is one connection's publishing: a window of at most MaxInflight
// publishes in flight, each acknowledged record acked in the store. Its
// methods report over = true when the pass ends, with pass's result.
type pass struct {
	u    *Uplink
	c    *connection
	ctx  context.Context
	pctx context.Context // ends with the pass: abandons waiting publishes
	over <-chan struct{} // drain's: ctx ended, or c was lost or is being left
	wg   sync.WaitGroup
	// failed closes at the first failed publish: the pass ends and the
	// unacknowledged records go again on the next.
	failed   chan struct{}
	failOnce sync.Once
	window   chan struct{}
	batch    *batcher // nil: each record alone
}

// settle waits until every publish in flight is answered (the window is
// empty), at most a connect timeout: the connection is being left.
func (p *pass) settle() {
	t := time.NewTimer(p.u.cfg.ConnectTimeout)
	defer t.Stop()
	for range cap(p.window) {
		select {
		case p.window <- struct{}{}:
		case <-p.c.down:
			return
		case <-p.ctx.Done():
			return
		case <-t.C:
			return
		}
	}
}

// idle waits for records to be committed, or a beat.
func (p *pass) idle(committed <-chan struct{}) (over bool, err error) {
	select {
	case <-p.over:
		return true, nil
	case <-p.failed:
		return true, errRetry
	case <-committed:
	case <-p.u.beatTick:
	}
	return false, nil
}

// acquire waits for room in the window.
func (p *pass) acquire() (over bool, err error) {
	for {
		select {
		case p.window <- struct{}{}:
			return false, nil
		case <-p.over:
			return true, nil
		case <-p.failed:
			return true, errRetry
		case <-p.u.beatTick: // waiting for acks is not being stuck
			p.u.heartbeat()
		}
	}
}

// send publishes the first records of recs, in one message when batching,
// and returns how many it used (at least one).
func (p *pass) send(recs []buffer.Record) (n int, over bool, err error) {
	b := p.batch
	if b == nil || len(recs) == 1 {
		over, err := p.sendOne(recs[0])
		return 1, over, err
	}
	if over, err := p.acquire(); over {
		return 0, over, err
	}
	most := b.cfg.Max
	for {
		n = b.fill(recs, most, b.limit(p.c), p.unreadable)
		switch len(b.seqs) {
		case 0:
			<-p.window
			return n, false, nil
		case 1:
			// A batch of one is the record alone, on its own topic.
			<-p.window
			i := slices.IndexFunc(recs[:n], func(r buffer.Record) bool { return r.Seq == b.seqs[0] })
			over, err := p.sendOne(recs[i])
			return n, over, err
		}
		pub := b.publish(p.c.qos)
		if _, over := p.c.exceeds(pub); over {
			// Compressed beyond the broker's maximum: half as many.
			most = len(b.seqs) / 2
			continue
		}
		over, err := p.transmit(pub, slices.Clone(b.seqs))
		return n, over, err
	}
}

// unreadable drops a record that cannot be composed, now or ever, rather
// than block the rest.
func (p *pass) unreadable(rec buffer.Record, err error) {
	p.u.log.Error("buffer_entry_unreadable", "seq", rec.Seq, "err", err)
	p.u.store.Ack(rec.Seq)
}

// linger waits up to the batch linger for more records to fill the batch
// recs begins, and returns recs with those that came.
func (p *pass) linger(recs []buffer.Record) ([]buffer.Record, bool, error) {
	b := p.u.cfg.Batch
	timer := time.NewTimer(b.Linger)
	defer timer.Stop()
	for len(recs) < b.Max {
		committed := p.u.store.Committed()
		more, err := p.u.store.Next(recs[len(recs)-1].Seq, b.Max-len(recs), recs)
		if err != nil {
			return recs, false, nil // sent as they are; the next read reports it
		}
		if len(more) > len(recs) {
			recs = more
			continue
		}
		if fired, over, err := p.await(timer.C, committed); over || fired {
			return recs, over, err
		}
	}
	return recs, false, nil
}

// sendOne publishes rec alone once the window has room, and returns when
// it is on the wire, so the next one cannot overtake it.
func (p *pass) sendOne(rec buffer.Record) (over bool, err error) {
	if over, err := p.acquire(); over {
		return over, err
	}
	u := p.u
	var topic string
	var payload []byte
	if u.cfg.Session != nil {
		u.wireMu.Lock()
		defer u.wireMu.Unlock()
		topic, payload, err = p.session(rec)
	} else {
		topic, payload, err = u.cfg.Compose(nil, rec)
	}
	if err != nil || topic == "" {
		<-p.window
		switch {
		case errors.Is(err, errRetry):
			return true, err
		case err != nil:
			p.unreadable(rec, err)
		}
		return false, nil
	}
	pub := &paho.Publish{Topic: topic, QoS: p.c.qos, Payload: payload}
	if size, over := p.c.exceeds(pub); over {
		// The broker would drop the connection, and the reading would be
		// first again on the next one: it can never go to this broker.
		u.drop(p.c, []uint64{rec.Seq}, &u.tooLarge, "mqtt_reading_too_large", "size", size, "broker_maximum", p.c.maxPacket,
			"hint", "the reading is dropped: it is larger than the broker's maximum packet size; raise the broker's limit or send fewer points per device")
		<-p.window
		return false, nil
	}
	return p.transmit(pub, []uint64{rec.Seq})
}

// session composes rec with the Session and publishes the messages that go
// before it; it returns rec's, or no topic when there is none (rec acked).
func (p *pass) session(rec buffer.Record) (topic string, payload []byte, err error) {
	msgs, err := p.u.cfg.Session.Compose(rec)
	if err != nil {
		return "", nil, err
	}
	if len(msgs) == 0 {
		p.u.store.Ack(rec.Seq)
		return "", nil, nil
	}
	if err := p.u.publishAll(p.ctx, p.c, msgs[:len(msgs)-1]); err != nil {
		p.fail(rec.Seq, err)
		return "", nil, errRetry
	}
	last := msgs[len(msgs)-1]
	return last.Topic, last.Payload, nil
}

// transmit publishes pub, which holds the records seqs, in the window slot
// taken for it, and returns when it is on the wire.
func (p *pass) transmit(pub *paho.Publish, seqs []uint64) (over bool, err error) {
	if p.u.pacer != nil {
		p.u.pacer.charge(pub, len(seqs))
	}
	if p.c.qos == 0 {
		// QoS 0 publishes are written before Publish returns, in order.
		_, err := p.c.cm.Publish(p.ctx, pub)
		<-p.window
		if err != nil {
			p.fail(seqs[0], err)
			return true, errRetry
		}
		p.u.acked(seqs...)
		return false, nil
	}
	written := make(chan struct{})
	p.wg.Add(1)
	go p.publish(pub, seqs, written)
	select {
	case <-written:
		return false, nil
	case <-p.failed:
		return true, errRetry
	case <-p.over:
		return true, nil
	}
}

// publish sends one QoS 1 or 2 publish and waits for its acknowledgement.
func (p *pass) publish(pub *paho.Publish, seqs []uint64, written chan struct{}) {
	defer p.wg.Done()
	defer func() { <-p.window }()
	pr, err := p.c.cm.Publish(withWritten(p.pctx, written), pub)
	switch code := reasonCode(pr); {
	case code >= 0x80 && permanentRejection[code]:
		p.u.reject(p.c, seqs, pr)
	case code >= 0x80:
		p.fail(seqs[0], fmt.Errorf("broker refused the publish for now: reason code 0x%02x %s", code, pubReason(pr)))
	case err != nil:
		p.fail(seqs[0], err)
	default:
		p.u.acked(seqs...)
	}
}

// fail ends the pass at its first failed publish, logged unless the
// connection or the pass already ended.
func (p *pass) fail(seq uint64, err error) {
	p.failOnce.Do(func() {
		select {
		case <-p.c.down: // the loss is logged once by OnConnectionDown
		case <-p.pctx.Done(): // pass over: unacked records are sent again
		default:
			p.u.log.Warn("mqtt_publish_failed", "broker", p.c.url, "seq", seq, "err", err)
		}
		close(p.failed)
	})
}

// permanentRejection are the PUBACK/PUBREC reason codes that no resend can
// change: such a reading is dropped, counted and logged, or it would hold up
// every reading behind it forever. Other refusals (quota exceeded, server
// busy, unspecified) are retried after a backoff.
var permanentRejection = map[byte]bool{
	0x87: true, // not authorized
	0x90: true, // topic name invalid
	0x95: true, // packet too large
	0x99: true, // payload format invalid
}

func reasonCode(pr *paho.PublishResponse) byte {
	if pr == nil {
		return 0
	}
	return pr.ReasonCode
}

func pubReason(pr *paho.PublishResponse) string {
	if pr != nil && pr.Properties != nil {
		return pr.Properties.ReasonString
	}
	return ""
}

// reject drops a reading the broker will never take.
func (u *Uplink) reject(c *connection, seqs []uint64, pr *paho.PublishResponse) {
	u.drop(c, seqs, &u.rejected, "mqtt_publish_rejected",
		"reason_code", fmt.Sprintf("0x%02x", pr.ReasonCode), "reason", pubReason(pr),
		"hint", "the reading is dropped: check the broker's ACL and limits for this gateway's topics")
}

// drop acks the readings of a message that can never be published, counts
// them in *count and logs them in one line: at error level the first time
// for that count, a warning after.
func (u *Uplink) drop(c *connection, seqs []uint64, count *uint64, msg string, attrs ...any) {
	for _, seq := range seqs {
		u.store.Ack(seq)
	}
	u.mu.Lock()
	first := *count == 0
	*count += uint64(len(seqs))
	u.mu.Unlock()
	level := slog.LevelWarn
	if first {
		level = slog.LevelError
	}
	which := []any{"broker", c.url, "seq", seqs[0]}
	if n := len(seqs); n > 1 {
		which = append(which, "last_seq", seqs[n-1], "readings", n)
	}
	u.log.Log(context.Background(), level, msg, append(which, attrs...)...)
}

// exceeds reports whether pub is larger than the broker's Maximum Packet
// Size, and its size when the broker set one.
func (c *connection) exceeds(pub *paho.Publish) (size int, over bool) {
	if c.maxPacket == 0 {
		return 0, false
	}
	size = packetSize(pub)
	return size, size > int(c.maxPacket)
}

// packetSize is the size of pub on the wire, as the broker's Maximum
// Packet Size counts it: the whole packet, fixed header included.
func packetSize(pub *paho.Publish) int {
	n := 0
	for _, b := range pub.Packet().Buffers() {
		n += len(b)
	}
	header := 2 // type and flags, one byte of remaining length
	for rest := n >> 7; rest > 0; rest >>= 7 {
		header++
	}
	return header + n
}

// Rejected returns how many readings brokers refused for good and were dropped.
func (u *Uplink) Rejected() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.rejected
}

// TooLarge returns how many readings were dropped because they can never
// fit the broker's Maximum Packet Size.
func (u *Uplink) TooLarge() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.tooLarge
}

func (u *Uplink) acked(seqs ...uint64) {
	for _, seq := range seqs {
		u.store.Ack(seq)
	}
	u.mu.Lock()
	u.published += uint64(len(seqs))
	u.mu.Unlock()
}
