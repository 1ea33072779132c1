package sparkplug

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"edgegw/gateway/config"
	"edgegw/gateway/sparkplug/spb"
	"edgegw/internal/tahu"
)

func point(name, table, typ string, mutate ...func(*config.Point)) config.Point {
	p := config.Point{Name: name, Table: table, Type: typ, Bit: -1, Scale: 1}
	for _, m := range mutate {
		m(&p)
	}
	return p
}

// testPlan is a meter with every kind of point, and a serial sensor.
func testPlan() *Plan {
	devices := []config.Device{
		{Name: "meter", Points: []config.Point{
			point("voltage", "input", "float32", func(p *config.Point) { p.Unit = "V" }),
			point("power", "holding", "int32", func(p *config.Point) { p.Scale = 0.1; p.Unit = "W" }),
			point("temp", "holding", "int16"),
			point("count", "holding", "uint32"),
			point("energy", "holding", "int64"),
			point("serial", "holding", "uint64"),
			point("relay", "coil", "", func(p *config.Point) { p.Writable = true }),
			point("raw", "holding", ""),
			point("name", "holding", "string"),
		}},
		{Name: "probe", Points: []config.Point{point("humidity", "", "")}},
	}
	return NewPlan(devices, func(d config.Device) string {
		if d.Name == "probe" {
			return "float64"
		}
		return "uint16"
	})
}

const meterReading = `{"seq":7,"ts":"2026-11-24T10:00:00.125Z","device":"meter",
 "values":{"voltage":230.5,"power":-1234.5,"temp":-5,"count":2000000000,"energy":-9007199254740993,
 "serial":18446744073709551615,"relay":true,"raw":65535,"name":"SDM630"},"errors":{}}`

// dataOf is the DDATA metrics of the reading doc of d.
func dataOf(t *testing.T, d *Device, doc string, historical bool) []*spb.Payload_Metric {
	t.Helper()
	r, err := parseReading([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := d.Data(r, historical)
	if err != nil {
		t.Fatal(err)
	}
	return metrics
}

// knownOf is what a reading tells of each point.
func knownOf(t *testing.T, doc string) map[string]Known {
	t.Helper()
	r, err := parseReading([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]Known{}
	for p, v := range r.Values {
		known[p] = Known{Value: v, TS: r.TS}
	}
	return known
}

// TestPayloadsAsTahuReadsThem: every message, decoded by Eclipse Tahu's
// codec: seq from 0 at the NBIRTH, bdSeq in NBIRTH and NDEATH, the DBIRTH's
// names, aliases, types and units, DDATA by alias only with exact values
// (64-bit ones too) and the reading's time, historical when asked.
func TestPayloadsAsTahuReadsThem(t *testing.T) {
	judge := tahu.Start(t)
	plan := testPlan()
	meter, _ := plan.Device("meter")
	now := time.UnixMilli(1_800_000_000_000)
	s := &Session{BdSeq: 3}
	decode := func(b []byte, err error) tahu.Payload {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		p, err := judge.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	death := decode(NodeDeath(3, now))
	if death.Seq != nil || len(death.Metrics) != 1 || death.Metrics[0].Name != "bdSeq" || death.Metrics[0].Type != "Int64" || death.Metrics[0].Value != "3" {
		t.Fatalf("NDEATH: %+v", death)
	}
	birth := decode(s.NodeBirth(now))
	if *birth.Seq != "0" || birth.Timestamp != "1800000000000" || len(birth.Metrics) != 2 ||
		birth.Metrics[0].Name != "bdSeq" || birth.Metrics[0].Value != "3" ||
		birth.Metrics[1].Name != "Node Control/Rebirth" || birth.Metrics[1].Type != "Boolean" || birth.Metrics[1].Value != false {
		t.Fatalf("NBIRTH: %+v", birth)
	}

	dbirth := decode(s.DeviceBirth(meter, knownOf(t, meterReading), now))
	if *dbirth.Seq != "1" {
		t.Fatalf("DBIRTH seq %s, want 1", *dbirth.Seq)
	}
	want := []struct {
		name, typ string
		value     any
	}{
		{"voltage", "Float", 230.5}, {"power", "Double", -1234.5}, {"temp", "Int16", float64(-5)},
		{"count", "UInt32", float64(2000000000)}, {"energy", "Int64", "-9007199254740993"},
		{"serial", "UInt64", "18446744073709551615"}, {"relay", "Boolean", true}, {"raw", "UInt16", float64(65535)},
		{"name", "String", "SDM630"},
	}
	aliases := map[string]string{}
	for i, w := range want {
		m := dbirth.Metrics[i]
		if m.Name != w.name || m.Type != w.typ || fmt.Sprint(m.Value) != fmt.Sprint(w.value) || m.Alias != strconv.Itoa(i+1) {
			t.Errorf("DBIRTH metric %d: %+v, want %s %s = %v alias %d", i, m, w.name, w.typ, w.value, i+1)
		}
		aliases[m.Alias] = m.Name
	}
	if u := dbirth.Metrics[0].Properties["engUnit"]; u.Value != "V" || u.Type != "String" {
		t.Errorf("voltage's engUnit: %+v", u)
	}

	readAt, _ := time.Parse(time.RFC3339, "2026-11-24T10:00:00.125Z")
	data := decode(s.DeviceData(dataOf(t, meter, meterReading, true), now))
	if *data.Seq != "2" || data.Timestamp != "1800000000000" || len(data.Metrics) != len(want) {
		t.Fatalf("DDATA: %+v", data)
	}
	for i, m := range data.Metrics {
		if m.Name != "" || aliases[m.Alias] != want[i].name || m.Type != want[i].typ || fmt.Sprint(m.Value) != fmt.Sprint(want[i].value) {
			t.Errorf("DDATA metric %d: %+v, want alias of %s = %v", i, m, want[i].name, want[i].value)
		}
		if m.Timestamp != strconv.FormatInt(readAt.UnixMilli(), 10) || !m.IsHistorical {
			t.Errorf("DDATA metric %d: timestamp %s historical %v, want the reading's and true", i, m.Timestamp, m.IsHistorical)
		}
	}

	partial := decode(s.DeviceData(dataOf(t, meter, `{"ts":"2026-11-24T10:00:01Z","values":{"temp":21},"errors":{"voltage":"timeout"}}`, false), now))
	if len(partial.Metrics) != 2 || !partial.Metrics[0].IsNull || partial.Metrics[0].Value != nil || partial.Metrics[0].Alias != "1" ||
		partial.Metrics[1].Value != float64(21) || partial.Metrics[1].IsHistorical {
		t.Fatalf("DDATA of a partial reading with an error: %+v", partial)
	}
	if dd := decode(s.DeviceDeath(now)); *dd.Seq != "4" || len(dd.Metrics) != 0 {
		t.Fatalf("DDEATH: %+v", dd)
	}
}

// TestSeqWrapsAfter255: the message seq counts 0..255 and starts again at
// 0, without a gap; a new NBIRTH starts the session at 0.
func TestSeqWrapsAfter255(t *testing.T) {
	s := &Session{}
	plan := testPlan()
	probe, _ := plan.Device("probe")
	if _, err := s.NodeBirth(time.Now()); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 600; i++ {
		if got := *s.next(); got != uint64(i%256) {
			t.Fatalf("message %d has seq %d", i, got)
		}
	}
	if _, err := s.DeviceBirth(probe, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NodeBirth(time.Now()); err != nil || *s.next() != 1 {
		t.Fatal("a new NBIRTH did not start again at 0")
	}
}

// TestDataRefusesWhatTheBirthLacks: a reading with a point the device's
// birth did not define, or a value its type cannot hold, is an error, not
// a metric a host cannot place.
func TestDataRefusesWhatTheBirthLacks(t *testing.T) {
	meter, _ := testPlan().Device("meter")
	for _, doc := range []string{
		`{"ts":"2026-11-24T10:00:00Z","values":{"nope":1}}`,
		`{"ts":"2026-11-24T10:00:00Z","values":{"temp":40000}}`,
		`{"ts":"2026-11-24T10:00:00Z","values":{"relay":1}}`,
		`{"ts":"2026-11-24T10:00:00Z","values":{"count":-1}}`,
		`not json`,
	} {
		r, err := parseReading([]byte(doc))
		if err == nil {
			_, err = meter.Data(r, false)
		}
		if err == nil {
			t.Errorf("%s: no error", doc)
		}
	}
}
