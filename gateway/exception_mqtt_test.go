package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"edgegw/drivers"
	"edgegw/gateway/config"
	"edgegw/internal/testbroker"
)

// rbeConfig is a report-by-exception meter; its arguments: data_dir, broker,
// more [mqtt] keys, more points.
const rbeConfig = `
[gateway]
id = "rbe"
data_dir = %q
[mqtt]
brokers = [%q]
keepalive = "1s"
connect_timeout = "1s"
%s
[status]
listen = ""
[buffer]
commit_interval = "20ms"
[[bus]]
name = "b"
protocol = "modbus-tcp"
address = "127.0.0.1:1"
[[device]]
name = "meter"
bus = "b"
interval = "20ms"
report = "change"
full_every = "1h"
  [[device.point]]
  name = "voltage"
  type = "float64"
  deadband = 0.5
  [[device.point]]
  name = "energy"
  type = "float64"
  deadband_percent = 0.1
  [[device.point]]
  name = "relay"
  table = "coil"
%s
`

// driftDriver is a meter whose values drift like a real one's; it keeps
// the truth of every poll, by the reading's time stamp as published.
type driftDriver struct {
	mu    sync.Mutex
	n     int
	truth map[string]map[string]any // ts → point → value
	order []string

	// counting adds a point "polls", the poll's number: every poll then
	// changes something, so a poll whose reading was lost can be told.
	counting bool
	// log, when set, gets each poll's truth as a JSON line (truthLine),
	// for a parent test of a gateway in another process.
	log io.Writer
}

// truthLine is a poll as the meter saw it.
type truthLine struct {
	TS     string         `json:"ts"`
	PID    int            `json:"pid"`
	Values map[string]any `json:"values"`
}

func (d *driftDriver) Read(_ context.Context, _ string, r *drivers.Reading) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
	x := float64(d.n)
	v := map[string]any{"voltage": 230 + 3*math.Sin(x/15) + 0.2*math.Sin(x*1.7), "energy": 1000 + x*0.05, "relay": d.n/40%2 == 1}
	r.AddFloat("voltage", v["voltage"].(float64))
	r.AddFloat("energy", v["energy"].(float64))
	r.Add(drivers.Value{Point: "relay", Kind: drivers.KindBool, B: v["relay"].(bool)})
	if d.counting {
		v["polls"] = float64(d.n)
		r.Add(drivers.Value{Point: "polls", Kind: drivers.KindUint, U: uint64(d.n)})
	}
	ts := r.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	d.truth[ts] = v
	d.order = append(d.order, ts)
	if d.log != nil {
		line, _ := json.Marshal(truthLine{TS: ts, PID: os.Getpid(), Values: v})
		d.log.Write(append(line, '\n')) // one write: whole lines survive a kill -9
	}
}

func (d *driftDriver) Close() error { return nil }

func (d *driftDriver) polls() int { d.mu.Lock(); defer d.mu.Unlock(); return d.n }

// TestReportByExceptionReconstructs: a consumer that applies the messages
// of a report = "change" device, through a broker outage, knows every point
// within its deadband at every poll; and the gateway sent a full reading
// after reconnecting. Over MQTT 5 and 3.1.1.
func TestReportByExceptionReconstructs(t *testing.T) {
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run(protocol, func(t *testing.T) { reportByExceptionReconstructs(t, protocol) })
	}
}

func reportByExceptionReconstructs(t *testing.T, protocol string) {
	br := testbroker.Start(t)
	link := testbroker.NewFaultyLink(t, br.Addr())
	path := filepath.Join(t.TempDir(), "sensors.toml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(rbeConfig, t.TempDir(), link.URL(), "protocol = \""+protocol+"\"", "")), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	sub := testbroker.Subscribe(t, br.Addr(), "edgegw/rbe/meter")
	drv := &driftDriver{truth: map[string]map[string]any{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Options{Open: func(config.Bus, []config.Device, *slog.Logger) (drivers.Driver, error) { return drv, nil },
			Logger: slog.New(slog.DiscardHandler), Version: "test"})
	}()
	waitPolls := func(n int) {
		deadline := time.Now().Add(20 * time.Second)
		for drv.polls() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d polls, want %d", drv.polls(), n)
			}
			time.Sleep(5 * time.Millisecond) // polling the driver's count
		}
	}
	waitPolls(100)
	link.Down() // the broker is gone for the gateway, the consumer stays
	waitPolls(200)
	link.Up(t)
	waitPolls(300)
	// The reconnect may come after poll 300 on a loaded machine (the
	// backoff grew while the link was down): the polls checked must
	// reach past the full reading it brings.
	var msgs []testbroker.Message
	deadline := time.Now().Add(20 * time.Second)
	for fullsIn(t, msgs) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no full reading after the reconnect")
		}
		time.Sleep(20 * time.Millisecond) // polling the subscriber
		msgs = sub.Messages()
	}
	last := drv.polls()
	// Everything taken up to the last poll counted has arrived: the
	// readings are in seq order, so wait for the newest.
	for {
		msgs = sub.Messages()
		if n := len(msgs); n > 0 && seqOf(t, msgs[n-1]) > 0 && arrived(t, msgs, drv, last) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the readings up to the last poll did not arrive")
		}
		time.Sleep(20 * time.Millisecond) // polling the subscriber
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkReconstruction(t, msgs, drv, last)
}

type rbeMessage struct {
	Seq    uint64            `json:"seq"`
	TS     string            `json:"ts"`
	Values map[string]any    `json:"values"`
	Errors map[string]string `json:"errors"`
	Full   *bool             `json:"full"`
}

func decodeRBE(t *testing.T, m testbroker.Message) rbeMessage {
	var r rbeMessage
	if err := json.Unmarshal(m.Payload, &r); err != nil || r.Full == nil {
		t.Fatalf("bad message %s: %v", m.Payload, err)
	}
	return r
}

func seqOf(t *testing.T, m testbroker.Message) uint64 { return decodeRBE(t, m).Seq }

// fullsIn counts the distinct full readings among msgs.
func fullsIn(t *testing.T, msgs []testbroker.Message) int {
	seqs := map[uint64]bool{}
	for _, m := range msgs {
		if r := decodeRBE(t, m); *r.Full {
			seqs[r.Seq] = true
		}
	}
	return len(seqs)
}

// arrived reports whether the messages reach the poll with index last.
func arrived(t *testing.T, msgs []testbroker.Message, drv *driftDriver, last int) bool {
	drv.mu.Lock()
	ts := drv.order[last-1]
	drv.mu.Unlock()
	for _, m := range msgs {
		if decodeRBE(t, m).TS >= ts {
			return true
		}
	}
	return false
}

// checkReconstruction applies the messages, deduplicated by seq and in seq
// order, and compares the consumer's state with the truth at every poll.
func checkReconstruction(t *testing.T, msgs []testbroker.Message, drv *driftDriver, last int) {
	bySeq := map[uint64]rbeMessage{}
	var maxSeq uint64
	for _, m := range msgs {
		r := decodeRBE(t, m)
		bySeq[r.Seq] = r
		maxSeq = max(maxSeq, r.Seq)
	}
	state := map[string]any{}
	fulls := 0
	next := uint64(1)
	drv.mu.Lock()
	defer drv.mu.Unlock()
	for _, ts := range drv.order[:last] {
		for ; next <= maxSeq && bySeq[next].TS <= ts; next++ {
			r, ok := bySeq[next]
			if !ok {
				t.Fatalf("seq %d never arrived", next)
			}
			if *r.Full {
				fulls++
				state = map[string]any{}
			}
			for p, v := range r.Values {
				state[p] = v
			}
		}
		truth := drv.truth[ts]
		for p, dead := range map[string]float64{"voltage": 0.5, "energy": 0} {
			got, ok := state[p].(float64)
			want := truth[p].(float64)
			limit := dead
			if p == "energy" {
				limit = 0.001 * got // deadband_percent 0.1
			}
			if !ok || math.Abs(got-want) >= limit {
				t.Fatalf("at %s the consumer has %s = %v, the meter %v (deadband %g)", ts, p, state[p], want, limit)
			}
		}
		if state["relay"] != truth["relay"] {
			t.Fatalf("at %s the consumer has relay = %v, the meter %v", ts, state["relay"], truth["relay"])
		}
	}
	if fulls < 2 {
		t.Errorf("%d full readings: want the first and one after the reconnect", fulls)
	}
	t.Logf("%d polls reconstructed from %d messages (%d full)", last, len(bySeq), fulls)
}
