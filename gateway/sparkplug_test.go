package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"edgegw/internal/tahu"
	"edgegw/internal/testbroker"
)

// sparkplugMQTT makes rbeConfig's gateway a Sparkplug edge node speaking
// the MQTT version it is given.
const sparkplugMQTT = `payload = "sparkplug"
protocol = %q
[sparkplug]
group_id = "plant"`

// TestSparkplugAcrossOutageAndKill: the reconstruction test of the JSON
// payload, spoken in Sparkplug B and judged by a host built on Eclipse
// Tahu's codec: through a broker outage during which the gateway is killed
// with SIGKILL and started again, every session keeps the rules (NBIRTH
// first, seq without gaps, aliases from the DBIRTH, NDEATH with the
// NBIRTH's bdSeq), the host's state holds every point within its deadband
// at every committed poll, and the readings of the outage come late,
// flagged historical, with the time they were read. Over MQTT 5 and 3.1.1
// (the specification's 3.1.1 rules: clean session, NDEATH as the will).
func TestSparkplugAcrossOutageAndKill(t *testing.T) {
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run(protocol, func(t *testing.T) { sparkplugAcrossOutageAndKill(t, protocol) })
	}
}

func sparkplugAcrossOutageAndKill(t *testing.T, protocol string) {
	judge := tahu.Start(t)
	br := testbroker.Start(t)
	link := testbroker.NewFaultyLink(t, br.Addr())
	dir := t.TempDir()
	cfgPath, truthPath := filepath.Join(dir, "sensors.toml"), filepath.Join(dir, "truth.jsonl")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(rbeConfig, filepath.Join(dir, "data"), link.URL(), fmt.Sprintf(sparkplugMQTT, protocol), pollsPoint)), 0o644); err != nil {
		t.Fatal(err)
	}
	wire := testbroker.Subscribe(t, br.Addr(), "spBv1.0/#")

	run := outageAndKill(t, link, cfgPath, truthPath)
	second, outage, killed := run.second, run.down, run.killed
	polls := readTruth(t, truthPath)[:400]
	last := polls[len(polls)-1].TS
	host := tahu.NewHost(judge, "plant", "rbe")
	applied := 0
	follow := func(msgs []testbroker.Message) bool {
		for _, m := range msgs[applied:] {
			if err := host.Apply(m.Topic, m.Payload); err != nil {
				t.Fatalf("message %d: %v", applied, err)
			}
			applied++
		}
		n := len(host.Data)
		return n > 0 && readingTS(t, host.Data[n-1]) >= last
	}
	wire.WaitFor(t, 30*time.Second, "the DDATA of the last poll", follow)
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("the restarted gateway did not stop cleanly: %v", err)
	}
	wire.WaitFor(t, 10*time.Second, "the NDEATH of the clean stop", func(msgs []testbroker.Message) bool {
		follow(msgs)
		return !host.Online()
	})

	// Two sessions: before the outage, and the restarted process's; the
	// first ended by its will, with its bdSeq; the second by its goodbye.
	if host.Births != 2 || host.Deaths != 2 || host.BdSeqs[0] == host.BdSeqs[1] {
		t.Errorf("%d NBIRTHs (bdSeq %v) and %d NDEATHs ending them: want 2 sessions of different bdSeqs, each ended", host.Births, host.BdSeqs, host.Deaths)
	}
	historical := 0
	for _, d := range host.Data {
		ts := readingTS(t, d)
		late := d.Session == 2 && ts > outageTS(outage) && ts < outageTS(killed)
		if d.Metrics[0].IsHistorical {
			historical++
		} else if late {
			t.Fatalf("DDATA of a reading taken during the outage (%s) is not historical", ts)
		}
	}
	if historical < 150 {
		t.Errorf("%d historical DDATA: the outage's 200 polls should be", historical)
	}
	checkRows(t, polls, hostRows(t, host), killed)
}

// outageTS is t as a reading's ts.
func outageTS(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// readingTS is the time a DDATA's reading was taken (its metrics'), as a
// reading's ts.
func readingTS(t *testing.T, d tahu.Data) string {
	t.Helper()
	if len(d.Metrics) == 0 {
		t.Fatalf("DDATA of %s without metrics", d.Device)
	}
	ms, err := strconv.ParseInt(d.Metrics[0].Timestamp, 10, 64)
	if err != nil {
		t.Fatalf("metric timestamp %q: %v", d.Metrics[0].Timestamp, err)
	}
	for _, m := range d.Metrics {
		if m.Timestamp != d.Metrics[0].Timestamp {
			t.Fatalf("DDATA with metrics of two times: %+v", d.Metrics)
		}
	}
	return outageTS(time.UnixMilli(ms))
}

// hostRows is the host's state of the meter after each reading, in the
// order they were taken (a reading sent twice is applied once), as
// checkRows compares it with the truth.
func hostRows(t *testing.T, h *tahu.Host) []consumerRow {
	byTS := map[string]map[string]any{}
	for _, d := range h.Data {
		ts := readingTS(t, d)
		if byTS[ts] == nil {
			byTS[ts] = map[string]any{}
		}
		for _, m := range d.Metrics {
			byTS[ts][m.Name] = m.Value
		}
	}
	var order []string
	for ts := range byTS {
		order = append(order, ts)
	}
	sort.Strings(order)
	state := map[string]any{}
	var rows []consumerRow
	for _, ts := range order {
		for p, v := range byTS[ts] {
			state[p] = v
		}
		values := map[string]any{}
		for p, v := range state {
			values[p] = v
		}
		rows = append(rows, consumerRow{TS: ts, Full: len(byTS[ts]) == 4, Values: values})
	}
	return rows
}
