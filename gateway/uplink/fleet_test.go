package uplink

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"edgegw/buffer"
	"edgegw/internal/testbroker"
)

// The fleet simulator: N uplinks in this process, each wired as the
// gateway wires it, each with a store of the buffer's semantics, against
// three real Mosquitto brokers (or an haproxy front over them). It is a
// measurement, not a test: it runs only when -fleet.n is given
// (scripts/bench/fleet.sh) and reports with t.Logf.
var (
	fleetN        = flag.Int("fleet.n", 0, "fleet simulator: number of uplinks (0: skip)")
	fleetOrder    = flag.String("fleet.order", "spread", "fleet simulator: broker_order, spread or ordered")
	fleetHAProxy  = flag.Bool("fleet.haproxy", false, "fleet simulator: dial one haproxy front (roundrobin) over the brokers")
	fleetFailback = flag.Duration("fleet.failback", 10*time.Second, "fleet simulator: failback_after in the ordered mode")
	fleetEvery    = flag.Duration("fleet.every", 2*time.Second, "fleet simulator: each uplink takes a reading this often")
	fleetProtocol = flag.String("fleet.protocol", "auto", "fleet simulator: the MQTT version, auto, 5 or 3.1.1")
	fleetWindow   = flag.Duration("fleet.window", 0, "fleet simulator: first-reconnect window; 0 the default, -1ns none (the behaviour before the cluster issue)")
)

// memStore is a Store in memory with the buffer's semantics: a record
// stays until acknowledged; Next returns them oldest first.
type memStore struct {
	mu        sync.Mutex
	recs      []buffer.Record
	seq       uint64
	acked     int
	committed chan struct{}
}

func newMemStore() *memStore { return &memStore{committed: make(chan struct{})} }

func (s *memStore) append() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.recs = append(s.recs, buffer.Record{Seq: s.seq, Data: []byte("21.5")})
	close(s.committed)
	s.committed = make(chan struct{})
}

func (s *memStore) Next(after uint64, max int, dst []buffer.Record) ([]buffer.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.recs), func(i int) bool { return s.recs[i].Seq > after })
	for ; i < len(s.recs) && len(dst) < max; i++ {
		dst = append(dst, s.recs[i])
	}
	return dst, nil
}

func (s *memStore) Ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.recs), func(i int) bool { return s.recs[i].Seq >= seq })
	if i < len(s.recs) && s.recs[i].Seq == seq {
		s.recs = slices.Delete(s.recs, i, i+1)
		s.acked++
	}
}

func (s *memStore) Committed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed
}

func (s *memStore) LastSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

func (s *memStore) counts() (appended uint64, acked, pending int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq, s.acked, len(s.recs)
}

type member struct {
	id    string
	up    *Uplink
	store *memStore
	done  chan error
}

func TestFleet(t *testing.T) {
	n := *fleetN
	if n == 0 {
		t.Skip("a measurement: scripts/bench/fleet.sh, or go test -run TestFleet -v -fleet.n 1000 ./gateway/uplink")
	}
	raiseOpenFiles(t)
	order := Spread
	if *fleetOrder == "ordered" {
		order = Ordered
	}
	sys := testbroker.WithConfig("sys_interval 1")
	brokers := []*testbroker.Broker{testbroker.Start(t, sys), testbroker.Start(t, sys), testbroker.Start(t, sys)}
	data := make([]*testbroker.Subscriber, 3)
	for i, b := range brokers {
		data[i] = testbroker.Subscribe(t, b.Addr(), "fleet/#")
	}
	urls := []string{brokers[0].URL(), brokers[1].URL(), brokers[2].URL()}
	if *fleetHAProxy {
		urls = []string{testbroker.StartHAProxyWith(t, "roundrobin", n+100, brokers...).URL()}
	}
	t.Logf("fleet: N=%d order=%s front=%v failback_after=%s window=%s reading every %s", n, *fleetOrder, *fleetHAProxy, *fleetFailback, Reconnect{Window: *fleetWindow}.withDefaults().Window, *fleetEvery)

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithCancel(context.Background())
	members := startFleet(ctx, n, urls, order)
	defer stopFleet(t, cancel, members)
	waitFor(t, 90*time.Second, "every uplink connected", func() bool { return connected(members) == n })
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("memory per connected uplink: heap %.1f KiB, stacks %.1f KiB",
		float64(after.HeapAlloc-before.HeapAlloc)/float64(n)/1024, float64(after.StackInuse-before.StackInuse)/float64(n)/1024)

	readings := make(chan struct{})
	go takeReadings(members, *fleetEvery, readings)
	dist := distribution(t, brokers, n)
	t.Logf("steady distribution (clients per broker): %v, N/3 = %d", dist, n/3)

	// Lose the busiest broker.
	busiest := 0
	for i := range dist {
		if dist[i] > dist[busiest] {
			busiest = i
		}
	}
	connects := make([]uint64, n)
	for i, m := range members {
		connects[i] = m.up.Connects()
	}
	lost := time.Now()
	brokers[busiest].Kill()
	var at99 time.Duration
	waitFor(t, 90*time.Second, "every uplink reconnected", func() bool {
		moved := 0
		for i, m := range members {
			if m.up.Connects() > connects[i] && m.up.Broker() != "" {
				moved++
			}
		}
		// Only the lost broker's clients reconnect.
		if at99 == 0 && moved*100 >= dist[busiest]*99 {
			at99 = time.Since(lost)
		}
		return moved >= dist[busiest] && connected(members) == n
	})
	all := time.Since(lost)
	t.Logf("broker %d (%d clients) killed: 99%% reconnected after %s, all after %s", busiest, dist[busiest], at99.Round(10*time.Millisecond), all.Round(10*time.Millisecond))
	for i, b := range brokers {
		if i == busiest {
			continue
		}
		peak, span := connectRate(b.Log(), lost)
		t.Logf("  surviving broker %d: peak %d connects/s, connects spread over %ds (N/5 = %d)", i, peak, span, n/5)
	}
	surv := distribution(t, brokers, n)
	t.Logf("distribution after the loss: %v", surv)

	// The lost broker returns.
	brokers[busiest].Restart()
	data = append(data, testbroker.Subscribe(t, brokers[busiest].Addr(), "fleet/#"))
	back := time.Now()
	if order == Ordered && !*fleetHAProxy && busiest == 0 {
		waitFor(t, *fleetFailback+2*time.Minute, "every uplink back on the primary", func() bool {
			for _, m := range members {
				if m.up.Broker() != urls[0] {
					return false
				}
			}
			return true
		})
		t.Logf("primary back: every uplink on it %s later (failback_after %s + window %s)", time.Since(back).Round(10*time.Millisecond), *fleetFailback, Reconnect{Window: *fleetWindow}.withDefaults().Window)
	} else {
		wait := time.NewTimer(*fleetFailback + 5*time.Second)
		<-wait.C
		t.Logf("broker %d restarted: %v clients per broker %s later (spread: nobody moves back until the next loss)", busiest, distribution(t, brokers, n), time.Since(back).Round(time.Second))
	}

	// Stop taking readings; everything must be acknowledged and received.
	close(readings)
	waitFor(t, 2*time.Minute, "every reading acknowledged", func() bool {
		for _, m := range members {
			if _, _, pending := m.store.counts(); pending > 0 {
				return false
			}
		}
		return true
	})
	reportLosses(t, members, data)
}

func raiseOpenFiles(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if need := uint64(*fleetN + 200); lim.Cur < need {
		t.Fatalf("open files limited to %d; %d uplinks need about %d", lim.Cur, *fleetN, need)
	}
}

// startFleet starts n uplinks, 500 a second: a fleet does not boot in one
// millisecond, and the start is not what is measured.
func startFleet(ctx context.Context, n int, urls []string, order Order) []*member {
	members := make([]*member, n)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := range n {
		id := fmt.Sprintf("edgegw-fleet-%05d", i)
		m := &member{id: id, store: newMemStore(), done: make(chan error, 1)}
		proto, err := ParseProtocol(*fleetProtocol)
		if err != nil {
			panic(err)
		}
		m.up = New(Config{
			Brokers: urls, Order: order, Protocol: proto, FailbackAfter: *fleetFailback, Reconnect: Reconnect{Window: *fleetWindow},
			ClientID: id, QoS: 1, KeepAlive: 30 * time.Second, ConnectTimeout: 5 * time.Second, MaxInflight: 16,
			StatusTopic: "fleet-status/" + id, Version: "fleet",
			Compose: func(dst []byte, rec buffer.Record) (string, []byte, error) {
				return "fleet/" + id, fmt.Appendf(dst, `{"seq":%d}`, rec.Seq), nil
			},
			Logger: slog.New(slog.DiscardHandler),
		}, m.store)
		go func() { m.done <- m.up.Run(ctx) }()
		members[i] = m
		if i%50 == 49 {
			<-tick.C
		}
	}
	return members
}

func stopFleet(t *testing.T, cancel context.CancelFunc, members []*member) {
	cancel()
	deadline := time.After(time.Minute)
	for _, m := range members {
		select {
		case <-m.done:
		case <-deadline:
			t.Error("uplinks still running a minute after cancel")
			return
		}
	}
}

func takeReadings(members []*member, every time.Duration, stop <-chan struct{}) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			for _, m := range members {
				m.store.append()
			}
		}
	}
}

func connected(members []*member) int {
	c := 0
	for _, m := range members {
		if m.up.Broker() != "" {
			c++
		}
	}
	return c
}

// distribution asks each live broker how many clients it has ($SYS,
// published every second), less the simulator's own subscribers, once
// the counts have settled.
func distribution(t *testing.T, brokers []*testbroker.Broker, n int) []int {
	t.Helper()
	out := make([]int, len(brokers))
	settled := 0
	waitFor(t, 30*time.Second, "settled client counts", func() bool {
		total := 0
		for i, b := range brokers {
			out[i] = clientsOf(t, b)
			total += out[i]
		}
		if total >= n {
			settled++
		}
		return settled >= 2
	})
	return out
}

func clientsOf(t *testing.T, b *testbroker.Broker) int {
	if !b.Running() {
		return 0
	}
	s := testbroker.Subscribe(t, b.Addr(), "$SYS/broker/clients/connected")
	defer s.Close()
	msgs := s.WaitFor(t, 5*time.Second, "$SYS client count", func(m []testbroker.Message) bool { return len(m) > 0 })
	c, _ := strconv.Atoi(string(msgs[len(msgs)-1].Payload))
	return c - 2 // the data subscriber and this one
}

// connectRate reads a Mosquitto log ("1700000000: New client connected
// from … as edgegw-fleet-00042 …") and returns the most sessions the fleet
// opened in one second after since, and over how many seconds they came.
func connectRate(log string, since time.Time) (peak, span int) {
	per := map[int64]int{}
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		ts, rest, ok := strings.Cut(sc.Text(), ": ")
		if !ok || !strings.HasPrefix(rest, "New client connected from") || !strings.Contains(rest, " as edgegw-fleet-") {
			continue // not one of the fleet's sessions (the simulator's subscribers)
		}
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || sec < since.Unix() {
			continue
		}
		per[sec]++
	}
	first, last := int64(0), int64(0)
	for sec, c := range per {
		peak = max(peak, c)
		if first == 0 || sec < first {
			first = sec
		}
		last = max(last, sec)
	}
	if len(per) > 0 {
		span = int(last-first) + 1
	}
	return peak, span
}

// reportLosses checks that every reading every uplink took reached a
// subscriber of some broker.
func reportLosses(t *testing.T, members []*member, subs []*testbroker.Subscriber) {
	seen := map[string]map[uint64]bool{}
	msgs := 0
	for _, s := range subs {
		for _, m := range s.Messages() {
			var v struct{ Seq uint64 }
			if json.Unmarshal(m.Payload, &v) != nil {
				continue
			}
			id := strings.TrimPrefix(m.Topic, "fleet/")
			if seen[id] == nil {
				seen[id] = map[uint64]bool{}
			}
			seen[id][v.Seq] = true
			msgs++
		}
	}
	var appended, acked, missing int
	for _, m := range members {
		a, k, _ := m.store.counts()
		appended += int(a)
		acked += k
		for s := uint64(1); s <= a; s++ {
			if !seen[m.id][s] {
				missing++
			}
		}
	}
	t.Logf("readings: %d taken, %d acknowledged, %d messages received (duplicates included), %d never received", appended, acked, msgs, missing)
	if missing > 0 || acked != appended {
		t.Errorf("fleet lost readings: %d missing, %d unacknowledged", missing, appended-acked)
	}
}
