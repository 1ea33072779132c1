// Package uplink publishes the buffer's records to MQTT brokers.
//
// It promises: a record is acknowledged to the store only after the broker
// acknowledged it (PUBACK for QoS 1, PUBCOMP for QoS 2; for QoS 0 the PINGRESP of a
// PINGREQ written after it: the broker has read it);
// records go out oldest first, in seq order, at most MaxInflight unacknowledged
// at once; after every (re)connect, to the same broker or another, every
// unacknowledged record is sent again from the store, because the store and
// not the MQTT session is the source of truth. Each connection starts clean.
//
// It speaks MQTT 5 or 3.1.1 (Config.Protocol), per broker address when Auto:
// the logic above is written once, over a link of either protocol
// (link.go). It keeps one connection at a time itself (connect.go): the
// selector picks each attempt's address and protocol.
package uplink

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"edgegw/buffer"
	"edgegw/internal/backoff"
	"edgegw/internal/beat"
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
	// Protocol is the MQTT version spoken: Auto (MQTT 5, 3.1.1 for a
	// broker that refuses 5), MQTT5 or MQTT311.
	Protocol Protocol
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

	batcher *batcher // when batching; one pass at a time uses it
	pacer   *pacer   // with MaxRate; one pass at a time uses it

	urls []*url.URL
	sel  *selector // only the connect goroutine calls it
	rand func() float64
	// What the connect goroutine knows of the attempt in progress.
	attempt      candidate
	attemptProto Protocol
	attemptWire  *wireConn // nil when the dial failed
	dialFailure  failure   // how the dial failed, 0 when it did not
	downgraded   bool      // a QoS downgrade was logged

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
	// lastErr is the newest failure to connect or loss of a connection,
	// for people (the commissioning page); lastErrAt when it happened.
	lastErr     string
	lastErrAt   time.Time
	rejected    uint64
	tooLarge    uint64
	learned     map[string]uint32 // packet limits learned per address (closer.go)
	closes      closes            // the publish loop's: losses on one message in a row
	replies     sync.WaitGroup    // commands accepted and not yet answered
	results     chan reply        // answered commands, for the reply worker
	commandSlot chan struct{}     // one per accepted command not yet answered
	flooded     atomic.Bool       // a command was dropped since one was last accepted
	droppedCmds atomic.Uint64     // commands dropped: too many waiting
	watchers    sync.WaitGroup    // fail-back watchers
	runCtx      context.Context   // Run's: the watchers end with it

	// bytesIn counts the bytes received from brokers, all connections.
	bytesIn atomic.Uint64

	// beat is the publish loop's sign of life: it rests while it waits
	// for an event (an ack, a commit, a connection), with no ticker.
	beat beat.Beat
	// connectFailures counts failed attempts since the last connection;
	// only the connect goroutine touches it.
	connectFailures int
}

// Heartbeat returns when the publish loop was last known alive: now while
// it waits for an event, else when it last went to work.
func (u *Uplink) Heartbeat() time.Time { return u.beat.Last() }

func (u *Uplink) heartbeat() { u.beat.Work() }

// rest says the publish loop waits for an event (in a select).
func (u *Uplink) rest() { u.beat.Rest() }

// connection is one live connection to one broker.
type connection struct {
	link  link
	proto Protocol
	url   string
	cand  candidate
	wire  *wireConn
	qos   byte // readings go at this QoS: Config.QoS, or the broker's maximum if lower
	limits
	since time.Time     // when it came up
	down  chan struct{} // closed when the connection is lost
	// leaving closes when the connection is to be left (fail-back): no new
	// publish starts; settled closes once the publishing has stopped.
	leaving chan struct{}
	settled chan struct{}
	// born says the Session began here: records may go.
	born atomic.Bool
	// left says the uplink ended the connection itself (fail-back, the
	// Session's word, stop): its loss says nothing about the broker.
	left atomic.Bool
	// outcomes is what its publishes showed about packet sizes (closer.go).
	outcomes outcomes
	lostAt   time.Time // when it was lost; set before down closes
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
	return &Uplink{cfg: cfg, store: store, log: cfg.Logger, changed: make(chan struct{}, 1),
		rand: rand.Float64, failingBack: -1, learned: map[string]uint32{},
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

// Protocol returns the MQTT version spoken to the broker in use ("5" or
// "3.1.1"), "" while disconnected.
func (u *Uplink) Protocol() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil {
		return ""
	}
	return u.conn.proto.String()
}

// ConnectedSince returns when the connection in use came up; zero while
// disconnected.
func (u *Uplink) ConnectedSince() time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil {
		return time.Time{}
	}
	return u.conn.since
}

// LastError returns the newest failure to connect to a broker, or loss of
// a connection, and when it happened; "" when there was none.
func (u *Uplink) LastError() (string, time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lastErr, u.lastErrAt
}

func (u *Uplink) noteError(msg string) {
	u.mu.Lock()
	u.lastErr, u.lastErrAt = msg, time.Now()
	u.mu.Unlock()
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
	urls, err := parseBrokers(u.cfg.Brokers)
	if err != nil {
		return err
	}
	u.urls = urls
	u.sel = newSelector(urls, u.cfg.Order, u.cfg.Protocol, u.cfg.ClientID, u.cfg.Resolve, u.cfg.ConnectTimeout, u.cfg.Reconnect)
	if u.cfg.Batch.on() {
		if u.batcher, err = newBatcher(u.cfg.Batch, u.cfg.Compose); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
	}
	if u.cfg.MaxRate.on() {
		u.pacer = newPacer(u.cfg.MaxRate)
	}
	u.runCtx = ctx
	// The connection outlives ctx by the goodbye below.
	connCtx, leave := context.WithCancel(context.WithoutCancel(ctx))
	defer leave()
	connDone := make(chan struct{})
	go func() { u.connectLoop(connCtx); close(connDone) }()
	repliesDone := make(chan struct{})
	go func() { u.replyWorker(); close(repliesDone) }()
	u.heartbeat()
	u.publishLoop(ctx)

	// Say goodbye on a clean stop: the will is only sent on a lost connection.
	if c := u.current(); c != nil {
		u.sayGoodbye(c)
	}
	leave()
	<-connDone
	u.watchers.Wait()
	// Commands still queued on a bus (a stopping bus answers them) and
	// results still to publish end now: the connection is gone.
	u.replies.Wait()
	close(u.results)
	<-repliesDone
	return nil
}

// publishLoop serves one connection after another until ctx ends.
func (u *Uplink) publishLoop(ctx context.Context) {
	for {
		u.heartbeat()
		c := u.current()
		if c == nil {
			u.rest()
			select {
			case <-ctx.Done():
				return
			case <-u.changed:
			}
			continue
		}
		if !u.birth(ctx, c) {
			select { // no records without the session's births
			case <-c.down:
			case <-c.leaving:
			case <-ctx.Done():
				return
			}
			continue
		}
		u.drain(ctx, c)
		if ctx.Err() != nil {
			return
		}
		select {
		case <-c.down:
			u.learnLimit(c)
		default:
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
		if err := u.subscribeSession(pctx, c, s.Filters()); err != nil && ctx.Err() == nil {
			// Births without the command subscription, or a wait for a
			// STATE that cannot come: leave for the next broker.
			u.log.Warn("mqtt_subscribe_failed", "broker", c.url, "err", err,
				"hint", "the edge node needs its command and STATE subscriptions (check the broker's ACL): leaving for the next broker")
			u.mu.Lock()
			u.abandoned = c
			u.mu.Unlock()
			c.left.Store(true)
			c.wire.leave() // nothing was born: the will may go
			return false
		}
		return u.begin(ctx, c)
	}
	if u.cfg.Commands != nil {
		// Every connection starts clean: subscribe again each time. A
		// retained command would run again at every reconnect: ask the
		// broker not to send stored ones (Retain Handling 2).
		filter := u.cfg.CommandBase + "/+/set/+"
		if err := c.link.subscribe(pctx, []string{filter}, true); err != nil {
			u.log.Warn("mqtt_subscribe_failed", "broker", c.url, "filter", filter, "err", err)
		} else {
			u.log.Debug("mqtt_subscribed", "broker", c.url, "filter", filter)
		}
	}
	payload := fmt.Appendf(nil, `{"state":"online","version":%q}`, u.cfg.Version)
	if _, _, err := c.link.publish(pctx, &publication{Topic: u.cfg.StatusTopic, QoS: min(1, c.qos), Retain: true, Payload: payload}, nil); err != nil {
		u.log.Warn("mqtt_online_status_failed", "broker", c.url, "err", err)
	}
	return true
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

// subscribeSession subscribes to a Session's filters: those of commands
// without their retained messages (MQTT 5), the others with them (STATE).
func (u *Uplink) subscribeSession(ctx context.Context, c *connection, filters []Filter) error {
	var cmds, rest []string
	for _, f := range filters {
		if f.Commands {
			cmds = append(cmds, f.Topic)
		} else {
			rest = append(rest, f.Topic)
		}
	}
	for _, group := range []struct {
		topics     []string
		noRetained bool
	}{{cmds, true}, {rest, false}} {
		if len(group.topics) == 0 {
			continue
		}
		if err := c.link.subscribe(ctx, group.topics, group.noRetained); err != nil {
			return fmt.Errorf("%s: %w", strings.Join(group.topics, " "), err)
		}
	}
	return nil
}
