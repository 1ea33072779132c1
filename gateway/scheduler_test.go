package gateway

import (
	"edgegw/drivers"
	"edgegw/gateway/config"
	"edgegw/gateway/uplink"
	"encoding/json"

	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDriver answers every device with one value, or fails to open.
type fakeDriver struct {
	mu     sync.Mutex
	reads  map[string]int
	closed bool
}

func (d *fakeDriver) Read(ctx context.Context, device string, r *drivers.Reading) {
	d.mu.Lock()
	d.reads[device]++
	n := d.reads[device]
	d.mu.Unlock()
	r.Add(drivers.Value{Point: "n", Kind: drivers.KindInt, I: int64(n)})
}

func (d *fakeDriver) Close() error { d.mu.Lock(); d.closed = true; d.mu.Unlock(); return nil }

// memAppender records entries and signals each one.
type memAppender struct {
	mu      sync.Mutex
	entries []string
	more    chan struct{}
}

func newMemAppender() *memAppender { return &memAppender{more: make(chan struct{}, 1000)} }

func (a *memAppender) Append(e []byte) error {
	a.mu.Lock()
	a.entries = append(a.entries, string(e))
	a.mu.Unlock()
	a.more <- struct{}{}
	return nil
}

func (a *memAppender) AppendNow(e []byte) error { return a.Append(e) }

func (a *memAppender) waitN(t *testing.T, n int) []string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		a.mu.Lock()
		got := append([]string(nil), a.entries...)
		a.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-a.more:
		case <-timeout:
			t.Fatalf("%d readings after 10s, want %d", len(got), n)
		}
	}
}

func devices(intervals ...time.Duration) []config.Device {
	var ds []config.Device
	for i, iv := range intervals {
		ds = append(ds, config.Device{Name: string(rune('a' + i)), Interval: config.Duration(iv), Points: []config.Point{{Name: "n"}}})
	}
	return ds
}

func runPoller(t *testing.T, p *poller) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func TestPollerKeepsEachDeviceInterval(t *testing.T) {
	drv := &fakeDriver{reads: map[string]int{}}
	out := newMemAppender()
	p := &poller{bus: config.Bus{Name: "b"}, devices: devices(20*time.Millisecond, 200*time.Millisecond), out: out,
		log: slog.New(slog.DiscardHandler), now: time.Now, stats: map[string]*DeviceStats{"a": {}, "b": {}},
		open: func(config.Bus, []config.Device, *slog.Logger) (drivers.Driver, error) { return drv, nil }}
	stop := runPoller(t, p)
	out.waitN(t, 20)
	stop()
	drv.mu.Lock()
	a, b := drv.reads["a"], drv.reads["b"]
	drv.mu.Unlock()
	// Device a polls ten times as often as b; b polled at start and maybe once or twice more.
	if a < 15 || b < 1 || b > 3 {
		t.Errorf("polls: a=%d b=%d", a, b)
	}
	if !drv.closed {
		t.Error("driver not closed on stop")
	}
	if got := p.stats["a"].Readings.Load(); got != uint64(a) {
		t.Errorf("stats readings %d, polls %d", got, a)
	}
}

func TestPollerBusThatCannotOpen(t *testing.T) {
	out := newMemAppender()
	opens := 0
	var mu sync.Mutex
	p := &poller{bus: config.Bus{Name: "rs485"}, devices: devices(10 * time.Millisecond), out: out,
		log: slog.New(slog.DiscardHandler), now: time.Now, stats: map[string]*DeviceStats{"a": {}},
		open: func(config.Bus, []config.Device, *slog.Logger) (drivers.Driver, error) {
			mu.Lock()
			defer mu.Unlock()
			opens++
			if opens < 3 {
				return nil, errors.New("no such port /dev/ttyUSB9")
			}
			return &fakeDriver{reads: map[string]int{}}, nil
		}}
	stop := runPoller(t, p)
	got := out.waitN(t, 4)
	stop()
	// Readings keep coming while the bus is down, every point under errors; then it recovers.
	if !strings.Contains(got[0], `"errors":{"n":"bus rs485 is not open: no such port /dev/ttyUSB9"}`) {
		t.Errorf("first reading: %s", got[0])
	}
	if !strings.Contains(got[2], `"values":{"n":1}`) {
		t.Errorf("after the bus opened: %s", got[2])
	}
	if p.stats["a"].ReadErrors.Load() != 2 {
		t.Errorf("read errors %d, want 2", p.stats["a"].ReadErrors.Load())
	}
}

// slowDriver takes longer than the interval: polls must not pile up.
type slowDriver struct{ fakeDriver }

func (d *slowDriver) Read(ctx context.Context, device string, r *drivers.Reading) {
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Millisecond): // a slow bus
	}
	d.fakeDriver.Read(ctx, device, r)
}

func TestPollerOverrunDoesNotBurst(t *testing.T) {
	drv := &slowDriver{fakeDriver{reads: map[string]int{}}}
	out := newMemAppender()
	p := &poller{bus: config.Bus{Name: "b"}, devices: devices(10 * time.Millisecond), out: out,
		log: slog.New(slog.DiscardHandler), now: time.Now, stats: map[string]*DeviceStats{"a": {}},
		open: func(config.Bus, []config.Device, *slog.Logger) (drivers.Driver, error) { return drv, nil }}
	start := time.Now()
	stop := runPoller(t, p)
	out.waitN(t, 5)
	stop()
	if took := time.Since(start); took < 5*30*time.Millisecond {
		t.Errorf("5 polls of a 30ms device took %s", took)
	}
}

// writeDriver records writes; each says it started, then waits for release.
type writeDriver struct {
	fakeDriver
	started chan struct{}
	release chan struct{}
	written chan string
}

func (d *writeDriver) Write(ctx context.Context, device, point string, value json.RawMessage) (drivers.Value, error) {
	d.started <- struct{}{}
	<-d.release
	d.written <- point
	return drivers.Value{Point: point, Kind: drivers.KindInt, I: 7}, nil
}

// TestPollerRefusesExpiredCommands: a command that waited for its bus past
// its expiry (command_ttl, Message Expiry) is refused, never written late.
func TestPollerRefusesExpiredCommands(t *testing.T) {
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	drv := &writeDriver{fakeDriver: fakeDriver{reads: map[string]int{}}, started: make(chan struct{}, 2), release: make(chan struct{}), written: make(chan string, 2)}
	p := &poller{bus: config.Bus{Name: "rs485"}, devices: devices(time.Hour), out: newMemAppender(),
		log: slog.New(slog.DiscardHandler), now: now, stats: map[string]*DeviceStats{"a": {}}, jobs: make(chan job, 16),
		open: func(config.Bus, []config.Device, *slog.Logger) (drivers.Driver, error) { return drv, nil }}
	stop := runPoller(t, p)
	defer stop()
	results := make(chan uplink.Result, 2)
	submit := func(point string, expires time.Time) {
		p.submit(command{Command: uplink.Command{Device: "a", Point: point, Value: json.RawMessage("7"), Expires: expires},
			done: func(r uplink.Result) { results <- r }})
	}
	submit("slow", now().Add(10*time.Second))
	submit("late", now().Add(10*time.Second)) // queued behind the slow one
	<-drv.started
	mu.Lock()
	clock = clock.Add(11 * time.Second) // the slow write took 11 s
	mu.Unlock()
	drv.release <- struct{}{}
	if r := <-results; r.Err != nil || string(r.Value) != "7" {
		t.Errorf("the first write: %+v", r)
	}
	if r := <-results; r.Err == nil || !strings.Contains(r.Err.Error(), "expired") {
		t.Errorf("the command that waited 11 s of its 10: %+v", r)
	}
	close(drv.release)
	if got := <-drv.written; got != "slow" || len(drv.written) != 0 {
		t.Errorf("written: %s, then %d more", got, len(drv.written))
	}
}

// turnLog records the order in which a bus carried polls and jobs.
type turnLog struct {
	mu    sync.Mutex
	turns []string
	jobs  chan struct{}
}

func (l *turnLog) add(s string) { l.mu.Lock(); l.turns = append(l.turns, s); l.mu.Unlock() }

// turnDriver notes each poll in its log.
type turnDriver struct {
	fakeDriver
	log *turnLog
}

func (d *turnDriver) Read(ctx context.Context, device string, r *drivers.Reading) {
	d.log.add("poll")
	d.fakeDriver.Read(ctx, device, r)
}

// turnJob notes its run in the log.
type turnJob struct{ log *turnLog }

func (j turnJob) run(context.Context, *poller, *busConn) { j.log.add("job"); j.log.jobs <- struct{}{} }
func (j turnJob) refuse(error)                           {}

// TestPollerTakesTurns: with polls always overdue (a device polled every
// nanosecond) and jobs always waiting, the bus alternates: neither side
// starves the other.
func TestPollerTakesTurns(t *testing.T) {
	log := &turnLog{jobs: make(chan struct{}, 8)}
	drv := &turnDriver{fakeDriver{reads: map[string]int{}}, log}
	p := &poller{bus: config.Bus{Name: "b"}, devices: devices(time.Nanosecond), out: discard{},
		log: slog.New(slog.DiscardHandler), now: time.Now, stats: map[string]*DeviceStats{"a": {}}, jobs: make(chan job, 8),
		open: func(config.Bus, []config.Device, *slog.Logger) (drivers.Driver, error) { return drv, nil }}
	for range 8 {
		if !p.offer(turnJob{log}) {
			t.Fatal("the queue refused a job")
		}
	}
	stop := runPoller(t, p)
	timeout := time.After(10 * time.Second)
	for range 8 {
		select {
		case <-log.jobs:
		case <-timeout:
			stop()
			t.Fatalf("the jobs did not run while polls were overdue: %d turns", len(log.turns))
		}
	}
	stop()
	log.mu.Lock()
	defer log.mu.Unlock()
	for i, turn := range log.turns[:16] {
		if want := []string{"poll", "job"}[i%2]; turn != want {
			t.Fatalf("turns %v: want poll and job alternating", log.turns[:16])
		}
	}
}

// discard is an Appender that keeps nothing.
type discard struct{}

func (discard) Append([]byte) error    { return nil }
func (discard) AppendNow([]byte) error { return nil }
