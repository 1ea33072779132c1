package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"edgegw/drivers"
	"edgegw/gateway/batch"
	"edgegw/gateway/config"
	"edgegw/internal/testbroker"
)

// batchedMQTT and pollsPoint make rbeConfig's meter count its polls and
// send in zstd batches that linger to fill.
const (
	batchedMQTT = `batch_max = 50
batch_linger = "100ms"
compression = "zstd"`
	pollsPoint = `  [[device.point]]
  name = "polls"
  type = "uint32"`
)

// helperGatewayEnv asks the test binary to be a gateway (config|truth log)
// that a test can kill -9.
const helperGatewayEnv = "EDGEGW_TEST_HELPER_GATEWAY"

// serveGatewayIfAsked runs the helper gateway and exits, when asked.
func serveGatewayIfAsked() {
	v := os.Getenv(helperGatewayEnv)
	if v == "" {
		return
	}
	cfgPath, truthPath, _ := strings.Cut(v, "|")
	if err := runHelperGateway(cfgPath, truthPath); err != nil {
		fmt.Fprintln(os.Stderr, "helper gateway:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runHelperGateway runs the gateway on a drifting meter that logs its
// truth, until SIGTERM.
func runHelperGateway(cfgPath, truthPath string) error {
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		return err
	}
	truth, err := os.OpenFile(truthPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer truth.Close()
	drv := &driftDriver{truth: map[string]map[string]any{}, counting: true, log: truth}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	return Run(ctx, cfg, Options{Open: func(config.Bus, []config.Device, *slog.Logger) (drivers.Driver, error) { return drv, nil },
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Version: "test"})
}

// TestReconstructionAcrossOutageAndKill: report by exception in zstd
// batches, through a broker outage during which the gateway is killed
// with SIGKILL and started again. The consumer of examples/consumer.py
// (Python's paho-mqtt and zstandard: independent of ours) holds every
// point within its deadband at every poll whose reading was committed;
// the only polls lost are the last ones of the killed process. Over MQTT 5
// and 3.1.1, where the consumer tells the compression by the first bytes.
func TestReconstructionAcrossOutageAndKill(t *testing.T) {
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run(protocol, func(t *testing.T) { reconstructionAcrossOutageAndKill(t, protocol) })
	}
}

func reconstructionAcrossOutageAndKill(t *testing.T, protocol string) {
	br := testbroker.Start(t)
	link := testbroker.NewFaultyLink(t, br.Addr())
	dir := t.TempDir()
	cfgPath, truthPath := filepath.Join(dir, "sensors.toml"), filepath.Join(dir, "truth.jsonl")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(rbeConfig, filepath.Join(dir, "data"), link.URL(), batchedMQTT+"\nprotocol = \""+protocol+"\"", pollsPoint)), 0o644); err != nil {
		t.Fatal(err)
	}
	wire := testbroker.Subscribe(t, br.Addr(), "edgegw/rbe/+")
	consumer := startConsumer(t, br.Addr())

	run := outageAndKill(t, link, cfgPath, truthPath)
	// Readings go in seq order: once the 400th poll's has arrived, all have.
	polls := readTruth(t, truthPath)[:400]
	rows := consumer.waitFor(t, 30*time.Second, polls[len(polls)-1].TS)
	second, killed := run.second, run.killed
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("the restarted gateway did not stop cleanly: %v", err)
	}
	checkRows(t, polls, rows, killed)

	zstd, batched := 0, 0
	for _, m := range wire.Messages() {
		if m.Topic != "edgegw/rbe/batch" {
			continue
		}
		var encoding string
		if m.Properties != nil {
			encoding = m.Properties.User.Get(batch.EncodingProperty)
		}
		if protocol == "3.1.1" {
			if encoding != "" {
				t.Fatalf("a batch sent over 3.1.1 carries the property content-encoding %q", encoding)
			}
			encoding = string(batch.Sniff(m.Payload))
		}
		if encoding == "zstd" {
			zstd++
		}
		doc, err := batch.Decompress(m.Payload, batch.Zstd, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := batch.Readings(doc)
		if err != nil {
			t.Fatal(err)
		}
		batched += len(rs)
	}
	if zstd == 0 || batched < 200 {
		t.Errorf("%d zstd batches holding %d readings: the backlog should have gone in them", zstd, batched)
	}
	t.Logf("%d polls, %d readings applied by the consumer, %d of them in %d zstd batches", len(polls), len(rows), batched, zstd)
}

// outageRun is what outageAndKill did, and when.
type outageRun struct {
	second       *exec.Cmd // the restarted gateway, still running
	down, killed time.Time
}

// outageAndKill runs a helper gateway on cfgPath through a broker outage:
// 100 polls, link down, 100 polls, SIGKILL, a second gateway on the same
// data_dir, 100 polls, link up, 100 polls.
func outageAndKill(t *testing.T, link *testbroker.FaultyLink, cfgPath, truthPath string) outageRun {
	t.Helper()
	first := startHelperGateway(t, cfgPath, truthPath)
	waitTruth(t, truthPath, 100)
	link.Down() // the broker is gone for the gateway, subscribers stay
	run := outageRun{down: time.Now()}
	waitTruth(t, truthPath, 200)
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait() // killed: its error says so
	run.killed = time.Now()
	run.second = startHelperGateway(t, cfgPath, truthPath)
	waitTruth(t, truthPath, 300)
	link.Up(t)
	waitTruth(t, truthPath, 400)
	return run
}

// consumerRow is a line of examples/consumer.py: a device's state after a reading.
type consumerRow struct {
	Seq    uint64         `json:"seq"`
	TS     string         `json:"ts"`
	Full   bool           `json:"full"`
	Values map[string]any `json:"values"`
}

// consumer is examples/consumer.py, running.
type consumer struct {
	mu   sync.Mutex
	rows []consumerRow
	bad  error
}

// startConsumer starts examples/consumer.py against the broker at addr and
// returns once it is subscribed.
func startConsumer(t *testing.T, addr string) *consumer {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command("/usr/bin/python3", "../examples/consumer.py", "--host", host, "--port", port, "--gateway", "rbe")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("python3 (scripts/deps.sh test installs it): %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := &consumer{}
	go c.read(stdout)
	subscribed := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if sc.Text() == "consumer: subscribed" {
				close(subscribed)
				continue
			}
			c.fail(fmt.Errorf("consumer: %s", sc.Text()))
		}
	}()
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatalf("the consumer did not subscribe: %v", c.err())
	}
	return c
}

func (c *consumer) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var row consumerRow
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			c.fail(fmt.Errorf("consumer printed %q: %v", sc.Text(), err))
			continue
		}
		c.mu.Lock()
		c.rows = append(c.rows, row)
		c.mu.Unlock()
	}
}

func (c *consumer) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bad == nil {
		c.bad = err
	}
}

func (c *consumer) err() error { c.mu.Lock(); defer c.mu.Unlock(); return c.bad }

// waitFor returns the consumer's rows once one has a ts of at least ts.
func (c *consumer) waitFor(t *testing.T, limit time.Duration, ts string) []consumerRow {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		c.mu.Lock()
		rows := slices.Clone(c.rows)
		bad := c.bad
		c.mu.Unlock()
		if bad != nil {
			t.Fatal(bad)
		}
		if n := len(rows); n > 0 && rows[n-1].TS >= ts {
			return rows
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consumer has %d rows, none at %s", len(rows), ts)
		}
		time.Sleep(20 * time.Millisecond) // polling the consumer's output
	}
}

// startHelperGateway starts this test binary as a gateway.
func startHelperGateway(t *testing.T, cfgPath, truthPath string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperGatewayEnv+"="+cfgPath+"|"+truthPath)
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd
}

// testWriter logs a child's warnings and errors with the test.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("gateway: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// readTruth reads the polls logged so far.
func readTruth(t *testing.T, path string) []truthLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var polls []truthLine
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var p truthLine
		if err := json.Unmarshal([]byte(line), &p); err != nil {
			t.Fatalf("truth log: %q: %v", line, err)
		}
		polls = append(polls, p)
	}
	return polls
}

// waitTruth waits until n polls have been logged.
func waitTruth(t *testing.T, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(readTruth(t, path)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d polls, want %d", len(readTruth(t, path)), n)
		}
		time.Sleep(20 * time.Millisecond) // polling the truth log
	}
}

// checkRows compares the consumer's state before each poll with the
// meter's truth. The killed process's polls after its last reading the
// consumer got are the ones a kill may lose (not yet committed); they must
// be the last moments before the kill.
func checkRows(t *testing.T, polls []truthLine, rows []consumerRow, killed time.Time) {
	t.Helper()
	if !sort.SliceIsSorted(rows, func(i, j int) bool { return rows[i].TS < rows[j].TS }) {
		t.Fatal("the consumer's rows are not in time order")
	}
	firstPID := polls[0].PID
	var lastOfFirst string // the newest reading of the killed process that arrived
	restart := ""
	for _, p := range polls {
		if p.PID != firstPID {
			restart = p.TS
			break
		}
	}
	for _, r := range rows {
		if r.TS < restart {
			lastOfFirst = r.TS
		}
	}
	lost, fulls := 0, 0
	for _, r := range rows {
		if r.Full {
			fulls++
		}
	}
	for _, p := range polls {
		if p.PID == firstPID && p.TS > lastOfFirst {
			ts, err := time.Parse(time.RFC3339Nano, p.TS)
			if err != nil {
				t.Fatal(err)
			}
			// commit_interval is 20ms; a slow fsync can stretch it.
			if killed.Sub(ts) > 2*time.Second {
				t.Fatalf("poll at %s lost, %s before the kill: only uncommitted readings may be", p.TS, killed.Sub(ts))
			}
			lost++
			continue
		}
		i := sort.Search(len(rows), func(i int) bool { return rows[i].TS > p.TS }) - 1
		if i < 0 {
			t.Fatalf("no reading at or before the poll at %s", p.TS)
		}
		state := rows[i].Values
		if state["polls"] != p.Values["polls"] {
			t.Fatalf("at %s the consumer has polls = %v, the meter %v: a reading is missing", p.TS, state["polls"], p.Values["polls"])
		}
		for point, deadband := range map[string]float64{"voltage": 0.5, "energy": 0} {
			got, ok := state[point].(float64)
			limit := deadband
			if point == "energy" {
				limit = 0.001 * got // deadband_percent 0.1 of the value reported
			}
			if want := p.Values[point].(float64); !ok || math.Abs(got-want) >= limit {
				t.Fatalf("at %s the consumer has %s = %v, the meter %v (deadband %g)", p.TS, point, state[point], want, limit)
			}
		}
		if state["relay"] != p.Values["relay"] {
			t.Fatalf("at %s the consumer has relay = %v, the meter %v", p.TS, state["relay"], p.Values["relay"])
		}
	}
	// The first poll of each process, and the first after the reconnect.
	if fulls < 3 {
		t.Errorf("%d full readings, want at least 3", fulls)
	}
	t.Logf("%d polls checked; %d lost with the kill (uncommitted); %d full readings", len(polls)-lost, lost, fulls)
}
