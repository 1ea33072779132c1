// Package gateway runs edgegw: it maps each [[bus]] of the config to its
// driver (the one protocol switch, protocols.go), polls the devices of
// every bus on their intervals, encodes each poll once as a reading, and
// hands it to the flash buffer that the uplink drains to MQTT; it reloads
// the config on request and supervises every part.
//
// It promises: one goroutine per bus, so a slow bus never slows another or
// the uplink; a broken device or bus produces readings with errors, never a
// stop; any part that stops on its own stops the gateway cleanly; and a
// clean stop commits every reading already taken before Run returns.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"edgegw/board"
	"edgegw/buffer"
	"edgegw/drivers"
	mbserver "edgegw/drivers/modbus/server"
	"edgegw/gateway/batch"
	"edgegw/gateway/config"
	"edgegw/gateway/sparkplug"
	"edgegw/gateway/status"
	"edgegw/gateway/uplink"
	"edgegw/internal/backoff"
)

// Options are what Run needs besides the config.
type Options struct {
	// Open opens a bus's driver; the drivers of the protocol map when nil.
	Open OpenFunc
	// Logger receives every event; required.
	Logger *slog.Logger
	// Version goes into the status message.
	Version string
	// Notifier, when set, is told READY, STATUS, WATCHDOG and STOPPING.
	Notifier status.Notifier
	// WatchdogInterval is the service manager's watchdog timeout
	// (systemd's WatchdogSec); 0 sends no pings.
	WatchdogInterval time.Duration
	// Reload, when it delivers, makes Run reload the config with Load.
	Reload <-chan struct{}
	// Load reads the config again (the same file) for a reload.
	Load func() (*config.Config, error)
}

// BufferPath is where the flash buffer lives inside data_dir.
func BufferPath(cfg *config.Config) string { return filepath.Join(cfg.Gateway.DataDir, "buffer.db") }

// Run runs the gateway until ctx ends, then stops cleanly: polling stops,
// every reading taken is committed, the offline status is published. On each
// receive from opts.Reload it reloads the config (see reload). Any part
// that stops on its own (the buffer, a bus's poller, the uplink, the status
// server, the watchdog) stops the gateway, the same clean way, and Run
// returns why: systemd restarts it.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	log := opts.Logger
	b := board.Select(cfg.Gateway.Board)
	log.Info("starting", "version", opts.Version, "config", cfg.File, "board", b.Name, "board_model", b.Description,
		"gateway_id", cfg.Gateway.ID, "brokers", strings.Join(cfg.MQTT.Brokers, ","), "broker_order", cfg.MQTT.BrokerOrder, "protocol", cfg.MQTT.Protocol, "qos", cfg.MQTT.QoS,
		"buses", len(cfg.Buses), "devices", len(cfg.Devices), "data_dir", cfg.Gateway.DataDir)
	if opts.Open == nil {
		opts.Open = openDriver
	}
	g := &gateway{cfg: cfg, opts: opts, log: log, started: time.Now(), died: make(chan error, 1), board: b.Name}
	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	grp, gctx := errgroup.WithContext(runCtx)
	// The status server comes first: while the buffer's storage is
	// unavailable, /healthz says why.
	if cfg.Status.Listen != "" {
		srv := &status.Server{Listen: cfg.Status.Listen, Log: log.With("component", "status"), Source: g.report, Live: g.live, Started: g.started, Console: cfg.Status.Console}
		grp.Go(supervised(gctx, "status server", srv.Run))
	}
	buf, err := openBuffer(gctx, cfg, opts, log, &g.state)
	if err != nil {
		stopAll()
		return errors.Join(err, grp.Wait())
	}
	g.buf = buf
	// The buffer outlives the pollers and the uplink, so that their last
	// readings commit and their last acknowledgements count.
	bufCtx, stopBuf := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBuf()
	grp.Go(supervised(bufCtx, "buffer", buf.Run))
	g.startUplink(gctx, cfg)
	g.startFleet(gctx, cfg, nil)
	if opts.Notifier != nil {
		wd := &status.Watchdog{Notify: opts.Notifier, Interval: opts.WatchdogInterval, Source: g.report,
			Log: log.With("component", "watchdog"), Started: g.started}
		grp.Go(supervised(gctx, "watchdog", wd.Run))
		opts.Notifier.Notify("READY=1")
	}
	log.Info("started", "buses", len(g.pollers()))
	grp.Go(func() error {
		err := g.loop(gctx)
		g.notify("STOPPING=1")
		g.current().stop()
		upErr := g.stopUplink()
		stopBuf()
		stopAll()
		return errors.Join(err, upErr)
	})
	err = errors.Join(grp.Wait(), buf.Close())
	st := buf.Stats()
	log.Info("stopped", "buffered_readings", st.Readings, "last_seq", st.LastSeq, "published", g.uplink().Published())
	return err
}

// loop reloads on request until ctx ends or a reloadable part (a poller,
// the uplink) stops on its own.
func (g *gateway) loop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-g.died:
			return err
		case <-g.opts.Reload:
			g.reload(ctx)
		}
	}
}

// supervised runs a component for the errgroup: returning while ctx is
// live, with or without an error, is a failure that stops the gateway.
func supervised(ctx context.Context, name string, run func(context.Context) error) func() error {
	return func() error {
		err := run(ctx)
		if ctx.Err() != nil {
			return err
		}
		if err == nil {
			err = errors.New("returned")
		}
		return fmt.Errorf("%s stopped: %w", name, err)
	}
}

// watch reports a reloadable part that stopped on its own while ctx is
// live; the first report stops the gateway.
func (g *gateway) watch(ctx context.Context, name string, err error) {
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		err = errors.New("returned")
	}
	select {
	case g.died <- fmt.Errorf("%s stopped: %w", name, err):
	default: // the gateway is stopping already
	}
}

// storageRetry paces the attempts to open an unavailable buffer.
var storageRetry = backoff.Policy{First: time.Second, Max: 30 * time.Second, Jitter: 0.1}

// BufferOptions are the flash buffer's options as cfg sets them; run and
// `edgegw buffer` open it alike.
func BufferOptions(cfg *config.Config, log *slog.Logger) buffer.Options {
	return buffer.Options{
		CommitInterval: cfg.Buffer.CommitInterval.D(),
		MaxBytes:       int64(cfg.Buffer.MaxBytes),
		MaxAge:         cfg.Buffer.MaxAge.D(),
		Logger:         log.With("component", "buffer"),
	}
}

// openBuffer opens the flash buffer, trying again with a capped backoff
// while the storage is unavailable (an I/O error, no memory to map the file):
// such an error must not cost the backlog, nor a restart loop.
func openBuffer(ctx context.Context, cfg *config.Config, opts Options, log *slog.Logger, state *bufferState) (*buffer.Buffer, error) {
	bo := BufferOptions(cfg, log)
	for attempt := 0; ; attempt++ {
		buf, err := buffer.Open(BufferPath(cfg), bo)
		if err == nil {
			// Logged before /healthz can say ok, so that the two agree.
			if attempt > 0 {
				log.Info("buffer_available", "path", BufferPath(cfg), "attempts", attempt+1)
			}
			st := buf.Stats()
			log.Info("buffer_opened", "path", BufferPath(cfg), "readings", st.Readings, "bytes", st.Bytes, "last_seq", st.LastSeq)
		}
		state.set(buf, err)
		if !errors.Is(err, buffer.ErrUnavailable) {
			return buf, err
		}
		if attempt == 0 {
			log.Error("buffer_unavailable", "path", BufferPath(cfg), "err", err, "hint", "check the storage device; retrying")
		}
		if opts.Notifier != nil {
			opts.Notifier.Notify("STATUS=waiting for the buffer's storage: " + err.Error())
		}
		t := time.NewTimer(storageRetry.Delay(attempt + 1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// gateway is what runs for one Run: the buffer for good, the uplink and the
// pollers of the current config, which reload replaces.
type gateway struct {
	opts    Options
	log     *slog.Logger
	buf     *buffer.Buffer
	state   bufferState
	started time.Time
	// died carries the first reloadable part that stopped on its own.
	died chan error
	// connects counts connections to brokers, across uplink restarts:
	// devices with report = "change" send a full reading after each.
	connects atomic.Uint64
	// edge is the Sparkplug edge node of the uplink, nil without one: the
	// pollers tell it each reading as polled, for its births.
	edge atomic.Pointer[sparkplug.Edge]

	board string // the board profile's name

	mu       sync.Mutex
	reloaded *status.Reload // the last reload's outcome
	cfg      *config.Config
	fl       *fleet
	up       *uplink.Uplink
	upCancel context.CancelFunc
	upDone   chan error
}

func (g *gateway) config() *config.Config { g.mu.Lock(); defer g.mu.Unlock(); return g.cfg }
func (g *gateway) current() *fleet        { g.mu.Lock(); defer g.mu.Unlock(); return g.fl }
func (g *gateway) pollers() []*poller {
	if f := g.current(); f != nil { // nil until the first fleet starts
		return f.pollers
	}
	return nil
}
func (g *gateway) uplink() *uplink.Uplink { g.mu.Lock(); defer g.mu.Unlock(); return g.up }

// fleet is the pollers of one config, one per bus, and the Modbus servers
// in front of them.
type fleet struct {
	pollers  []*poller
	servers  []*mbserver.Server
	byDevice map[string]*poller
	cancel   context.CancelFunc
	done     sync.WaitGroup
}

// stop ends the fleet's pollers; each finishes and stores its reading in progress.
func (f *fleet) stop() {
	f.cancel()
	f.done.Wait()
}

// startFleet starts a poller per bus of cfg, continuing the counters of
// devices that were there before.
func (g *gateway) startFleet(ctx context.Context, cfg *config.Config, prev *fleet) {
	fctx, cancel := context.WithCancel(ctx)
	f := &fleet{pollers: newPollers(cfg, g.opts.Open, g.buf, g.log, g.connects.Load, g.observe), byDevice: map[string]*poller{}, cancel: cancel}
	for _, p := range f.pollers {
		for _, d := range p.devices {
			f.byDevice[d.Name] = p
			if prev != nil {
				if old, ok := prev.byDevice[d.Name]; ok {
					p.stats[d.Name] = old.stats[d.Name]
					if l := old.live[d.Name]; l != nil && slices.ContainsFunc(old.devices, func(o config.Device) bool { return reflect.DeepEqual(o, d) }) {
						p.live[d.Name] = l // the same device: the page keeps its values across a reload
					}
				}
			}
		}
	}
	for _, p := range f.pollers {
		p.nextPoll.Store(math.MaxInt64) // not polling yet: no say in flushing
		p.quiet = func() bool { return quiet(f, cfg.Buffer.CommitInterval.D()) }
	}
	for _, p := range f.pollers {
		f.done.Add(1)
		go func() { defer f.done.Done(); g.watch(fctx, "bus "+p.bus.Name, p.Run(fctx)) }()
	}
	servers, err := newModbusServers(cfg, f.pollers, g.log)
	if err != nil {
		g.log.Error("modbus_server_not_started", "err", err)
	}
	f.servers = servers
	for _, s := range servers {
		f.done.Add(1)
		go func() { defer f.done.Done(); _ = s.Run(fctx) }() // it logs its own failures and never stops the gateway
	}
	g.mu.Lock()
	g.fl = f
	g.mu.Unlock()
}

// startUplink starts the uplink for cfg's [mqtt].
func (g *gateway) startUplink(ctx context.Context, cfg *config.Config) {
	topicBase := cfg.MQTT.TopicPrefix + "/" + cfg.Gateway.ID
	up := uplink.New(uplink.Config{
		Brokers:        cfg.MQTT.Brokers,
		Order:          brokerOrder(cfg.MQTT.BrokerOrder),
		Protocol:       protocol(cfg.MQTT.Protocol),
		FailbackAfter:  cfg.MQTT.FailbackAfter.D(),
		ClientID:       cfg.MQTT.ClientID,
		Username:       cfg.MQTT.Username,
		Password:       cfg.Secrets.Password,
		QoS:            dataQoS(cfg),
		KeepAlive:      cfg.MQTT.KeepAlive.D(),
		ConnectTimeout: cfg.MQTT.ConnectTimeout.D(),
		MaxInflight:    cfg.MQTT.MaxInflight,
		TLS:            cfg.Secrets.TLS,
		StatusTopic:    topicBase + "/" + config.StatusTopicLevel,
		Version:        g.opts.Version,
		Compose: func(dst []byte, rec buffer.Record) (string, []byte, error) {
			return Message(dst, topicBase, rec.Seq, rec.Data)
		},
		Batch:       batching(cfg.MQTT, topicBase),
		MaxRate:     maxRate(cfg.MQTT),
		CommandBase: topicBase,
		CommandTTL:  cfg.MQTT.CommandTTL.D(),
		OnConnect:   func() { g.connects.Add(1) },
		Commands: func(cmd uplink.Command, done func(uplink.Result)) {
			p, ok := g.current().byDevice[cmd.Device]
			if !ok {
				done(uplink.Result{Err: fmt.Errorf("no device %q on this gateway", cmd.Device)})
				return
			}
			p.submit(command{Command: cmd, done: done})
		},
		Session: g.sessionFor(cfg),
		Logger:  g.log.With("component", "uplink"),
	}, g.buf)
	uctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		err := up.Run(uctx)
		g.watch(uctx, "uplink", err)
		done <- err
	}()
	g.mu.Lock()
	g.up, g.upCancel, g.upDone = up, cancel, done
	g.mu.Unlock()
}

// sessionFor is the uplink's Session for cfg: a Sparkplug edge node with
// payload = "sparkplug", else none; it is also the one the pollers observe.
func (g *gateway) sessionFor(cfg *config.Config) uplink.Session {
	if cfg.MQTT.Payload != config.PayloadSparkplug {
		g.edge.Store(nil)
		return nil
	}
	s := cfg.Sparkplug
	plan := sparkplug.NewPlan(cfg.Devices, func(d config.Device) string { return defaultPointType(cfg, d) })
	e := sparkplug.NewEdge(sparkplug.Node{Group: s.GroupID, ID: s.EdgeNodeID}, plan, s.PrimaryHostID,
		cfg.Gateway.DataDir, g.log.With("component", "sparkplug"))
	g.edge.Store(e)
	return e
}

// dataQoS is the QoS of the records: mqtt.qos, or under Sparkplug
// sparkplug.data_qos (its births and deaths have the QoS the
// specification gives them).
func dataQoS(cfg *config.Config) byte {
	if cfg.MQTT.Payload == config.PayloadSparkplug {
		return byte(cfg.Sparkplug.DataQoS)
	}
	return byte(cfg.MQTT.QoS)
}

// observe tells the edge node, if any, a reading as polled.
func (g *gateway) observe(r *drivers.Reading) {
	if e := g.edge.Load(); e != nil {
		e.Observe(r)
	}
}

// batching is the uplink's part of [mqtt]'s batch keys.
func batching(m config.MQTT, topicBase string) uplink.Batching {
	// Validated: the encoding parses.
	e, _ := batch.ParseEncoding(m.Compression)
	return uplink.Batching{Max: m.BatchMax, Bytes: int(m.BatchBytes), Linger: m.BatchLinger.D(),
		Topic: topicBase + "/" + config.BatchTopicLevel, Encoding: e}
}

// maxRate is the uplink's cap, from max_rate.
func maxRate(m config.MQTT) uplink.Rate {
	r, _ := config.ParseRate(m.MaxRate) // validated
	return uplink.Rate{Bytes: r.Bytes, Readings: r.Readings}
}

// stopUplink stops the uplink (offline status, disconnect) and waits for it.
func (g *gateway) stopUplink() error {
	g.mu.Lock()
	cancel, done := g.upCancel, g.upDone
	g.mu.Unlock()
	cancel()
	return <-done
}

// reload applies a new config: an invalid one is refused, its problems
// logged, and the old one kept. A valid one replaces the buses and devices
// (readings already taken stay in the buffer); the MQTT connection is
// restarted only if [mqtt] changed. [gateway], [buffer] and [status] need a
// restart to change: that is logged, and they stay as they are.
func (g *gateway) reload(ctx context.Context) {
	old := g.config()
	g.notify("RELOADING=1")
	defer g.notify("READY=1")
	if g.opts.Load == nil {
		g.log.Warn("reload_unsupported")
		return
	}
	cfg, err := g.opts.Load()
	if err != nil {
		problems := config.Errors(err)
		for _, ce := range problems {
			g.log.Error("reload_refused", "problem", ce.Error())
		}
		if len(problems) == 0 {
			g.log.Error("reload_refused", "err", err)
		}
		g.log.Warn("reload_kept_old_config", "problems", max(len(problems), 1))
		msg := err.Error()
		if len(problems) > 0 {
			msg = problems[0].Error()
			if len(problems) > 1 {
				msg += fmt.Sprintf(" (and %d more problems)", len(problems)-1)
			}
		}
		g.noteReload(msg)
		return
	}
	var restart []string
	if !reflect.DeepEqual(cfg.Gateway, old.Gateway) {
		restart = append(restart, "[gateway]")
		cfg.Gateway = old.Gateway
		cfg.MQTT.ClientID = old.MQTT.ClientID // derived from gateway.id
	}
	if !reflect.DeepEqual(cfg.Buffer, old.Buffer) {
		restart = append(restart, "[buffer]")
		cfg.Buffer = old.Buffer
	}
	if !reflect.DeepEqual(cfg.Status, old.Status) {
		restart = append(restart, "[status]")
		cfg.Status = old.Status
	}
	if len(restart) > 0 {
		g.log.Warn("reload_needs_restart", "sections", strings.Join(restart, " "), "hint", "systemctl restart edgegw to apply them")
	}
	// A rotated password or certificate keeps its path: the files' content counts.
	mqttChanged := !reflect.DeepEqual(cfg.MQTT, old.MQTT) || cfg.Secrets.Digest != old.Secrets.Digest ||
		!reflect.DeepEqual(cfg.Sparkplug, old.Sparkplug)
	if cfg.MQTT.Payload == config.PayloadSparkplug && !reflect.DeepEqual(cfg.Devices, old.Devices) {
		mqttChanged = true // the births name every device and point: a new session
	}
	// The old pollers release their ports before the new ones open them.
	prev := g.current()
	prev.stop()
	if mqttChanged {
		if err := g.stopUplink(); err != nil {
			g.log.Warn("uplink_stop_failed", "err", err)
		}
		g.startUplink(ctx, cfg)
	}
	g.startFleet(ctx, cfg, prev)
	g.mu.Lock()
	g.cfg = cfg
	g.mu.Unlock()
	g.noteReload("")
	g.log.Info("reloaded", "config", cfg.File, "buses", len(g.pollers()), "devices", len(cfg.Devices), "mqtt_restarted", mqttChanged)
}

// quiet says whether no bus of the fleet polls again within the commit
// interval: waiting for the interval's end to commit a reading would batch
// nothing more, only delay it and wake the gateway twice.
func quiet(f *fleet, interval time.Duration) bool {
	soon := time.Now().Add(interval).UnixNano()
	for _, p := range f.pollers {
		if p.nextPoll.Load() < soon {
			return false
		}
	}
	return true
}

func (g *gateway) notify(state string) {
	if g.opts.Notifier != nil {
		g.opts.Notifier.Notify(state)
	}
}

func newPollers(cfg *config.Config, open OpenFunc, out Appender, log *slog.Logger, connects func() uint64, observe func(*drivers.Reading)) []*poller {
	if cfg.MQTT.Payload != config.PayloadSparkplug {
		observe = nil // nobody to tell: no call per poll
	}
	var ps []*poller
	for _, bus := range cfg.Buses {
		p := &poller{bus: bus, open: open, out: out, log: log, stats: map[string]*DeviceStats{}, live: map[string]*liveDevice{}, now: time.Now,
			jobs: make(chan job, jobQueue(cfg, bus.Name)), connects: connects, observe: observe, exceptions: map[string]*exception{}}
		for _, d := range cfg.Devices {
			if d.Bus == bus.Name {
				p.devices = append(p.devices, d)
				p.stats[d.Name] = &DeviceStats{}
				p.live[d.Name] = newLiveDevice(d)
				// Sparkplug's DDATA carries only what changed: every
				// device reports by exception there, with its deadbands.
				if d.Report == config.ReportChange || cfg.MQTT.Payload == config.PayloadSparkplug {
					p.exceptions[d.Name] = newException(d)
				}
			}
		}
		served := slices.ContainsFunc(cfg.ModbusServers, func(m config.ModbusServer) bool { return m.Bus == bus.Name })
		if len(p.devices) > 0 || served {
			ps = append(ps, p)
		}
	}
	return ps
}

// protocol maps mqtt.protocol, validated, to the uplink's Protocol.
func protocol(s string) uplink.Protocol {
	p, _ := uplink.ParseProtocol(s)
	return p
}

// brokerOrder maps mqtt.broker_order, validated, to the uplink's Order.
func brokerOrder(s string) uplink.Order {
	if s == "spread" {
		return uplink.Spread
	}
	return uplink.Ordered
}
