// Package gateway reads sensors.toml, polls the devices of every bus on their
// intervals, encodes each poll once as a reading, and hands it to the flash
// buffer that the uplink drains to MQTT.
//
// It promises: one goroutine per bus, so a slow bus never slows another or
// the uplink; a broken device or bus produces readings with errors, never a
// stop; and a clean stop commits every reading already taken before Run
// returns. It knows no wire protocol: drivers are given to it (OpenFunc).
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"edgegw/board"
	"edgegw/buffer"
	"edgegw/gateway/uplink"
)

// Options are what Run needs besides the config.
type Options struct {
	// Open opens a bus's driver.
	Open OpenFunc
	// Logger receives every event; required.
	Logger *slog.Logger
	// Version goes into the status message.
	Version string
	// Notifier, when set, is told READY, STATUS, WATCHDOG and STOPPING.
	Notifier Notifier
	// WatchdogInterval is the service manager's watchdog timeout
	// (systemd's WatchdogSec); 0 sends no pings.
	WatchdogInterval time.Duration
}

// FatalError is a problem that stops the gateway before it can run
// (the buffer cannot be opened, a secret cannot be read).
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// BufferPath is where the flash buffer lives inside data_dir.
func BufferPath(cfg *Config) string { return filepath.Join(cfg.Gateway.DataDir, "buffer.db") }

// Run runs the gateway until ctx ends, then stops cleanly: polling stops,
// every reading taken is committed, the offline status is published.
func Run(ctx context.Context, cfg *Config, opts Options) error {
	log := opts.Logger
	b := board.Select(cfg.Gateway.Board)
	log.Info("starting", "version", opts.Version, "config", cfg.File, "board", b.Name, "board_model", b.Description,
		"gateway_id", cfg.Gateway.ID, "brokers", strings.Join(cfg.MQTT.Brokers, ","), "qos", cfg.MQTT.QoS,
		"buses", len(cfg.Buses), "devices", len(cfg.Devices), "data_dir", cfg.Gateway.DataDir)

	password, tlsCfg, err := secrets(cfg)
	if err != nil {
		return &FatalError{err}
	}
	buf, err := buffer.Open(BufferPath(cfg), buffer.Options{
		CommitInterval: cfg.Buffer.CommitInterval.D(),
		MaxBytes:       int64(cfg.Buffer.MaxBytes),
		MaxAge:         cfg.Buffer.MaxAge.D(),
		Logger:         log.With("component", "buffer"),
	})
	if err != nil {
		return &FatalError{err}
	}
	st := buf.Stats()
	log.Info("buffer_opened", "path", BufferPath(cfg), "readings", st.Readings, "bytes", st.Bytes, "last_seq", st.LastSeq)

	topicBase := cfg.MQTT.TopicPrefix + "/" + cfg.Gateway.ID
	pollers := newPollers(cfg, opts.Open, buf, log)
	byDevice := map[string]*poller{}
	for _, p := range pollers {
		for _, d := range p.devices {
			byDevice[d.Name] = p
		}
	}
	up := uplink.New(uplink.Config{
		Brokers:        cfg.MQTT.Brokers,
		ClientID:       cfg.MQTT.ClientID,
		Username:       cfg.MQTT.Username,
		Password:       password,
		QoS:            byte(cfg.MQTT.QoS),
		KeepAlive:      cfg.MQTT.KeepAlive.D(),
		ConnectTimeout: cfg.MQTT.ConnectTimeout.D(),
		MaxInflight:    cfg.MQTT.MaxInflight,
		TLS:            tlsCfg,
		StatusTopic:    topicBase + "/status",
		Version:        opts.Version,
		Compose: func(dst []byte, rec buffer.Record) (string, []byte, error) {
			return Message(dst, topicBase, rec.Seq, rec.Data)
		},
		CommandBase: topicBase,
		Commands: func(device, point string, value []byte, done func(error)) {
			p, ok := byDevice[device]
			if !ok {
				done(fmt.Errorf("no device %q on this gateway", device))
				return
			}
			p.submit(command{device: device, point: point, value: value, done: done})
		},
		Logger: log.With("component", "uplink"),
	}, buf)

	// The buffer outlives the pollers so that their last readings commit.
	bufCtx, stopBuf := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBuf()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Add(2)
	go func() { defer wg.Done(); errs[0] = buf.Run(bufCtx) }()
	go func() { defer wg.Done(); errs[1] = up.Run(ctx) }()
	if cfg.Status.Listen != "" {
		status := &statusServer{listen: cfg.Status.Listen, log: log.With("component", "status"), buf: buf, up: up,
			brokers: cfg.MQTT.Brokers, pollers: pollers, started: time.Now(), now: time.Now}
		wg.Add(1)
		go func() { defer wg.Done(); errs[2] = status.Run(ctx) }()
	}
	var pw sync.WaitGroup
	for _, p := range pollers {
		pw.Add(1)
		go func() { defer pw.Done(); p.Run(ctx) }()
	}
	if opts.Notifier != nil {
		wd := &watchdog{notify: opts.Notifier, interval: opts.WatchdogInterval, pollers: pollers, up: up, buf: buf,
			log: log.With("component", "watchdog"), now: time.Now}
		wg.Add(1)
		go func() { defer wg.Done(); wd.Run(ctx) }()
		opts.Notifier.Notify("READY=1")
	}
	log.Info("started", "buses", len(pollers))
	pw.Wait()
	if opts.Notifier != nil {
		opts.Notifier.Notify("STOPPING=1")
	}
	stopBuf()
	wg.Wait()
	err = errors.Join(append(errs, buf.Close())...)
	st = buf.Stats()
	log.Info("stopped", "buffered_readings", st.Readings, "last_seq", st.LastSeq, "published", up.Published())
	return err
}

func newPollers(cfg *Config, open OpenFunc, out Appender, log *slog.Logger) []*poller {
	var ps []*poller
	for _, bus := range cfg.Buses {
		p := &poller{bus: bus, open: open, out: out, log: log, stats: map[string]*DeviceStats{}, now: time.Now,
			cmds: make(chan command, 16)}
		for _, d := range cfg.Devices {
			if d.Bus == bus.Name {
				p.devices = append(p.devices, d)
				p.stats[d.Name] = &DeviceStats{}
			}
		}
		if len(p.devices) > 0 {
			ps = append(ps, p)
		}
	}
	return ps
}

// secrets reads the MQTT password and TLS files the config names.
func secrets(cfg *Config) (password []byte, tlsCfg *tls.Config, err error) {
	m := &cfg.MQTT
	if m.PasswordFile != "" {
		fi, err := os.Stat(m.PasswordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("mqtt.password_file: %w", err)
		}
		if fi.Mode().Perm()&0o004 != 0 {
			return nil, nil, fmt.Errorf("mqtt.password_file: %s is readable by every user (mode %04o): chmod o-r it", m.PasswordFile, fi.Mode().Perm())
		}
		b, err := os.ReadFile(m.PasswordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("mqtt.password_file: %w", err)
		}
		password = []byte(strings.TrimRight(string(b), "\r\n"))
	}
	t := &m.TLS
	if t.CAFile == "" && t.CertFile == "" && t.ServerName == "" {
		return password, nil, nil
	}
	tlsCfg = &tls.Config{ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("mqtt.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("mqtt.tls.ca_file: %s holds no PEM certificate", t.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("mqtt.tls.cert_file/key_file: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	return password, tlsCfg, nil
}
