package tahu

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"edgegw/internal/testbroker"
)

// The Eclipse Sparkplug TCK judges an edge node from inside a HiveMQ
// broker (an extension that sees every packet of the client). That build
// cannot be fetched here, so TCK judges what the TCK's edge-node classes
// SessionEstablishment, SessionTermination and SendData (and, of
// PrimaryHost, what the wire shows) assert, from the same vantage: every
// packet the edge node sent, as a testbroker.Sniffer in front of the
// broker recorded them, decoded by Tahu. Each assertion is named by its
// tck-id, as in the TCK's sources (tck/src/main/java/org/eclipse/
// sparkplug/tck/test/edge/); docs/SPARKPLUG.md lists them with the test.

// Assertion is one tck-id's verdict.
type Assertion struct {
	ID, Class, Requires string
	// Checked says the recording held something it applies to; Failed,
	// when not "", is the first packet that broke it.
	Checked bool
	Failed  string
}

// TCK judges one edge node of group/node with the devices it has.
type TCK struct {
	judge   *Judge
	Group   string
	Node    string
	Devices []string

	results map[string]*Assertion
	order   []string
}

// NewTCK returns a judge of edge node group/node.
func NewTCK(j *Judge, group, node string, devices ...string) *TCK {
	return &TCK{judge: j, Group: group, Node: node, Devices: devices, results: map[string]*Assertion{}}
}

// check records one observation of id: ok, or why not.
func (t *TCK) check(id, class, requires string, ok bool, why string, args ...any) {
	a := t.results[id]
	if a == nil {
		a = &Assertion{ID: id, Class: class, Requires: requires}
		t.results[id] = a
		t.order = append(t.order, id)
	}
	a.Checked = true
	if !ok && a.Failed == "" {
		a.Failed = fmt.Sprintf(why, args...)
	}
}

// Results are the verdicts, in the order the assertions were first met.
func (t *TCK) Results() []Assertion {
	out := make([]Assertion, 0, len(t.order))
	for _, id := range t.order {
		out = append(out, *t.results[id])
	}
	return out
}

func (t *TCK) topic(typ, device string) string {
	s := "spBv1.0/" + t.Group + "/" + typ + "/" + t.Node
	if device != "" {
		s += "/" + device
	}
	return s
}

// Judge goes through every connection of the edge node the sniffer saw
// (those whose CONNECT carries its NDEATH as will).
func (t *TCK) Judge(packets []testbroker.Packet) error {
	byConn := map[int][]testbroker.Packet{}
	for _, p := range packets {
		byConn[p.Conn] = append(byConn[p.Conn], p)
	}
	conns := make([]int, 0, len(byConn))
	for c := range byConn {
		conns = append(conns, c)
	}
	sort.Ints(conns)
	for _, c := range conns {
		ps := byConn[c]
		if len(ps) == 0 || ps[0].Kind != "CONNECT" || ps[0].WillTopic != t.topic("NDEATH", "") {
			continue
		}
		if err := t.connection(ps); err != nil {
			return err
		}
	}
	return nil
}

const (
	establishment = "SessionEstablishment"
	termination   = "SessionTermination"
	sendData      = "SendData"
)

// connection judges one connection's packets, CONNECT first.
func (t *TCK) connection(ps []testbroker.Packet) error {
	connect := ps[0]
	if connect.Level == 5 {
		t.check("principles-persistence-clean-session-50", establishment, "MQTT 5: Clean Start true, Session Expiry Interval 0",
			connect.CleanStart && connect.SessionExpiry == 0, "CONNECT clean start %v, session expiry %d", connect.CleanStart, connect.SessionExpiry)
	} else {
		t.check("principles-persistence-clean-session-311", establishment, "MQTT 3.1.1: Clean Session true",
			connect.CleanStart, "CONNECT clean session false")
	}
	for _, id := range []string{"payloads-ndeath-will-message", "message-flow-edge-node-birth-publish-will-message", "message-flow-edge-node-birth-publish-will-message-topic"} {
		t.check(id, establishment, "the NDEATH is registered as the will of the CONNECT, on spBv1.0/{group}/NDEATH/{node}", connect.Will, "no will")
	}
	for _, id := range []string{"payloads-ndeath-will-message-qos", "message-flow-edge-node-birth-publish-will-message-qos"} {
		t.check(id, establishment, "the will (NDEATH) has QoS 1", connect.WillQoS == 1, "will QoS %d", connect.WillQoS)
	}
	for _, id := range []string{"payloads-ndeath-will-message-retain", "message-flow-edge-node-birth-publish-will-message-will-retained"} {
		t.check(id, establishment, "the will (NDEATH) is not retained", !connect.WillRetain, "will retained")
	}
	will, err := t.judge.Decode(connect.WillPayload)
	t.check("message-flow-edge-node-birth-publish-will-message-payload", establishment, "the will's payload is a Sparkplug B payload", err == nil, "will payload: %v", err)
	if err != nil {
		return nil
	}
	willBdSeq := ""
	if len(will.Metrics) == 1 && will.Metrics[0].Name == "bdSeq" {
		willBdSeq = fmt.Sprint(will.Metrics[0].Value)
	}
	t.check("topics-ndeath-payload", establishment, "the NDEATH payload holds a single metric, bdSeq", willBdSeq != "", "will metrics %+v", will.Metrics)
	for _, id := range []string{"payloads-ndeath-seq", "topics-ndeath-seq"} {
		t.check(id, establishment, "the NDEATH has no seq", will.Seq == nil, "will seq %v", will.Seq)
	}

	var (
		subscribed = map[string]bool{}
		nbirth     bool
		seq        = -1
		aliases    = map[string]string{} // alias → metric, over a set of births
		born       = map[string]bool{}
		ndeath     bool
	)
	next := func(kind string, p Payload) {
		id := strings.ToLower(kind)
		class := sendData
		if kind == "DBIRTH" {
			class = establishment
		} else if kind == "DDEATH" {
			class = termination
		}
		want := (seq + 1) % 256
		got := -1
		if p.Seq != nil {
			got, _ = strconv.Atoi(*p.Seq)
		}
		for _, sid := range map[string][]string{
			"DBIRTH": {"payloads-dbirth-seq", "topics-dbirth-seq", "payloads-dbirth-seq-inc"},
			"DDATA":  {"payloads-ddata-seq", "topics-ddata-seq-num"},
			"DDEATH": {"payloads-ddeath-seq", "topics-ddeath-seq-num", "payloads-ddeath-seq-inc", "payloads-ddeath-seq-number"},
		}[kind] {
			t.check(sid, class, "a "+kind+" carries a seq one more than the edge node's message before (255 then 0)", got == want, "%s seq %d after %d", kind, got, seq)
		}
		seq = got
		for _, tid := range []string{"payloads-" + id + "-timestamp", "topics-" + id + "-timestamp"} {
			if kind == "DDEATH" && tid == "topics-ddeath-timestamp" {
				continue
			}
			t.check(tid, class, "a "+kind+" carries the payload timestamp of its publication", p.Timestamp != "", "%s without a timestamp", kind)
		}
	}
	for _, pk := range ps[1:] {
		switch pk.Kind {
		case "SUBSCRIBE":
			for _, f := range pk.Filters {
				subscribed[f] = true
			}
		case "DISCONNECT":
			if connect.Level == 5 {
				for _, id := range []string{"payloads-ndeath-will-message-publisher-disconnect-mqtt50", "operational-behavior-edge-node-intentional-disconnect-packet"} {
					t.check(id, termination, "MQTT 5: an intentional disconnect is DISCONNECT 0x04 (with will)", pk.Reason == 0x04, "DISCONNECT reason 0x%02x", pk.Reason)
				}
			} else {
				t.check("payloads-ndeath-will-message-publisher-disconnect-mqtt311", termination, "MQTT 3.1.1: the NDEATH is published before the DISCONNECT", ndeath, "DISCONNECT without an NDEATH before")
			}
			for _, id := range []string{"payloads-ndeath-will-message-publisher", "operational-behavior-edge-node-intentional-disconnect-ndeath"} {
				t.check(id, termination, "an edge node that disconnects on purpose publishes its NDEATH first", ndeath, "DISCONNECT without an NDEATH before")
			}
		case "PUBLISH":
			parts := strings.Split(pk.Topic, "/")
			if len(parts) < 4 || parts[0] != "spBv1.0" || parts[1] != t.Group || parts[3] != t.Node {
				continue
			}
			kind, device := parts[2], ""
			if len(parts) == 5 {
				device = parts[4]
			}
			p, err := t.judge.Decode(pk.Payload)
			if err != nil {
				return fmt.Errorf("%s: %w", pk.Topic, err)
			}
			if err := t.publish(kind, device, pk, p, connect, willBdSeq, subscribed, &nbirth, born, aliases, next, &seq, &ndeath); err != nil {
				return err
			}
		}
	}
	return nil
}

// publish judges one PUBLISH of the edge node.
func (t *TCK) publish(kind, device string, pk testbroker.Packet, p Payload, connect testbroker.Packet, willBdSeq string,
	subscribed map[string]bool, nbirth *bool, born map[string]bool, aliases map[string]string,
	next func(string, Payload), seq *int, ndeath *bool) error {
	mqtt0 := pk.QoS == 0 && !pk.Retain
	timestamps := true
	for _, m := range p.Metrics {
		timestamps = timestamps && m.Timestamp != ""
	}
	switch kind {
	case "NBIRTH":
		*nbirth = true
		for k := range aliases {
			delete(aliases, k) // a new set of births
		}
		t.check("message-flow-edge-node-birth-publish-connect", establishment, "an MQTT session is established before the NBIRTH", true, "")
		t.check("message-flow-edge-node-ncmd-subscribe", establishment, "the edge node subscribes to its NCMD topic before its NBIRTH",
			subscribed[t.topic("NCMD", "")], "NBIRTH before the NCMD subscription (%v)", subscribed)
		t.check("message-flow-device-dcmd-subscribe", establishment, "the edge node subscribes to its devices' DCMD topics before its NBIRTH",
			subscribed[t.topic("DCMD", "+")] || subscribed[t.topic("DCMD", "#")], "NBIRTH before a DCMD subscription (%v)", subscribed)
		for _, id := range []string{"payloads-nbirth-qos", "message-flow-edge-node-birth-publish-nbirth-qos", "payloads-nbirth-retain",
			"message-flow-edge-node-birth-publish-nbirth-retained", "topics-nbirth-mqtt"} {
			t.check(id, establishment, "NBIRTH at QoS 0, not retained", mqtt0, "NBIRTH QoS %d retained %v", pk.QoS, pk.Retain)
		}
		for _, id := range []string{"topics-nbirth-topic", "message-flow-edge-node-birth-publish-nbirth-topic"} {
			t.check(id, establishment, "NBIRTH on spBv1.0/{group}/NBIRTH/{node}", pk.Topic == t.topic("NBIRTH", ""), "topic %s", pk.Topic)
		}
		for _, id := range []string{"payloads-nbirth-seq", "topics-nbirth-seq-num", "payloads-sequence-num-zero-nbirth",
			"message-flow-edge-node-birth-publish-nbirth-payload-seq", "payloads-sequence-num-req-nbirth"} {
			t.check(id, establishment, "the NBIRTH's seq is 0", p.Seq != nil && *p.Seq == "0", "NBIRTH seq %v", p.Seq)
		}
		for _, id := range []string{"payloads-nbirth-timestamp", "topics-nbirth-timestamp"} {
			t.check(id, establishment, "the NBIRTH carries the payload timestamp of its publication", p.Timestamp != "", "NBIRTH without a timestamp")
		}
		var rebirth, bdSeq *Metric
		for i, m := range p.Metrics {
			switch m.Name {
			case "Node Control/Rebirth":
				rebirth = &p.Metrics[i]
			case "bdSeq":
				bdSeq = &p.Metrics[i]
			}
		}
		for _, id := range []string{"payloads-nbirth-rebirth-req", "topics-nbirth-rebirth-metric", "operational-behavior-data-commands-rebirth-name"} {
			t.check(id, establishment, "the NBIRTH holds the metric Node Control/Rebirth", rebirth != nil, "no Node Control/Rebirth")
		}
		if rebirth != nil {
			t.check("operational-behavior-data-commands-rebirth-datatype", establishment, "Node Control/Rebirth is a Boolean", rebirth.Type == "Boolean", "type %s", rebirth.Type)
			t.check("operational-behavior-data-commands-rebirth-value", establishment, "Node Control/Rebirth is false in the NBIRTH", rebirth.Value == false, "value %v", rebirth.Value)
		}
		for _, id := range []string{"payloads-nbirth-bdseq", "topics-nbirth-bdseq-included"} {
			t.check(id, establishment, "the NBIRTH holds the metric bdSeq", bdSeq != nil, "no bdSeq")
		}
		for _, id := range []string{"topics-nbirth-bdseq-matching", "payloads-ndeath-bdseq", "message-flow-edge-node-birth-publish-nbirth-payload-bdseq"} {
			t.check(id, establishment, "the NBIRTH's bdSeq is the one of the CONNECT's will", bdSeq != nil && fmt.Sprint(bdSeq.Value) == willBdSeq,
				"NBIRTH bdSeq %v, will %s", bdSeq, willBdSeq)
		}
		t.birthMetrics("topics-nbirth-metrics", p, aliases)
		*seq = 0
	case "DBIRTH":
		for _, id := range []string{"payloads-dbirth-qos", "payloads-dbirth-retain", "topics-dbirth-mqtt",
			"message-flow-device-birth-publish-dbirth-qos", "message-flow-device-birth-publish-dbirth-retained"} {
			t.check(id, establishment, "DBIRTH at QoS 0, not retained", mqtt0, "DBIRTH QoS %d retained %v", pk.QoS, pk.Retain)
		}
		for _, id := range []string{"topics-dbirth-topic", "message-flow-device-birth-publish-dbirth-topic", "message-flow-device-birth-publish-dbirth-match-edge-node-topic"} {
			t.check(id, establishment, "DBIRTH on spBv1.0/{group}/DBIRTH/{node}/{device}, the group and node of the NBIRTH", device != "", "topic %s", pk.Topic)
		}
		t.check("message-flow-device-birth-publish-nbirth-wait", establishment, "a DBIRTH follows the NBIRTH of its session", *nbirth, "DBIRTH before any NBIRTH")
		next("DBIRTH", p)
		t.birthMetrics("topics-dbirth-metrics", p, aliases)
		born[device] = true
	case "DDATA":
		for _, id := range []string{"principles-birth-certificates-order", "payloads-ddata-order"} {
			t.check(id, establishment, "no DDATA before the NBIRTH of the session", *nbirth, "DDATA before an NBIRTH")
		}
		t.check("payloads-dbirth-order", establishment, "a device's DBIRTH goes before its DDATA", born[device], "DDATA of %s before its DBIRTH", device)
		for _, id := range []string{"topics-ddata-mqtt", "payloads-ddata-qos", "payloads-ddata-retain"} {
			t.check(id, sendData, "DDATA at QoS 0, not retained", mqtt0, "DDATA QoS %d retained %v", pk.QoS, pk.Retain)
		}
		next("DDATA", p)
		t.check("topics-ddata-payload", sendData, "a DDATA holds the metrics that changed", len(p.Metrics) > 0, "DDATA without metrics")
		onlyAlias, noType := true, true
		for _, m := range p.Metrics {
			onlyAlias = onlyAlias && m.Alias != "" && m.Name == ""
			noType = noType && m.Type == ""
		}
		t.check("payloads-alias-data-cmd-requirement", sendData, "DDATA metrics carry only their alias, no name", onlyAlias, "a DDATA metric with a name or without an alias")
		t.check("payloads-metric-datatype-not-req", sendData, "DDATA metrics SHOULD NOT carry their datatype", noType, "DDATA metrics carry their datatype")
		t.check("payloads-name-birth-data-requirement", establishment, "every metric of NBIRTH, DBIRTH and DDATA carries a timestamp", timestamps, "a DDATA metric without a timestamp")
	case "DDEATH":
		for _, id := range []string{"topics-ddeath-mqtt"} {
			t.check(id, termination, "DDEATH at QoS 0, not retained", mqtt0, "DDEATH QoS %d retained %v", pk.QoS, pk.Retain)
		}
		t.check("topics-ddeath-topic", termination, "DDEATH on spBv1.0/{group}/DDEATH/{node}/{device}", device != "", "topic %s", pk.Topic)
		t.check("operational-behavior-device-ddeath", termination, "a device that stops answering gets a DDEATH while its edge node stays", born[device], "DDEATH of an unborn device")
		next("DDEATH", p)
		born[device] = false
	case "NDEATH":
		*ndeath = true
		t.check("topics-ndeath-topic", termination, "NDEATH on spBv1.0/{group}/NDEATH/{node}", device == "", "topic %s", pk.Topic)
	}
	return nil
}

// birthMetrics judges the metrics of a birth: each with name, alias,
// datatype and timestamp, and aliases unique in the set of births.
func (t *TCK) birthMetrics(id string, p Payload, aliases map[string]string) {
	complete, named, stamped, unique := true, true, true, ""
	for _, m := range p.Metrics {
		complete = complete && m.Name != "" && m.Type != ""
		stamped = stamped && m.Timestamp != ""
		if m.Alias != "" {
			named = named && m.Name != ""
			if other, ok := aliases[m.Alias]; ok && other != m.Name && unique == "" {
				unique = fmt.Sprintf("alias %s of %s and %s", m.Alias, other, m.Name)
			}
			aliases[m.Alias] = m.Name
		}
	}
	t.check(id, establishment, "each birth metric has a name and a datatype", complete, "a birth metric without name or datatype")
	t.check("payloads-alias-birth-requirement", establishment, "birth metrics with an alias carry their name too", named, "a birth metric with an alias and no name")
	t.check("payloads-alias-uniqueness", establishment, "an alias is unique across the edge node's metrics", unique == "", "%s", unique)
	t.check("payloads-name-birth-data-requirement", establishment, "every metric of NBIRTH, DBIRTH and DDATA carries a timestamp", stamped, "a birth metric without a timestamp")
}
