package sparkplug

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"edgegw/buffer"
	"edgegw/drivers"
	"edgegw/gateway/sparkplug/spb"
	"edgegw/gateway/uplink"
)

// Edge is the gateway as a Sparkplug edge node: the uplink's Session. It
// turns buffer records (a device name, a newline, a JSON reading without
// its opening brace and seq) into DDATA, with the births, deaths and
// commands of the specification around them.
type Edge struct {
	node Node
	plan *Plan
	// host is the primary host application's id; "" when none is awaited.
	host string
	// bdSeqFile keeps the bdSeq of the last accepted CONNECT across
	// restarts, so a will left behind by a killed process never carries
	// the bdSeq of the next session.
	bdSeqFile string
	now       func() time.Time
	log       *slog.Logger

	mu         sync.Mutex
	bdSeq      uint64 // of the CONNECT being made, then of the session
	started    bool   // a CONNECT was built: bdSeq is the next one's less one
	session    Session
	backlog    uint64 // records up to this seq are sent late: historical
	devices    map[string]*deviceState
	hostOnline bool
	// fits says whether a message can go to the broker of the session
	// (uplink.Session's Begin); nil: any.
	fits    func(topic string, payload int) bool
	broker  string           // the broker of the connection
	hostTS  map[string]int64 // the newest STATE's timestamp, per broker
	unknown map[string]bool  // what was logged once: device.point not in the births, birth:device too large
}

// deviceState is what the host was told of one device, and what was
// polled of it since.
type deviceState struct {
	known map[string]Known
	born  bool // its DBIRTH went in this session, and no DDEATH since
	// latest is when the newest reading composed was taken: an older one
	// is history, composed as such without touching known or born.
	latest time.Time
	// observed is each point as last polled, ahead of what was composed
	// (the buffer and the uplink are behind the bus): births carry it.
	observed map[string]observation
}

// observation is a point as last polled: its value or its error.
type observation struct {
	value drivers.Value
	err   string
	ts    time.Time
}

// NewEdge returns the edge node node with plan's devices; host is the
// primary host application's id, "" for none; dataDir keeps the bdSeq.
func NewEdge(node Node, plan *Plan, host, dataDir string, log *slog.Logger) *Edge {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Edge{node: node, plan: plan, host: host, bdSeqFile: filepath.Join(dataDir, "sparkplug-bdseq"),
		now: time.Now, log: log, devices: map[string]*deviceState{}, hostTS: map[string]int64{}, unknown: map[string]bool{}}
	for _, d := range plan.Devices {
		e.devices[d.Name] = &deviceState{known: map[string]Known{}, observed: map[string]observation{}}
	}
	if b, err := os.ReadFile(e.bdSeqFile); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 8); err == nil {
			e.bdSeq = v
			e.started = true // the next CONNECT takes the one after
		}
	}
	return e
}

// stateTopic is where the primary host says whether it is online.
func (e *Edge) stateTopic() string { return Namespace + "/STATE/" + e.host }

// Will is the NDEATH with the bdSeq that this CONNECT's NBIRTH will carry.
func (e *Edge) Will() (uplink.Message, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		e.bdSeq = (e.bdSeq + 1) % 256
	}
	e.started = true
	payload, err := NodeDeath(e.bdSeq, e.now())
	if err != nil {
		return uplink.Message{}, err
	}
	return uplink.Message{Topic: e.node.Topic(NDeath, ""), Payload: payload}, nil
}

// Connected keeps the bdSeq of the will the broker just registered. The
// primary host must say again, on this connection, that it is online: its
// STATE on this broker is the one that counts, whatever its time beside
// another broker's; the newest time seen on this broker is kept, so a
// stale retained STATE there is ignored on a reconnect too.
func (e *Edge) Connected(broker string) {
	e.mu.Lock()
	v := e.bdSeq
	e.hostOnline, e.broker = false, broker
	e.mu.Unlock()
	if err := writeFileSync(e.bdSeqFile, []byte(strconv.FormatUint(v, 10)+"\n")); err != nil {
		e.log.Warn("sparkplug_bdseq_not_saved", "file", e.bdSeqFile, "err", err,
			"hint", "after a restart a stale NDEATH may carry the new session's bdSeq; check the data_dir's disk")
	}
}

// writeFileSync replaces path with data, on disk when it returns.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Filters are the node's and its devices' commands, and the primary
// host's STATE when one is awaited.
func (e *Edge) Filters() []uplink.Filter {
	f := []uplink.Filter{{Topic: e.node.Topic(NCmd, ""), Commands: true}, {Topic: e.node.Topic(DCmd, "+"), Commands: true}}
	if e.host != "" {
		f = append(f, uplink.Filter{Topic: e.stateTopic()})
	}
	return f
}

// Ready says whether births may go: always, unless a primary host is
// awaited and its last STATE did not say online.
func (e *Edge) Ready() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.host == "" || e.hostOnline
}

// Observe takes a device's reading as polled, before it is buffered: the
// births that follow carry each metric's newest value (the specification:
// a birth holds current values), whatever the uplink has composed yet. It
// is called on every poll, from the bus's goroutine.
func (e *Edge) Observe(r *drivers.Reading) {
	e.mu.Lock()
	defer e.mu.Unlock()
	st, ok := e.devices[r.Device]
	if !ok {
		return
	}
	for _, v := range r.Values {
		st.observed[v.Point] = observation{value: v, ts: r.Time}
	}
	for _, pe := range r.Errors {
		st.observed[pe.Point] = observation{err: pe.Err, ts: r.Time}
	}
}

// current is what a birth says of d now: per point, the newer of what
// was composed and what was polled. A polled value the metric's type
// cannot hold (Compose would refuse its reading) is left out.
func (st *deviceState) current(d *Device) map[string]Known {
	now := make(map[string]Known, len(st.known)+len(st.observed))
	for p, k := range st.known {
		now[p] = k
	}
	for _, m := range d.Metrics {
		o, ok := st.observed[m.Name]
		if k, composed := now[m.Name]; !ok || composed && !o.ts.After(k.TS) {
			continue
		}
		if o.err != "" {
			now[m.Name] = Known{TS: o.ts, Err: o.err}
			continue
		}
		raw := o.value.AppendJSON(nil)
		if setValue(&spb.Payload_Metric{}, m.Type, raw) != nil {
			continue
		}
		now[m.Name] = Known{Value: raw, TS: o.ts}
	}
	return now
}

// Begin starts a session: seq 0 at the NBIRTH, then a DBIRTH for every
// device with what is known of it, and a DDEATH after it for a device
// known to have stopped answering.
func (e *Edge) Begin(backlog uint64, fits func(topic string, payload int) bool) ([]uplink.Message, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.backlog, e.fits = backlog, fits
	return e.births()
}

// fit reports whether a message can go to the broker; one that cannot has
// its seq given back (numbered is the last message built).
func (e *Edge) fit(topic string, payload []byte) bool {
	if e.fits == nil || e.fits(topic, len(payload)) {
		return true
	}
	e.session.unnumber()
	return false
}

// Rebirth sends the births again, as an NCMD Node Control/Rebirth asks.
func (e *Edge) Rebirth() ([]uplink.Message, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.births()
}

func (e *Edge) births() ([]uplink.Message, error) {
	e.session.BdSeq = e.bdSeq
	now := e.now()
	nb, err := e.session.NodeBirth(now)
	if err != nil {
		return nil, err
	}
	msgs := []uplink.Message{{Topic: e.node.Topic(NBirth, ""), Payload: nb}}
	if !e.fit(e.node.Topic(NBirth, ""), nb) {
		return nil, fmt.Errorf("sparkplug: the NBIRTH of %d bytes is larger than the broker's maximum packet size", len(nb))
	}
	for _, d := range e.plan.Devices {
		st := e.devices[d.Name]
		current := st.current(d)
		db, err := e.session.DeviceBirth(d, current, now)
		if err != nil {
			return nil, err
		}
		if !e.fit(e.node.Topic(DBirth, d.Name), db) {
			// Not born here: its readings are refused as too large.
			st.born = false
			if !e.unknown["birth:"+d.Name] { // logged once
				e.unknown["birth:"+d.Name] = true
				e.log.Error("sparkplug_birth_too_large", "device", d.Name, "bytes", len(db),
					"hint", "the device's DBIRTH is larger than the broker's maximum packet size: it is not born on this broker and its readings are dropped as too_large; raise the broker's limit or split the device")
			}
			continue
		}
		msgs = append(msgs, uplink.Message{Topic: e.node.Topic(DBirth, d.Name), Payload: db})
		st.born = true
		if dead(d, current) {
			dd, err := e.session.DeviceDeath(now)
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, uplink.Message{Topic: e.node.Topic(DDeath, d.Name), Payload: dd})
			st.born = false
		}
	}
	return msgs, nil
}

// dead says whether every point of d is in error in known: the device
// stopped answering.
func dead(d *Device, known map[string]Known) bool {
	for _, m := range d.Metrics {
		if k, ok := known[m.Name]; !ok || k.Err == "" {
			return false
		}
	}
	return len(d.Metrics) > 0
}

// Compose turns a record into DDATA; into a DDEATH when it says the device
// stopped answering (nothing more while it stays so), and into a DBIRTH
// then DDATA when it answers again. Records from before the session began
// are historical.
func (e *Edge) Compose(rec buffer.Record) ([]uplink.Message, error) {
	name, body, ok := bytes.Cut(rec.Data, []byte{'\n'})
	if !ok {
		return nil, errors.New("sparkplug: malformed buffer entry")
	}
	r, err := parseReading(append([]byte{'{'}, body...))
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	d, ok := e.plan.Device(string(name))
	if !ok {
		return nil, fmt.Errorf("sparkplug: device %q is not in the births (removed from the config?)", name)
	}
	e.dropUnknown(d, &r)
	// Checked before anything is numbered or known: a reading refused
	// here leaves no gap in the seqs and no value a DBIRTH cannot carry.
	metrics, err := d.Data(r, rec.Seq <= e.backlog)
	if err != nil {
		return nil, err
	}
	st := e.devices[d.Name]
	now := e.now()
	if r.TS.Before(st.latest) {
		// Older than what the host was told (the backlog after live
		// readings, with max_rate): history, whatever it says.
		return e.history(d, st, metrics, now)
	}
	st.latest = r.TS
	for p, v := range r.Values {
		st.known[p] = Known{Value: v, TS: r.TS}
	}
	for p, msg := range r.Errors {
		st.known[p] = Known{TS: r.TS, Err: msg}
	}
	if len(r.Values) == 0 && dead(d, st.known) {
		if !st.born {
			return nil, nil // the host knows
		}
		st.born = false
		dd, err := e.session.DeviceDeath(now)
		if err != nil {
			return nil, err
		}
		return []uplink.Message{{Topic: e.node.Topic(DDeath, d.Name), Payload: dd}}, nil
	}
	var msgs []uplink.Message
	if !st.born {
		db, err := e.session.DeviceBirth(d, st.current(d), now)
		if err != nil {
			return nil, err
		}
		if !e.fit(e.node.Topic(DBirth, d.Name), db) {
			return nil, uplink.ErrTooLarge
		}
		msgs = append(msgs, uplink.Message{Topic: e.node.Topic(DBirth, d.Name), Payload: db})
	}
	data, err := e.session.DeviceData(metrics, now)
	if err != nil {
		return nil, err
	}
	if !e.fit(e.node.Topic(DData, d.Name), data) {
		if len(msgs) > 0 {
			e.session.unnumber() // the DBIRTH does not go either
		}
		return nil, uplink.ErrTooLarge
	}
	st.born = true
	return append(msgs, uplink.Message{Topic: e.node.Topic(DData, d.Name), Payload: data}), nil
}

// history composes an old reading of d as historical DDATA, leaving what
// the host knows of d alone: an old "device silent" is no DDEATH of a
// device that answers now. A device that is dead now is born for it (with
// what is current: null) and dies again after it, so the DDATA follows a
// DBIRTH as the specification wants.
func (e *Edge) history(d *Device, st *deviceState, metrics []*spb.Payload_Metric, now time.Time) ([]uplink.Message, error) {
	for _, m := range metrics {
		m.IsHistorical = proto.Bool(true)
	}
	var msgs []uplink.Message
	if !st.born {
		db, err := e.session.DeviceBirth(d, st.current(d), now)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, uplink.Message{Topic: e.node.Topic(DBirth, d.Name), Payload: db})
	}
	data, err := e.session.DeviceData(metrics, now)
	if err != nil {
		return nil, err
	}
	msgs = append(msgs, uplink.Message{Topic: e.node.Topic(DData, d.Name), Payload: data})
	if !st.born {
		dd, err := e.session.DeviceDeath(now)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, uplink.Message{Topic: e.node.Topic(DDeath, d.Name), Payload: dd})
	}
	for _, m := range msgs {
		if e.fits != nil && !e.fits(m.Topic, len(m.Payload)) {
			for range msgs {
				e.session.unnumber() // none of them goes: no gap
			}
			return nil, uplink.ErrTooLarge
		}
	}
	return msgs, nil
}

// dropUnknown removes from r the points d's births do not have (a point
// removed from the config while its readings waited on flash): the rest of
// the reading goes. Logged once per point.
func (e *Edge) dropUnknown(d *Device, r *reading) {
	for name := range r.Values {
		if _, ok := d.Metric(name); !ok {
			delete(r.Values, name)
			e.unknownPoint(d.Name, name)
		}
	}
	for name := range r.Errors {
		if _, ok := d.Metric(name); !ok {
			delete(r.Errors, name)
			e.unknownPoint(d.Name, name)
		}
	}
}

func (e *Edge) unknownPoint(device, point string) {
	key := device + "." + point
	if e.unknown[key] {
		return
	}
	e.unknown[key] = true
	e.log.Warn("sparkplug_point_dropped", "device", device, "point", point,
		"hint", "readings taken before a reload carry a point the births no longer have: it is left out, the rest of each reading goes (logged once)")
}

// End is the NDEATH of the session, published before a clean disconnect.
func (e *Edge) End() (uplink.Message, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	payload, err := NodeDeath(e.bdSeq, e.now())
	return uplink.Message{Topic: e.node.Topic(NDeath, ""), Payload: payload}, err
}

// Received handles NCMD (Node Control/Rebirth), DCMD (writes) and the
// primary host's STATE.
func (e *Edge) Received(topic string, payload []byte) uplink.Received {
	switch {
	case topic == e.node.Topic(NCmd, ""):
		return e.nodeCommand(payload)
	case e.host != "" && topic == e.stateTopic():
		return e.state(payload)
	}
	device, ok := strings.CutPrefix(topic, e.node.Topic(DCmd, "")+"/")
	if !ok {
		return uplink.Received{}
	}
	return uplink.Received{Commands: e.deviceCommand(device, payload)}
}

func (e *Edge) nodeCommand(payload []byte) uplink.Received {
	var p spb.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		e.log.Warn("sparkplug_command_unreadable", "type", NCmd, "err", err, "hint", "the payload is not a Sparkplug B protobuf")
		return uplink.Received{}
	}
	var r uplink.Received
	for _, m := range p.Metrics {
		if m.GetName() == RebirthMetric && m.GetBooleanValue() {
			r.Rebirth = true
			continue
		}
		e.log.Warn("sparkplug_command_unsupported", "type", NCmd, "metric", m.GetName(),
			"hint", "the edge node takes only Node Control/Rebirth = true")
	}
	return r
}

// deviceCommand turns a DCMD's metrics into writes of the device's points.
func (e *Edge) deviceCommand(device string, payload []byte) []uplink.Command {
	d, ok := e.plan.Device(device)
	if !ok {
		e.log.Warn("sparkplug_command_unknown_device", "device", device)
		return nil
	}
	var p spb.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		e.log.Warn("sparkplug_command_unreadable", "type", DCmd, "device", device, "err", err, "hint", "the payload is not a Sparkplug B protobuf")
		return nil
	}
	var cmds []uplink.Command
	for _, pm := range p.Metrics {
		m, ok := d.metricOf(pm)
		if !ok {
			e.log.Warn("sparkplug_command_unknown_metric", "device", device, "metric", pm.GetName(), "alias", pm.GetAlias(),
				"hint", "name or alias a metric of the device's DBIRTH")
			continue
		}
		v, err := commandValue(pm, m.Type)
		if err != nil {
			e.log.Warn("sparkplug_command_unreadable", "type", DCmd, "device", device, "metric", m.Name, "err", err)
			continue
		}
		cmds = append(cmds, uplink.Command{Device: device, Point: m.Name, Value: v})
	}
	return cmds
}

// metricOf finds a command's metric by name, else by alias.
func (d *Device) metricOf(pm *spb.Payload_Metric) (Metric, bool) {
	if pm.Name != nil {
		return d.Metric(pm.GetName())
	}
	for _, m := range d.Metrics {
		if pm.Alias != nil && m.Alias == pm.GetAlias() {
			return m, true
		}
	}
	return Metric{}, false
}

// commandValue is a command metric's value as the JSON a command carries;
// integers read as signed or not as the metric's type says.
func commandValue(pm *spb.Payload_Metric, t spb.DataType) (json.RawMessage, error) {
	signed := t == spb.DataType_Int8 || t == spb.DataType_Int16 || t == spb.DataType_Int32 || t == spb.DataType_Int64
	switch v := pm.Value.(type) {
	case *spb.Payload_Metric_BooleanValue:
		return strconv.AppendBool(nil, v.BooleanValue), nil
	case *spb.Payload_Metric_IntValue:
		if signed {
			return strconv.AppendInt(nil, int64(int32(v.IntValue)), 10), nil
		}
		return strconv.AppendUint(nil, uint64(v.IntValue), 10), nil
	case *spb.Payload_Metric_LongValue:
		if signed {
			return strconv.AppendInt(nil, int64(v.LongValue), 10), nil
		}
		return strconv.AppendUint(nil, v.LongValue, 10), nil
	case *spb.Payload_Metric_FloatValue:
		return json.Marshal(v.FloatValue)
	case *spb.Payload_Metric_DoubleValue:
		return json.Marshal(v.DoubleValue)
	case *spb.Payload_Metric_StringValue:
		return json.Marshal(v.StringValue)
	}
	return nil, fmt.Errorf("no value of a supported type (%T)", pm.Value)
}

// state follows the primary host's STATE: {"online":bool,"timestamp":ms};
// one older than the newest seen is a stale retained message, ignored.
func (e *Edge) state(payload []byte) uplink.Received {
	var s struct {
		Online    *bool  `json:"online"`
		Timestamp *int64 `json:"timestamp"`
	}
	if err := json.Unmarshal(payload, &s); err != nil || s.Online == nil || s.Timestamp == nil {
		e.log.Warn("sparkplug_state_unreadable", "host", e.host, "payload", string(payload),
			"hint", `a STATE message is {"online":true|false,"timestamp":<ms>} (Sparkplug 3.0)`)
		return uplink.Received{}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if *s.Timestamp < e.hostTS[e.broker] {
		return uplink.Received{}
	}
	e.hostTS[e.broker] = *s.Timestamp
	was := e.hostOnline
	e.hostOnline = *s.Online
	switch {
	case e.hostOnline && !was:
		e.log.Info("sparkplug_primary_host_online", "host", e.host)
		return uplink.Received{Online: true}
	case !e.hostOnline:
		return uplink.Received{Offline: true}
	}
	return uplink.Received{}
}
