package sparkplug

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"edgegw/buffer"
	"edgegw/drivers"
	"edgegw/gateway/uplink"
	"edgegw/internal/tahu"
)

// TestEdgeDeviceDeathAndBirth: through Begin and Compose, as a host built
// on Tahu sees them: the births, DDATA of the backlog flagged historical
// and of live readings not, one DDEATH when every point fails, nothing
// while the device stays silent, a DBIRTH before the DDATA when it answers
// again, and a reading it cannot carry refused without a trace: the births
// after it still go.
func TestEdgeDeviceDeathAndBirth(t *testing.T) {
	judge := tahu.Start(t)
	host := tahu.NewHost(judge, "g", "n")
	e := NewEdge(Node{Group: "g", ID: "n"}, testPlan(), "", t.TempDir(), nil)
	apply := hostApplies(t, host)
	send := func(msgs []uplink.Message, err error) int { t.Helper(); return len(apply(msgs, err)) }
	will, err := e.Will()
	if err != nil || will.Topic != "spBv1.0/g/NDEATH/n" { // the uplink sends it at QoS 1, not retained
		t.Fatalf("will %+v, %v", will, err)
	}
	e.Connected("tcp://a:1883")
	send(e.Begin(2, nil))
	record := func(seq uint64, body string) buffer.Record {
		return buffer.Record{Seq: seq, Data: []byte("probe\n" + body[1:])}
	}
	good := func(seq uint64, v float64) buffer.Record {
		return record(seq, fmt.Sprintf(`{"ts":"2026-11-24T10:00:%02dZ","device":"probe","values":{"humidity":%g},"errors":{}}`, seq, v))
	}
	silent := func(seq uint64) buffer.Record {
		return record(seq, fmt.Sprintf(`{"ts":"2026-11-24T10:00:%02dZ","device":"probe","values":{},"errors":{"humidity":"timeout"}}`, seq))
	}
	for _, step := range []struct { // messages -1: refused
		rec                      buffer.Record
		messages, births, deaths int
	}{
		{good(1, 40), 1, 2, 0}, // backlog
		{good(3, 41), 1, 2, 0}, // live
		{silent(4), 1, 2, 1},   // DDEATH
		{silent(5), 0, 2, 1},   // still silent: nothing
		{good(6, 42), 2, 3, 1}, // DBIRTH, DDATA
		{record(7, `{"ts":"2026-11-24T10:00:07Z","device":"probe","values":{"humidity":"wet"},"errors":{}}`), -1, 3, 1},
	} {
		msgs, err := e.Compose(step.rec)
		if step.messages < 0 {
			if err == nil {
				t.Fatalf("seq %d: a value the metric's type cannot hold was composed", step.rec.Seq)
			}
			continue
		}
		if n := send(msgs, err); n != step.messages || host.DeviceBirths != step.births || host.DeviceDeaths != step.deaths {
			t.Fatalf("seq %d: %d messages, %d DBIRTHs, %d DDEATHs; want %d, %d, %d",
				step.rec.Seq, n, host.DeviceBirths, host.DeviceDeaths, step.messages, step.births, step.deaths)
		}
	}
	if len(host.Data) != 3 || !host.Data[0].Metrics[0].IsHistorical || host.Data[1].Metrics[0].IsHistorical {
		t.Fatalf("DDATA %+v: want the backlog's historical, the live ones not", host.Data)
	}
	if v := host.Data[2].Metrics[0].Value; v != float64(42) {
		t.Fatalf("DDATA after the rebirth: %v", v)
	}
	// The refused reading left nothing behind: the births still go.
	if n := send(e.Rebirth()); n != 3 || host.DeviceBirths != 5 {
		t.Fatalf("rebirth after a refused reading: %d messages, %d DBIRTHs", n, host.DeviceBirths)
	}
}

// TestEdgeCommands: DCMD metrics, encoded by Tahu, by name or alias, become
// writes with JSON values read as the metric's type says; NCMD Rebirth
// asks for births; a STATE older than the newest is ignored.
func TestEdgeCommands(t *testing.T) {
	judge := tahu.Start(t)
	e := NewEdge(Node{Group: "g", ID: "n"}, testPlan(), "scada", t.TempDir(), nil)
	encode := func(metrics ...map[string]any) []byte {
		b, err := judge.Encode(map[string]any{"timestamp": 1, "metrics": metrics})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	r := e.Received("spBv1.0/g/DCMD/n/meter", encode(
		map[string]any{"name": "temp", "type": "Int16", "value": -5},
		map[string]any{"alias": 4, "type": "UInt32", "value": uint32(4000000000)},
		map[string]any{"name": "relay", "type": "Boolean", "value": true},
		map[string]any{"name": "power", "type": "Double", "value": -12.5},
		map[string]any{"name": "nosuch", "type": "Boolean", "value": true},
	))
	want := []string{"temp=-5", "count=4000000000", "relay=true", "power=-12.5"}
	if len(r.Commands) != len(want) {
		t.Fatalf("commands %+v, want %v", r.Commands, want)
	}
	for i, c := range r.Commands {
		if got := c.Point + "=" + string(c.Value); c.Device != "meter" || got != want[i] {
			t.Errorf("command %d: %s %s, want meter %s", i, c.Device, got, want[i])
		}
	}
	if r := e.Received("spBv1.0/g/NCMD/n", encode(map[string]any{"name": "Node Control/Rebirth", "type": "Boolean", "value": true})); !r.Rebirth {
		t.Error("NCMD Rebirth: no rebirth asked")
	}
	if e.Ready() {
		t.Fatal("ready before the primary host's STATE")
	}
	if r := e.Received("spBv1.0/STATE/scada", []byte(`{"online":true,"timestamp":200}`)); !r.Online || !e.Ready() {
		t.Fatal("online STATE not followed")
	}
	if r := e.Received("spBv1.0/STATE/scada", []byte(`{"online":false,"timestamp":100}`)); r.Offline || !e.Ready() {
		t.Fatal("a stale offline STATE was followed")
	}
	if r := e.Received("spBv1.0/STATE/scada", []byte(`{"online":false,"timestamp":300}`)); !r.Offline || e.Ready() {
		t.Fatal("offline STATE not followed")
	}
}

// TestEdgeKeepsReadingsOfRemovedPoints: a reading that waited on flash
// while a point was removed from the config goes without that point (the
// rest of the device's backlog is not lost); a stale STATE on a broker is
// ignored on a reconnect to it.
func TestEdgeKeepsReadingsOfRemovedPoints(t *testing.T) {
	judge := tahu.Start(t)
	host := tahu.NewHost(judge, "g", "n")
	e := NewEdge(Node{Group: "g", ID: "n"}, testPlan(), "scada", t.TempDir(), nil)
	published := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	e.now = func() time.Time { return published }
	apply := hostApplies(t, host)
	if _, err := e.Will(); err != nil {
		t.Fatal(err)
	}
	e.Connected("tcp://a:1883")
	if r := e.Received("spBv1.0/STATE/scada", []byte(`{"online":true,"timestamp":2000}`)); !r.Online {
		t.Fatal("the host's STATE is not taken")
	}
	apply(e.Begin(0, nil))
	apply(e.Compose(buffer.Record{Seq: 1, Data: []byte(`probe
"ts":"2026-11-24T10:00:01Z","device":"probe","values":{"humidity":40,"removed":1},"errors":{"gone":"timeout"}}`)}))
	last := host.Data[len(host.Data)-1]
	if len(last.Metrics) != 1 || last.Metrics[0].Name != "humidity" {
		t.Errorf("DDATA %+v: want humidity alone", last.Metrics)
	}
	apply(e.Compose(buffer.Record{Seq: 2, Data: []byte(`probe
"ts":"2026-11-24T10:00:02Z","device":"probe","values":{},"errors":{"humidity":"timeout"}}`)}))
	if host.DeviceDeaths != 1 {
		t.Fatalf("%d DDEATHs, want 1", host.DeviceDeaths)
	}
	// A reconnect to the same broker: its retained offline STATE, older
	// than the online one seen there, is stale.
	e.Connected("tcp://a:1883")
	if r := e.Received("spBv1.0/STATE/scada", []byte(`{"online":false,"timestamp":1000}`)); r.Offline {
		t.Error("a stale STATE on a reconnect to the same broker was obeyed")
	}
	e.Connected("tcp://b:1883") // another broker: its own times
	if r := e.Received("spBv1.0/STATE/scada", []byte(`{"online":false,"timestamp":1000}`)); !r.Offline {
		t.Error("another broker's STATE was taken for stale")
	}
}

// TestEdgeBirthsCarryCurrentValues: a DBIRTH carries each metric's newest
// value as polled, not the last one composed (the uplink and the buffer
// are behind the bus); an old reading composed after newer ones (the
// backlog under max_rate) is history: historical DDATA, no DDEATH for an
// old "device silent", and the current state untouched.
func TestEdgeBirthsCarryCurrentValues(t *testing.T) {
	judge := tahu.Start(t)
	host := tahu.NewHost(judge, "g", "n")
	e := NewEdge(Node{Group: "g", ID: "n"}, testPlan(), "", t.TempDir(), nil)
	apply := hostApplies(t, host)
	humidityOf := func(msgs []uplink.Message) string {
		t.Helper()
		for _, m := range msgs {
			if m.Topic != "spBv1.0/g/DBIRTH/n/probe" {
				continue
			}
			p, err := judge.Decode(m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			for _, mt := range p.Metrics {
				if mt.Name == "humidity" {
					return fmt.Sprint(mt.Value)
				}
			}
		}
		t.Fatal("no DBIRTH of probe")
		return ""
	}
	at := func(s int) time.Time { return time.Date(2026, 11, 24, 10, 0, s, 0, time.UTC) }
	e.Observe(&drivers.Reading{Device: "probe", Time: at(30), Values: []drivers.Value{{Point: "humidity", Kind: drivers.KindFloat, F: 55}}})
	if _, err := e.Will(); err != nil {
		t.Fatal(err)
	}
	e.Connected("tcp://a:1883")
	if got := humidityOf(apply(e.Begin(3, nil))); got != "55" {
		t.Errorf("DBIRTH humidity %s, want the polled 55", got)
	}
	record := func(seq uint64, s int, values, errs string) buffer.Record {
		return buffer.Record{Seq: seq, Data: []byte(fmt.Sprintf("probe\n\"ts\":\"%s\",\"device\":\"probe\",\"values\":{%s},\"errors\":{%s}}",
			at(s).Format(time.RFC3339), values, errs))}
	}
	apply(e.Compose(record(4, 31, `"humidity":56`, ``))) // live
	// The backlog after it: an old silent reading, then an old value.
	msgs := apply(e.Compose(record(2, 10, ``, `"humidity":"timeout"`)))
	apply(e.Compose(record(3, 20, `"humidity":41`, ``)))
	if host.DeviceDeaths != 0 {
		t.Errorf("an old silent reading killed a device that answers: %d DDEATHs", host.DeviceDeaths)
	}
	if len(msgs) != 1 || !host.Data[len(host.Data)-2].Metrics[0].IsHistorical {
		t.Errorf("old readings not composed as history: %d messages", len(msgs))
	}
	if got := humidityOf(apply(e.Rebirth())); got != "56" {
		t.Errorf("after the backlog the DBIRTH says %s, want the newest 56", got)
	}
}

// TestEdgeNumbersNothingTooLarge: against a broker's Maximum Packet Size,
// a DBIRTH that cannot go leaves its device unborn, a reading whose DDATA
// (or DBIRTH) cannot go is refused as too large, and neither takes a seq:
// the host sees no gap.
func TestEdgeNumbersNothingTooLarge(t *testing.T) {
	judge := tahu.Start(t)
	host := tahu.NewHost(judge, "g", "n")
	e := NewEdge(Node{Group: "g", ID: "n"}, testPlan(), "", t.TempDir(), nil)
	fits := func(topic string, _ int) bool { return !strings.HasSuffix(topic, "/meter") } // the meter's messages never fit
	hostApply := hostApplies(t, host)                                                     // fails on a seq gap among them
	apply := func(msgs []uplink.Message, err error) {
		t.Helper()
		for _, m := range msgs {
			if strings.HasSuffix(m.Topic, "/meter") {
				t.Fatalf("a message that does not fit: %s", m.Topic)
			}
		}
		hostApply(msgs, err)
	}
	if _, err := e.Will(); err != nil {
		t.Fatal(err)
	}
	e.Connected("tcp://a:1883")
	apply(e.Begin(0, fits))
	meter := buffer.Record{Seq: 1, Data: []byte(`meter
"ts":"2026-11-24T10:00:01Z","device":"meter","values":{"voltage":230.5},"errors":{}}`)}
	if _, err := e.Compose(meter); !errors.Is(err, uplink.ErrTooLarge) {
		t.Fatalf("a reading whose messages cannot go: %v, want ErrTooLarge", err)
	}
	apply(e.Compose(buffer.Record{Seq: 2, Data: []byte(`probe
"ts":"2026-11-24T10:00:02Z","device":"probe","values":{"humidity":40},"errors":{}}`)}))
	apply(e.Rebirth())
	if len(host.Data) != 1 {
		t.Errorf("%d DDATA, want the probe's one", len(host.Data))
	}
}

// hostApplies returns what hands an Edge's messages to host, which judges
// their seq and order as a primary host would, failing the test on an
// error from the Edge or the host; it returns the messages.
func hostApplies(t *testing.T, host *tahu.Host) func([]uplink.Message, error) []uplink.Message {
	return func(msgs []uplink.Message, err error) []uplink.Message {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if err := host.Apply(m.Topic, m.Payload); err != nil {
				t.Fatal(err)
			}
		}
		return msgs
	}
}
