package uplink

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"edgegw/internal/backoff"
)

// Order is how an uplink chooses among its brokers' addresses.
type Order int

const (
	// Ordered treats the list as a priority order: start at the first
	// broker, after a loss go on with the next one round the list, and, with
	// FailbackAfter, return to an earlier broker once it has stayed
	// reachable that long.
	Ordered Order = iota
	// Spread treats the brokers as equals: each gateway starts at a place
	// derived from its client id and, after a loss, moves to one of the
	// others at random, so a fleet stays evenly spread over the survivors.
	Spread
)

// Resolver returns the addresses of a broker's host name.
type Resolver func(ctx context.Context, host string) ([]netip.Addr, error)

func systemResolver(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// Reconnect paces connection attempts. Each wait is counted from the
// attempt before; the funcs get how many rounds (or busy answers) failed so
// far, from 1. Zero fields take DefaultReconnect's.
type Reconnect struct {
	// Window spreads the first attempt after a lost connection over a
	// random part of it, so a fleet that loses a broker does not reach the
	// others all in the same second. Negative: no wait.
	Window time.Duration
	// Away is the wait after a round in which no address took a TCP
	// connection (refused, unreachable, name not resolved). Such an
	// attempt costs a broker nothing, so it stays short: readings resume
	// soon after a broker comes back.
	Away func(rounds int) time.Duration
	// Failed is the wait after a round in which brokers took the
	// connection but gave no session (no CONNACK in time, closed, refused).
	Failed func(rounds int) time.Duration
	// Busy is the wait after a broker answered "server busy" (0x89) or
	// "connection rate exceeded" (0x9F): longer than Failed, whatever
	// address comes next.
	Busy func(answers int) time.Duration
}

// DefaultReconnect spreads the first reconnect over 8 s, retries addresses
// that refuse every 2–4 s, backs off from 1 s up to 30 s when brokers
// answer but fail, and from 10 s up to 2 min when they say they are busy;
// every wait with up to 50% random jitter. The window is what a fleet
// needs, whatever its size: in the ordered mode every gateway of a lost
// broker goes to the same next one, and 8 s keeps that broker's accept rate
// below a fifth of the fleet per second. A lone gateway pays 4 s on average
// after a loss; its readings wait on flash meanwhile.
func DefaultReconnect() Reconnect {
	return Reconnect{
		Window: 8 * time.Second,
		Away:   backoff.Policy{First: 500 * time.Millisecond, Max: 4 * time.Second, Jitter: 0.5}.Delay,
		Failed: backoff.Policy{First: time.Second, Max: 30 * time.Second, Jitter: 0.5}.Delay,
		Busy:   backoff.Policy{First: 10 * time.Second, Max: 2 * time.Minute, Jitter: 0.5}.Delay,
	}
}

func (r Reconnect) withDefaults() Reconnect {
	d := DefaultReconnect()
	if r.Window == 0 {
		r.Window = d.Window
	}
	if r.Away == nil {
		r.Away = d.Away
	}
	if r.Failed == nil {
		r.Failed = d.Failed
	}
	if r.Busy == nil {
		r.Busy = d.Busy
	}
	return r
}

// candidate is one address a connection attempt dials.
type candidate struct {
	broker int      // index in the list; referred for a server a broker sent us to
	url    *url.URL // the broker as configured (or as referred)
	addr   string   // ip:port to dial; "" when the name did not resolve
	err    error    // why addr is ""
}

const referred = -1

func (c candidate) String() string { return c.url.String() }

// failure is what an attempt's failure says about the broker, least telling first.
type failure int

const (
	away   failure = iota + 1 // no TCP connection: refused, unreachable, not resolved
	failed                    // a connection but no session: silent, closed, refused
	busy                      // CONNACK "server busy" or "connection rate exceeded"
)

// maxReferrals bounds the Server References followed in a row, so two
// brokers that refer to each other cannot keep the gateway going round.
const maxReferrals = 3

// selector decides which address each connection attempt dials, in which
// protocol, and how long it waits before. It is used from the uplink's one
// connect goroutine (connectLoop) and needs no lock but for protos.
type selector struct {
	urls     []*url.URL
	order    Order
	mode     Protocol            // Config.Protocol
	protoMu  sync.Mutex          // guards protos: fail-back's probes read it
	protos   map[string]Protocol // Auto: the protocol an address was found to speak
	fellBack map[string]bool     // Auto: addresses whose fallback to 3.1.1 was logged
	home     uint64              // spread: where this gateway starts, from its client id
	resolve  Resolver
	timeout  time.Duration // bounds one name's resolution
	pace     Reconnect
	rand     func() float64

	round     []candidate // the rest of this round, next first
	tried     int         // attempts in this round
	worst     failure     // the most telling failure of this round
	rounds    int         // failed rounds since the last connection
	busy      int         // busy answers since the last connection
	wasBusy   bool        // the last attempt was told busy
	afterLoss bool        // the next attempt is the first after a lost connection
	dropped   bool        // the connection lost was dropped soon after it came up
	lost      string      // the address just lost: tried last in the next round
	start     int         // ordered: broker the next round starts at; -1 the head
	referral  *url.URL    // a server to try first
	referrals int         // referrals followed since the last connection
	built     bool        // a round was built before
}

func newSelector(urls []*url.URL, order Order, mode Protocol, clientID string, resolve Resolver, timeout time.Duration, pace Reconnect) *selector {
	h := fnv.New64a()
	h.Write([]byte(clientID))
	if resolve == nil {
		resolve = systemResolver
	}
	return &selector{urls: urls, order: order, mode: mode, protos: map[string]Protocol{}, fellBack: map[string]bool{}, home: h.Sum64(), resolve: resolve, timeout: timeout,
		pace: pace.withDefaults(), rand: rand.Float64, start: -1}
}

// delay is the wait before the next attempt.
func (s *selector) delay() time.Duration {
	switch {
	case s.afterLoss:
		s.afterLoss = false
		var d time.Duration
		if s.pace.Window > 0 {
			d = time.Duration(s.rand() * float64(s.pace.Window))
		}
		if s.dropped {
			s.dropped = false
			d = max(d, s.pace.Failed(s.rounds))
		}
		return d
	case s.wasBusy:
		s.wasBusy = false
		if len(s.round) == 0 {
			s.endRound()
		}
		return s.pace.Busy(s.busy)
	case len(s.round) > 0 || s.tried == 0 || s.referral != nil:
		return 0 // the next address of this round, or a new round's first
	}
	worst := s.worst
	s.endRound()
	s.rounds++
	if worst == away {
		return s.pace.Away(s.rounds)
	}
	return s.pace.Failed(s.rounds)
}

func (s *selector) endRound() {
	s.round, s.tried, s.worst = s.round[:0], 0, 0
}

// next returns the address to dial now, building a round when none is left.
func (s *selector) next(ctx context.Context) candidate {
	if ref := s.referral; ref != nil {
		s.referral = nil
		s.round = append(s.resolveURL(ctx, referred, ref), s.round...)
	}
	if len(s.round) == 0 {
		s.round = s.build(ctx)
	}
	c := s.round[0]
	s.round = s.round[1:]
	s.tried++
	return c
}

// build resolves every broker's name again and orders the addresses: one
// round tries each once.
func (s *selector) build(ctx context.Context) []candidate {
	var all []candidate
	for i, u := range s.urls {
		all = append(all, s.resolveURL(ctx, i, u)...)
	}
	from := 0
	switch {
	case s.order == Ordered && s.lost != "":
		if i := slices.IndexFunc(all, func(c candidate) bool { return c.addr == s.lost }); i >= 0 {
			from = i + 1
		}
	case s.order == Ordered && s.start >= 0:
		from = max(0, slices.IndexFunc(all, func(c candidate) bool { return c.broker == s.start }))
	case s.order == Spread && s.lost != "":
		// Anyone but the lost address, at random: the fleet that sat
		// there spreads evenly over the survivors.
		others := 0
		for _, c := range all {
			if c.addr != s.lost {
				others++
			}
		}
		pick := int(s.rand() * float64(others))
		for i, c := range all {
			if c.addr != s.lost {
				if pick == 0 {
					from = i
					break
				}
				pick--
			}
		}
	case s.order == Spread && !s.built:
		from = int(s.home % uint64(len(all)))
	case s.order == Spread:
		from = int(s.rand() * float64(len(all)))
	}
	from %= len(all)
	round := append(all[from:len(all):len(all)], all[:from]...)
	if s.lost != "" {
		// The lost address last, whatever the order.
		var head, tail []candidate
		for _, c := range round {
			if c.addr == s.lost {
				tail = append(tail, c)
			} else {
				head = append(head, c)
			}
		}
		round = append(head, tail...)
	}
	s.lost, s.start, s.built = "", -1, true
	return round
}

// resolveURL returns one candidate per address of u's host; one without an
// address, carrying the error, when the name does not resolve.
func (s *selector) resolveURL(ctx context.Context, broker int, u *url.URL) []candidate {
	port := u.Port()
	if port == "" {
		port = defaultPort(u.Scheme)
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		return []candidate{{broker: broker, url: u, addr: net.JoinHostPort(ip.String(), port)}}
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ips, err := s.resolve(rctx, host)
	if err == nil && len(ips) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		return []candidate{{broker: broker, url: u, err: fmt.Errorf("resolve %s: %w", host, err)}}
	}
	out := make([]candidate, 0, len(ips))
	for _, ip := range ips {
		out = append(out, candidate{broker: broker, url: u, addr: net.JoinHostPort(ip.Unmap().String(), port)})
	}
	return out
}

func defaultPort(scheme string) string {
	if strings.HasPrefix(scheme, "tls") || strings.HasPrefix(scheme, "ssl") || scheme == "mqtts" {
		return "8883"
	}
	return "1883"
}

// failed records how the attempt just made failed.
func (s *selector) failed(f failure) {
	s.worst = max(s.worst, f)
	if f == busy {
		s.busy++
		s.wasBusy = true
	}
}

// errInsecureReference refuses a Server Reference that would take a TLS
// connection to plain TCP, where the CONNECT carries the password in clear.
var errInsecureReference = errors.New("the reference would move a TLS connection to plain TCP: not followed")

// refer makes a Server Reference the next address tried, unless too many
// were followed in a row; it reports whether it will be followed, and why
// not when it is refused. A reference keeps TLS: the next dial checks the
// certificate against the referred name, as for a configured broker.
func (s *selector) refer(current *url.URL, reference string) (*url.URL, bool, error) {
	if s.referrals >= maxReferrals {
		return nil, false, nil
	}
	u, ok := parseReference(current, reference)
	if !ok {
		return nil, false, nil
	}
	if secure(current.Scheme) && !secure(u.Scheme) {
		return u, false, errInsecureReference
	}
	s.referrals++
	s.referral = u
	return u, true, nil
}

// secure reports whether a broker URL's scheme dials TLS.
func secure(scheme string) bool {
	return scheme == "tls" || scheme == "ssl" || scheme == "mqtts"
}

// parseReference reads an MQTT v5 Server Reference: the form is left to
// brokers; in use are a URL, host:port, or a host alone (same port). Of a
// space-separated list the first is taken.
func parseReference(current *url.URL, ref string) (*url.URL, bool) {
	ref, _, _ = strings.Cut(strings.TrimSpace(ref), " ")
	if ref == "" {
		return nil, false
	}
	if strings.Contains(ref, "://") {
		u, err := url.Parse(ref)
		return u, err == nil && u.Host != ""
	}
	host, port, err := net.SplitHostPort(ref)
	if err != nil {
		host, port = strings.Trim(ref, "[]"), current.Port()
	}
	if _, err := strconv.Atoi(port); port != "" && err != nil {
		return nil, false
	}
	u := *current
	u.Host = host
	if port != "" {
		u.Host = net.JoinHostPort(host, port)
	}
	return &u, host != ""
}

// connected resets the counts of a run of failures.
func (s *selector) connected() {
	s.endRound()
	s.busy, s.wasBusy, s.referrals = 0, false, 0
}

// stableAfter is how long a connection must last to end a run of failures.
// One the broker drops sooner (another client with the same id, an ACL, a
// proxy that closes) counts as a failed round, so a broker that takes every
// connection and drops it meets the growing backoff, not a loop.
const stableAfter = 10 * time.Second

// lostConnection prepares the first attempt after losing addr, which was
// up for upFor; it reports whether the loss counts as a failed round (the
// connection was dropped before stableAfter).
func (s *selector) lostConnection(addr string, upFor time.Duration) (dropped bool) {
	s.afterLoss, s.lost = true, addr
	s.dropped = upFor < stableAfter
	if s.dropped {
		s.rounds++
	} else {
		s.rounds = 0
	}
	return s.dropped
}

// failBack makes the next round start at broker i, at once.
func (s *selector) failBack(i int) {
	s.start, s.afterLoss = i, false
}

// protocol is the one to speak to addr: the configured one, or with Auto
// what addr was found to speak, MQTT 5 until then. Fail-back's probes ask
// it too, from their own goroutine.
func (s *selector) protocol(addr string) Protocol {
	if s.mode != Auto {
		return s.mode
	}
	s.protoMu.Lock()
	defer s.protoMu.Unlock()
	if p, ok := s.protos[addr]; ok {
		return p
	}
	return MQTT5
}

// remember makes p the protocol spoken to addr from now on (Auto).
func (s *selector) remember(addr string, p Protocol) {
	s.protoMu.Lock()
	defer s.protoMu.Unlock()
	if p == MQTT5 {
		delete(s.protos, addr)
		return
	}
	s.protos[addr] = p
}

// firstFallback reports whether addr falls back to 3.1.1 for the first time.
func (s *selector) firstFallback(addr string) bool {
	if s.fellBack[addr] {
		return false
	}
	s.fellBack[addr] = true
	return true
}
