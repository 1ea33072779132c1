// Package server is a Modbus TCP server in front of one bus: it lets other
// masters (a SCADA, an HMI, a second poller) reach the bus's devices
// through the gateway that owns the bus.
//
// It promises: a read whose registers were all read within Cache is
// answered from the bus's register image and never touches the bus; every
// other request is handed to the bus (Bus.Do), which carries it in its own
// turn, and the device's answer, exceptions included, goes back as it came;
// a client can neither crash the server nor hold more than its share: a
// malformed header closes its connection, more than PerClient requests
// waiting at once or a full bus queue are answered with exception 6 (server
// busy), connections beyond MaxClients are closed at once, and a client
// silent for Idle is closed. Units it does not answer for get exception
// 0x0B without any bus traffic, writes are refused with exception 1 unless
// Writes is set.
package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"edgegw/drivers/modbus"
	"edgegw/internal/backoff"
)

// ErrBusy is Bus.Do's answer when the bus's queue is full.
var ErrBusy = errors.New("the bus's queue is full")

// Bus is the bus the server stands in front of.
type Bus interface {
	// Do sends one request PDU to unit in the bus's turn and returns the
	// device's reply PDU (an exception reply included) and how long the
	// request waited for its turn. It returns ErrBusy at once when the
	// queue is full, and an error when the device did not answer.
	Do(ctx context.Context, unit byte, pdu []byte) (reply []byte, waited time.Duration, err error)
	// Fresh appends the reply data of a read of count registers or bits of
	// table from start if all were read at or after since (see modbus.Image).
	Fresh(out []byte, unit byte, table modbus.Table, start, count uint16, since time.Time) ([]byte, bool)
}

// Config is one server.
type Config struct {
	// Name labels the server in metrics and logs.
	Name string
	// Listen is host:port.
	Listen string
	// Units are the unit ids answered; others get exception 0x0B.
	Units []byte
	// Cache is how old the registers of a read answered from the image may
	// be; 0 sends every read to the bus.
	Cache time.Duration
	// Writes lets function codes 5, 6, 15 and 16 through to the bus.
	Writes bool
	// MaxClients bounds the connections open at once.
	MaxClients int
	// PerClient bounds a connection's requests waiting at once (pipelined
	// by its master); 0 means 4.
	PerClient int
	// Idle closes a connection that sent nothing for so long; 0 means a minute.
	Idle time.Duration
	// Log receives the server's events; nil discards them.
	Log *slog.Logger
}

// Outcome is how a request was answered.
type Outcome int

// Outcomes, as edgegw_modbus_server_requests_total labels them.
const (
	Cache   Outcome = iota // from the register image
	FromBus                // by the device, through the bus
	Refused                // by the server: unknown unit, function or data, writes off, busy, too many clients
	Failed                 // the device did not answer (exception 0x0B), or a malformed frame
	outcomes
)

func (o Outcome) String() string { return [...]string{"cache", "bus", "refused", "error"}[o] }

// Server serves Modbus TCP for one bus. Run it once.
type Server struct {
	cfg     Config
	bus     Bus
	log     *slog.Logger
	counts  [outcomes]atomic.Uint64
	waitSum atomic.Int64 // nanoseconds requests waited for the bus, in total
	waits   atomic.Uint64
	clients atomic.Int64

	mu   sync.Mutex
	seen map[string]time.Time // client host → when its last connection ended (zero while open)
}

// New prepares a server; Run listens.
func New(cfg Config, bus Bus) *Server {
	if cfg.PerClient <= 0 {
		cfg.PerClient = 4
	}
	if cfg.Idle <= 0 {
		cfg.Idle = time.Minute
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 16
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, bus: bus, log: log.With("modbus_server", cfg.Name), seen: map[string]time.Time{}}
}

// Name is the server's name, as Config gave it.
func (s *Server) Name() string { return s.cfg.Name }

// Counts are a server's counters.
type Counts struct {
	Requests [outcomes]uint64 // by Outcome
	// QueueWait is the total time requests waited for the bus, over
	// QueueWaits requests.
	QueueWait  time.Duration
	QueueWaits uint64
	Clients    int
}

// Counts reads the server's counters; safe from any goroutine.
func (s *Server) Counts() Counts {
	var c Counts
	for i := range c.Requests {
		c.Requests[i] = s.counts[i].Load()
	}
	c.QueueWait, c.QueueWaits, c.Clients = time.Duration(s.waitSum.Load()), s.waits.Load(), int(s.clients.Load())
	return c
}

// listenRetry paces attempts to listen while the address is taken.
var listenRetry = backoff.Policy{First: time.Second, Max: 30 * time.Second}

// Run serves until ctx ends and returns after every connection closed. An
// address that cannot be listened on is logged and tried again: the
// gateway's polling goes on without the server meanwhile.
func (s *Server) Run(ctx context.Context) error {
	ln, err := s.listen(ctx)
	if ln == nil {
		return err
	}
	s.log.Info("modbus_server_listening", "listen", ln.Addr().String(), "units", fmt.Sprint(s.cfg.Units), "cache", s.cfg.Cache, "writes", s.cfg.Writes)
	var conns sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	full := false
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Error("modbus_server_accept_failed", "err", err)
			break
		}
		if int(s.clients.Load()) >= s.cfg.MaxClients {
			s.counts[Refused].Add(1)
			if !full {
				s.log.Warn("modbus_server_full", "client", c.RemoteAddr().String(), "max_clients", s.cfg.MaxClients, "hint", "raise max_clients, or make the masters reuse their connections")
			}
			full = true
			_ = c.Close()
			continue
		}
		full = false
		s.clients.Add(1)
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer s.clients.Add(-1)
			s.serve(ctx, c)
		}()
	}
	_ = ln.Close()
	conns.Wait()
	return nil
}

// listen opens the listener, trying again while the address is taken; nil
// when ctx ended first.
func (s *Server) listen(ctx context.Context) (net.Listener, error) {
	var lc net.ListenConfig
	for attempt := 1; ; attempt++ {
		ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
		if err == nil {
			if attempt > 1 {
				s.log.Info("modbus_server_listen_recovered", "listen", s.cfg.Listen, "failed_attempts", attempt-1)
			}
			return ln, nil
		}
		if attempt == 1 {
			hint := "another program holds the port, or the address is not this machine's; trying again"
			if errors.Is(err, syscall.EACCES) {
				hint = "ports below 1024 need CAP_NET_BIND_SERVICE (the packaged systemd unit grants it) or root; trying again"
			}
			s.log.Error("modbus_server_listen_failed", "listen", s.cfg.Listen, "err", err, "hint", hint)
		}
		t := time.NewTimer(listenRetry.Delay(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		case <-t.C:
		}
	}
}

// conn is one client connection.
type conn struct {
	s       *Server
	c       net.Conn
	wmu     sync.Mutex // one reply written at a time
	pending chan struct{}
	served  [outcomes]uint64 // by this connection, for its summary line
	cmu     sync.Mutex
	wg      sync.WaitGroup
}

// serve reads requests until the client goes, ctx ends, or it is idle too
// long; requests run concurrently up to PerClient, their replies written
// as they are answered (Modbus TCP matches them by transaction id).
func (s *Server) serve(ctx context.Context, c net.Conn) {
	cn := &conn{s: s, c: c, pending: make(chan struct{}, s.cfg.PerClient)}
	host := hostOf(c.RemoteAddr())
	s.arrived(host, c.RemoteAddr())
	opened := time.Now()
	// The connection's context: what a client that went still has queued
	// is not sent to the bus.
	cctx, gone := context.WithCancel(ctx)
	stop := context.AfterFunc(cctx, func() { _ = c.Close() })
	reason := cn.readLoop(cctx)
	gone()
	stop()
	_ = c.Close()
	cn.wg.Wait()
	s.left(host, c.RemoteAddr(), reason, time.Since(opened), cn)
}

// readLoop reads and dispatches requests; it returns why it stopped.
func (cn *conn) readLoop(ctx context.Context) string {
	r := bufio.NewReaderSize(cn.c, 512)
	var hdr [headerLen]byte
	for {
		if err := cn.c.SetReadDeadline(time.Now().Add(cn.s.cfg.Idle)); err != nil {
			return "closed"
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return readEnd(ctx, err, cn.s.cfg.Idle)
		}
		h, err := parseHeader(hdr[:])
		if err != nil {
			cn.count(Failed)
			return err.Error()
		}
		pdu := make([]byte, h.length-1)
		if _, err := io.ReadFull(r, pdu); err != nil {
			return readEnd(ctx, err, cn.s.cfg.Idle)
		}
		select {
		case cn.pending <- struct{}{}:
		default:
			cn.count(Refused)
			cn.reply(h, exception(pdu[0], exBusy))
			continue
		}
		cn.wg.Add(1)
		go func() {
			defer cn.wg.Done()
			defer func() { <-cn.pending }()
			reply, outcome := cn.s.answer(ctx, h.unit, pdu)
			cn.count(outcome)
			cn.reply(h, reply)
		}()
	}
}

// readEnd names why a read ended.
func readEnd(ctx context.Context, err error, idle time.Duration) string {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return "stopping"
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("idle for %s", idle)
	case errors.Is(err, io.EOF):
		return ""
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "closed in the middle of a request"
	}
	return err.Error()
}

func (cn *conn) count(o Outcome) {
	cn.s.counts[o].Add(1)
	cn.cmu.Lock()
	cn.served[o]++
	cn.cmu.Unlock()
}

func (cn *conn) reply(h header, pdu []byte) {
	out := appendReply(make([]byte, 0, headerLen+len(pdu)), h, pdu)
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.c.SetWriteDeadline(time.Now().Add(cn.s.cfg.Idle))
	_, _ = cn.c.Write(out) // a client that went: its read loop ends too
}

// answer handles one request PDU for unit and returns the reply PDU.
func (s *Server) answer(ctx context.Context, unit byte, pdu []byte) ([]byte, Outcome) {
	if !slices.Contains(s.cfg.Units, unit) {
		return exception(pdu[0], exTargetFailed), Refused
	}
	req, ex := checkPDU(pdu)
	switch {
	case ex != 0:
		return exception(pdu[0], ex), Refused
	case req.write && !s.cfg.Writes:
		return exception(pdu[0], exIllegalFunction), Refused
	}
	if !req.write && s.cfg.Cache > 0 {
		table, _ := modbus.ReadTable(req.fc) // a read: one of 1 to 4
		out := append(make([]byte, 0, 2+2*int(req.count)), req.fc, 0)
		if out, ok := s.bus.Fresh(out, unit, table, req.start, req.count, time.Now().Add(-s.cfg.Cache)); ok {
			out[1] = byte(len(out) - 2)
			return out, Cache
		}
	}
	reply, waited, err := s.bus.Do(ctx, unit, pdu)
	if waited > 0 || err == nil {
		s.waitSum.Add(int64(waited))
		s.waits.Add(1)
	}
	switch {
	case errors.Is(err, ErrBusy):
		return exception(pdu[0], exBusy), Refused
	case err != nil:
		return exception(pdu[0], exTargetFailed), Failed
	}
	return reply, FromBus
}

// arrived logs a client host that was not connected within the last
// ten minutes: a master that reconnects for every poll is logged once.
func (s *Server) arrived(host string, addr net.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	last, known := s.seen[host]
	s.seen[host] = time.Time{}
	for h, t := range s.seen {
		if !t.IsZero() && time.Since(t) > 10*time.Minute {
			delete(s.seen, h)
		}
	}
	if !known || !last.IsZero() && time.Since(last) > 10*time.Minute {
		s.log.Info("modbus_client_connected", "client", addr.String(), "clients", s.clients.Load())
	}
}

// left logs a connection that ended for a reason of the server's (idle,
// malformed), or that lived a minute or more; a master's routine close
// after a short session is quiet.
func (s *Server) left(host string, addr net.Addr, reason string, lived time.Duration, cn *conn) {
	s.mu.Lock()
	s.seen[host] = time.Now()
	s.mu.Unlock()
	if reason == "stopping" || reason == "" && lived < time.Minute {
		return
	}
	if reason == "" {
		reason = "closed by the client"
	}
	cn.cmu.Lock()
	defer cn.cmu.Unlock()
	s.log.Info("modbus_client_gone", "client", addr.String(), "reason", reason, "connected_for", lived.Round(time.Second),
		"cache", cn.served[Cache], "bus", cn.served[FromBus], "refused", cn.served[Refused], "errors", cn.served[Failed])
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return a.String()
}
