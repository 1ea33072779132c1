package uplink

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"net/url"
	"testing"
	"time"
)

func mustURLs(t *testing.T, raw ...string) []*url.URL {
	t.Helper()
	var out []*url.URL
	for _, r := range raw {
		u, err := url.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

// steps is a pace whose waits say which rule chose them.
var steps = Reconnect{
	Window: 10 * time.Second,
	Away:   func(n int) time.Duration { return time.Duration(n) * time.Millisecond },
	Failed: func(n int) time.Duration { return time.Duration(n) * time.Second },
	Busy:   func(n int) time.Duration { return time.Duration(n) * time.Minute },
}

func addrs(round []candidate) []string {
	var out []string
	for _, c := range round {
		out = append(out, c.addr)
	}
	return out
}

func TestSpreadStartsWhereTheIDSays(t *testing.T) {
	urls := mustURLs(t, "tcp://127.0.0.1:1", "tcp://127.0.0.2:1", "tcp://127.0.0.3:1")
	for _, n := range []int{1000, 5000} {
		count := map[string]int{}
		for i := range n {
			s := newSelector(urls, Spread, Auto, fmt.Sprintf("edgegw-gw%05d", i), nil, time.Second, steps)
			count[s.next(context.Background()).addr]++
		}
		for addr, c := range count {
			if d := float64(c) - float64(n)/3; d > float64(n)/30 || d < -float64(n)/30 {
				t.Errorf("N=%d: %d gateways start at %s, not within 10%% of %d", n, c, addr, n/3)
			}
		}
		if len(count) != 3 {
			t.Errorf("N=%d: starts %v", n, count)
		}
	}
	// The same id starts at the same place every time.
	a := newSelector(urls, Spread, Auto, "edgegw-x", nil, time.Second, steps).next(context.Background())
	b := newSelector(urls, Spread, Auto, "edgegw-x", nil, time.Second, steps).next(context.Background())
	if a.addr != b.addr {
		t.Errorf("one id starts at %s and at %s", a.addr, b.addr)
	}
}

func TestSpreadAfterALossPicksASurvivorAtRandom(t *testing.T) {
	urls := mustURLs(t, "tcp://127.0.0.1:1", "tcp://127.0.0.2:1", "tcp://127.0.0.3:1")
	r := rand.New(rand.NewPCG(1, 2))
	count := map[string]int{}
	const n = 3000
	for range n {
		s := newSelector(urls, Spread, Auto, "edgegw-x", nil, time.Second, steps)
		s.rand = r.Float64
		s.lostConnection("127.0.0.2:1", time.Minute)
		round := s.build(context.Background())
		if round[len(round)-1].addr != "127.0.0.2:1" {
			t.Fatalf("the lost address is not last: %v", addrs(round))
		}
		count[round[0].addr]++
	}
	if count["127.0.0.2:1"] != 0 {
		t.Fatalf("went back to the lost broker first: %v", count)
	}
	if d := count["127.0.0.1:1"] - count["127.0.0.3:1"]; d > n/20 || d < -n/20 {
		t.Errorf("survivors not evenly chosen: %v", count)
	}
}

func TestOrderedGoesOnFromTheLostOne(t *testing.T) {
	urls := mustURLs(t, "tcp://127.0.0.1:1", "tcp://127.0.0.2:1", "tcp://127.0.0.3:1")
	s := newSelector(urls, Ordered, Auto, "edgegw-x", nil, time.Second, steps)
	if got := addrs(s.build(context.Background())); fmt.Sprint(got) != "[127.0.0.1:1 127.0.0.2:1 127.0.0.3:1]" {
		t.Errorf("first round %v", got)
	}
	s.lostConnection("127.0.0.2:1", time.Minute)
	if got := addrs(s.build(context.Background())); fmt.Sprint(got) != "[127.0.0.3:1 127.0.0.1:1 127.0.0.2:1]" {
		t.Errorf("after losing the second: %v", got)
	}
	s.failBack(0)
	if got := addrs(s.build(context.Background())); fmt.Sprint(got) != "[127.0.0.1:1 127.0.0.2:1 127.0.0.3:1]" {
		t.Errorf("after failing back: %v", got)
	}
}

func TestEveryAddressOfANameIsACandidate(t *testing.T) {
	urls := mustURLs(t, "tcp://cluster.test:1883", "tcp://backup.test:1884")
	lookups := 0
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		lookups++
		switch host {
		case "cluster.test":
			return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}, nil
		}
		return nil, errors.New("no such host")
	}
	s := newSelector(urls, Ordered, Auto, "edgegw-x", resolve, time.Second, steps)
	round := s.build(context.Background())
	if got := addrs(round); fmt.Sprint(got) != "[127.0.0.2:1883 127.0.0.3:1883 ]" {
		t.Fatalf("round %v", got)
	}
	if round[2].err == nil || round[2].String() != "tcp://backup.test:1884" {
		t.Errorf("an unresolved name is a candidate that fails with why: %+v", round[2])
	}
	s.round = round
	for range 3 {
		s.next(context.Background())
	}
	s.next(context.Background()) // a new round
	if lookups != 4 {
		t.Errorf("%d lookups in two rounds, want each name resolved every round", lookups)
	}
}

func TestPace(t *testing.T) {
	urls := mustURLs(t, "tcp://127.0.0.1:1", "tcp://127.0.0.2:1")
	s := newSelector(urls, Ordered, Auto, "edgegw-x", nil, time.Second, steps)
	s.rand = func() float64 { return 0.5 }
	attempt := func(f failure) {
		s.next(context.Background())
		s.failed(f)
	}
	if d := s.delay(); d != 0 {
		t.Errorf("first attempt waits %s", d)
	}
	attempt(away)
	if d := s.delay(); d != 0 {
		t.Errorf("the next address of a round waits %s", d)
	}
	attempt(away)
	if d := s.delay(); d != time.Millisecond {
		t.Errorf("after a round of refused addresses: %s, want Away(1)", d)
	}
	attempt(away)
	attempt(failed)
	if d := s.delay(); d != 2*time.Second {
		t.Errorf("after a round with a broker that answered badly: %s, want Failed(2)", d)
	}
	attempt(busy)
	if d := s.delay(); d != time.Minute {
		t.Errorf("after busy: %s, want Busy(1) even within the round", d)
	}
	s.connected()
	s.lostConnection("127.0.0.1:1", time.Minute)
	if d := s.delay(); d != 5*time.Second {
		t.Errorf("first attempt after a loss waits %s, want half the window at rand 0.5", d)
	}
	if c := s.next(context.Background()); c.addr != "127.0.0.2:1" {
		t.Errorf("after the loss: %s", c.addr)
	}
	// Connections dropped right after they came up count as failed
	// rounds: the wait is Failed's when longer than the window's part.
	s.rand = func() float64 { return 0 }
	for want := 1; want <= 3; want++ {
		s.connected()
		s.lostConnection("127.0.0.2:1", time.Second)
		if d := s.delay(); d != time.Duration(want)*time.Second {
			t.Errorf("after %d dropped connections: %s, want Failed(%d)", want, d, want)
		}
	}
}

func TestServerReference(t *testing.T) {
	cur := mustURLs(t, "tls://a.test:8883")[0]
	for ref, want := range map[string]string{
		"b.test:9999":              "tls://b.test:9999",
		"b.test":                   "tls://b.test:8883",
		"tcp://c.test:1883 d.test": "tcp://c.test:1883",
		"[::1]:1884":               "tls://[::1]:1884",
		"":                         "",
		"b.test:port":              "",
	} {
		u, ok := parseReference(cur, ref)
		got := ""
		if ok {
			got = u.String()
		}
		if got != want {
			t.Errorf("%q: %q, want %q", ref, got, want)
		}
	}
	s := newSelector([]*url.URL{cur}, Ordered, Auto, "x", nil, time.Second, steps)
	// A TLS connection is never referred to plain TCP, where the password
	// would go in clear.
	if _, ok, err := s.refer(cur, "tcp://evil.test:1883"); ok || !errors.Is(err, errInsecureReference) {
		t.Errorf("tls to tcp followed: %v, %v", ok, err)
	}
	for i := range maxReferrals + 1 {
		if _, ok, _ := s.refer(cur, "b.test"); ok != (i < maxReferrals) {
			t.Errorf("referral %d followed: %v", i+1, ok)
		}
	}
}
