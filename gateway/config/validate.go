package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"edgegw/board"
)

var nameRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// pointNameRe also allows dots: point names are JSON keys and one topic level.
var pointNameRe = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

var schemes = map[string]string{"tcp": "1883", "mqtt": "1883", "tls": "8883", "ssl": "8883", "mqtts": "8883"}

// source is where keys were written: a config or a profile, with the line of
// every key path it set.
type source struct {
	name  string
	lines map[string]int
}

// line returns the line of path, or of the nearest enclosing table that the
// file wrote, so a missing key is reported where it should have been.
func (f *source) line(path string) int {
	for p := path; p != ""; {
		if l, ok := f.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 1
}

func (f *source) set(path string) bool { _, ok := f.lines[path]; return ok }

func (f *source) errorf(path, format string, args ...any) error {
	return &Error{File: f.name, Line: f.line(path), Key: displayKey(path), Msg: fmt.Sprintf(format, args...)}
}

// validator collects problems with the lines of the keys they concern.
type validator struct {
	c    *Config
	f    *source
	errs []error
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, v.f.errorf(path, format, args...))
}

func (v *validator) intRange(path string, val, lo, hi int) {
	if val < lo || val > hi {
		v.errorf(path, "%d is out of range %d..%d", val, lo, hi)
	}
}

func (v *validator) positive(path string, d Duration) {
	if d <= 0 {
		v.errorf(path, "must be greater than zero")
	}
}

func (v *validator) name(path, val string, re *regexp.Regexp) {
	switch {
	case val == "":
		v.errorf(path, "required")
	case !re.MatchString(val):
		v.errorf(path, "%q may hold only letters, digits, '_' and '-'", val)
	}
}

func (c *Config) validate(check BusCheck) []error {
	v := &validator{c: c, f: c.file}
	v.gateway()
	v.mqtt()
	v.sparkplug()
	v.secrets()
	v.buffer()
	if l := c.Status.Listen; l != "" {
		if _, port, err := net.SplitHostPort(l); err != nil || port == "" {
			v.errorf("status.listen", "%q is not host:port", l)
		}
	}
	buses := v.buses()
	v.devices(buses)
	v.modbusServers(buses)
	if check != nil {
		for i := range c.Buses {
			check(c, i, v.busProblems(i))
		}
	}
	return v.errs
}

func (v *validator) gateway() {
	g := &v.c.Gateway
	v.name("gateway.id", g.ID, nameRe)
	if g.DataDir == "" {
		v.errorf("gateway.data_dir", "required")
	}
	if g.Board != "auto" && !slices.Contains(board.Names(), g.Board) {
		v.errorf("gateway.board", "%q is not auto or one of %s", g.Board, strings.Join(board.Names(), ", "))
	}
}

func (v *validator) mqtt() {
	m := &v.c.MQTT
	if len(m.Brokers) == 0 {
		v.errorf("mqtt.brokers", "at least one broker URL is required")
	}
	for i, b := range m.Brokers {
		norm, err := normalizeBrokerURL(b)
		if err != nil {
			v.errorf(fmt.Sprintf("mqtt.brokers[%d]", i), "%v", err)
			continue
		}
		m.Brokers[i] = norm
	}
	if m.BrokerOrder != "ordered" && m.BrokerOrder != "spread" {
		v.errorf("mqtt.broker_order", "%q is not ordered or spread", m.BrokerOrder)
	}
	if m.Protocol != "auto" && m.Protocol != "5" && m.Protocol != "3.1.1" {
		v.errorf("mqtt.protocol", "%q is not auto, 5 or 3.1.1", m.Protocol)
	}
	if m.ClientID == "" && m.ClientIDDefault(v.c.Gateway.ID) != "" {
		m.ClientID = m.ClientIDDefault(v.c.Gateway.ID)
	}
	v.intRange("mqtt.qos", m.QoS, 0, 2)
	if m.TopicPrefix == "" || strings.ContainsAny(m.TopicPrefix, "+#") || strings.HasPrefix(m.TopicPrefix, "/") || strings.HasSuffix(m.TopicPrefix, "/") {
		v.errorf("mqtt.topic_prefix", "%q must be non-empty, without + or #, and not start or end with /", m.TopicPrefix)
	}
	if d := m.KeepAlive.D(); d < time.Second || d > math.MaxUint16*time.Second {
		v.errorf("mqtt.keepalive", "%s is out of range 1s..18h12m15s", d)
	}
	v.positive("mqtt.connect_timeout", m.ConnectTimeout)
	v.intRange("mqtt.max_inflight", m.MaxInflight, 1, math.MaxUint16)
	if (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
		v.errorf("mqtt.tls.key_file", "cert_file and key_file go together: set both or neither")
	}
	if m.PasswordFile != "" && m.Username == "" {
		v.errorf("mqtt.password_file", "set username too: a password is sent only with a username")
	}
	v.bandwidth(m)
}

// The payload key's values.
const (
	PayloadJSON      = "json"      // the JSON of docs/MQTT.md, the default
	PayloadSparkplug = "sparkplug" // Sparkplug B (docs/SPARKPLUG.md)
)

// BatchTopicLevel is the last topic level of batches, after the gateway's
// id, where a device's name would be.
const BatchTopicLevel = "batch"

// StatusTopicLevel is the last topic level of the retained status, after
// the gateway's id.
const StatusTopicLevel = "status"

// bandwidth checks the keys of batches, compression and the rate cap.
func (v *validator) bandwidth(m *MQTT) {
	switch m.Payload {
	case PayloadJSON:
	case PayloadSparkplug:
		// Sparkplug has no batches: each DDATA is one device's metrics.
		if m.BatchMax != 1 {
			v.errorf("mqtt.batch_max", "payload = %q sends each reading alone: leave batch_max at 1", PayloadSparkplug)
		}
	default:
		v.errorf("mqtt.payload", "%q is not %s or %s", m.Payload, PayloadJSON, PayloadSparkplug)
	}
	v.intRange("mqtt.batch_max", m.BatchMax, 1, 10000)
	if m.BatchBytes < 1<<10 || m.BatchBytes > 16<<20 {
		v.errorf("mqtt.batch_bytes", "%d bytes is out of range 1KiB..16MiB", m.BatchBytes)
	}
	if d := m.BatchLinger.D(); d < 0 || d > time.Hour {
		v.errorf("mqtt.batch_linger", "%s is out of range 0s..1h", d)
	}
	switch m.Compression {
	case "none":
	case "gzip", "zstd":
		if m.BatchMax == 1 {
			v.errorf("mqtt.compression", "compression applies to batches only: set batch_max above 1 too")
		}
	default:
		v.errorf("mqtt.compression", "%q is not none, gzip or zstd", m.Compression)
	}
	if _, err := ParseRate(m.MaxRate); err != nil {
		v.errorf("mqtt.max_rate", "%v", err)
	}
}

// sparkplug checks [sparkplug] when it is used, and sets the edge node's
// default id.
func (v *validator) sparkplug() {
	if v.c.MQTT.Payload != PayloadSparkplug {
		return
	}
	s := &v.c.Sparkplug
	if s.EdgeNodeID == "" {
		s.EdgeNodeID = v.c.Gateway.ID
	}
	v.sparkplugID("sparkplug.group_id", s.GroupID, true)
	v.sparkplugID("sparkplug.edge_node_id", s.EdgeNodeID, true)
	v.sparkplugID("sparkplug.primary_host_id", s.PrimaryHostID, false)
	v.intRange("sparkplug.data_qos", s.DataQoS, 0, 1)
}

// sparkplugID checks a Sparkplug id: any UTF-8 but the MQTT topic
// separator and wildcards.
func (v *validator) sparkplugID(path, id string, required bool) {
	switch {
	case id == "" && required:
		v.errorf(path, "required with payload = %q", PayloadSparkplug)
	case strings.ContainsAny(id, "/+#"):
		v.errorf(path, "%q may not hold '/', '+' or '#': it is a topic level", id)
	case !utf8.ValidString(id):
		v.errorf(path, "%q is not UTF-8", id)
	}
}

// ClientIDDefault is the client id used when client_id is empty.
func (m *MQTT) ClientIDDefault(gatewayID string) string {
	if gatewayID == "" {
		return ""
	}
	return "edgegw-" + gatewayID
}

// normalizeBrokerURL checks a broker URL and adds the scheme's default port.
func normalizeBrokerURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a URL", s)
	}
	defPort, ok := schemes[u.Scheme]
	if u.Scheme == "ws" || u.Scheme == "wss" {
		return "", fmt.Errorf("%q: MQTT over websockets is not supported yet; use tcp:// or tls://", s)
	}
	if !ok {
		return "", fmt.Errorf("%q: scheme must be one of tcp, mqtt, tls, ssl, mqtts", s)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("%q has no host", s)
	}
	if p := u.Port(); p == "" {
		u.Host = net.JoinHostPort(u.Hostname(), defPort)
	} else if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: port must be 1..65535", s)
	}
	if u.User != nil {
		return "", fmt.Errorf("%q: credentials belong in username and password_file, not the URL", s)
	}
	return u.String(), nil
}

func (v *validator) buffer() {
	b := &v.c.Buffer
	if b.MaxBytes < 1<<20 {
		v.errorf("buffer.max_bytes", "%d bytes is too small: at least 1MiB", b.MaxBytes)
	}
	v.positive("buffer.max_age", b.MaxAge)
	if d := b.CommitInterval.D(); d < time.Millisecond || d > time.Minute {
		v.errorf("buffer.commit_interval", "%s is out of range 1ms..1m", d)
	}
}

// buses checks what every bus has whatever its protocol (its driver checks
// the rest) and returns them by name.
func (v *validator) buses() map[string]*Bus {
	byName := map[string]*Bus{}
	for i := range v.c.Buses {
		b := &v.c.Buses[i]
		p := fmt.Sprintf("bus[%d]", i)
		v.name(p+".name", b.Name, nameRe)
		if _, dup := byName[b.Name]; dup && b.Name != "" {
			v.errorf(p+".name", "bus %q is defined twice", b.Name)
		}
		byName[b.Name] = b
		if b.Protocol == "" {
			v.errorf(p+".protocol", "required")
		}
		v.positive(p+".timeout", b.Timeout)
	}
	return byName
}

func (v *validator) devices(buses map[string]*Bus) {
	seen := map[string]bool{}
	v.c.origins = make([][]origin, len(v.c.Devices))
	for i := range v.c.Devices {
		d := &v.c.Devices[i]
		p := fmt.Sprintf("device[%d]", i)
		v.name(p+".name", d.Name, nameRe)
		if seen[d.Name] && d.Name != "" {
			v.errorf(p+".name", "device %q is defined twice", d.Name)
		}
		seen[d.Name] = true
		if (d.Name == BatchTopicLevel || d.Name == StatusTopicLevel) && v.c.MQTT.Payload == PayloadJSON {
			// Readings go to {prefix}/{id}/{device}: the gateway's own topics.
			v.errorf(p+".name", "%q collides with the gateway's own topic %s/%s/%s (its %s): rename the device",
				d.Name, v.c.MQTT.TopicPrefix, v.c.Gateway.ID, d.Name, map[string]string{BatchTopicLevel: "batches", StatusTopicLevel: "retained online/offline status"}[d.Name])
		}
		if _, ok := buses[d.Bus]; d.Bus == "" {
			v.errorf(p+".bus", "required")
		} else if !ok {
			v.errorf(p+".bus", "no [[bus]] is named %q", d.Bus)
		}
		if d.Interval.D() < 10*time.Millisecond {
			v.errorf(p+".interval", "%s is too short: at least 10ms", d.Interval)
		}
		if d.Report != ReportEveryPoll && d.Report != ReportChange {
			v.errorf(p+".report", "%q is not %s or %s", d.Report, ReportEveryPoll, ReportChange)
		}
		if d.FullEvery.D() < time.Second {
			v.errorf(p+".full_every", "%s is too short: at least 1s", d.FullEvery)
		}
		names := map[string]bool{}
		for j := range d.Points {
			pt := &d.Points[j]
			pp := fmt.Sprintf("%s.point[%d]", p, j)
			v.name(pp+".name", pt.Name, pointNameRe)
			if names[pt.Name] && pt.Name != "" {
				v.errorf(pp+".name", "point %q is defined twice in device %q", pt.Name, d.Name)
			}
			names[pt.Name] = true
			v.deadband(pp, pt)
			v.c.origins[i] = append(v.c.origins[i], origin{v.f, pp})
		}
		if d.Profile != "" {
			v.profile(i, p, d)
		}
		if len(d.Points) == 0 {
			v.errorf(p, "device %q has no points: add [[device.point]] tables or a profile", d.Name)
		}
	}
}

// deadband checks a point's deadbands: numbers of engineering units,
// for numeric points (bools and strings report any change).
func (v *validator) deadband(path string, pt *Point) {
	if pt.Deadband < 0 || math.IsNaN(pt.Deadband) || math.IsInf(pt.Deadband, 0) {
		v.errorf(path+".deadband", "%g: want a finite number ≥ 0", pt.Deadband)
	}
	if !(pt.DeadbandPercent >= 0 && pt.DeadbandPercent <= 100) {
		v.errorf(path+".deadband_percent", "%g is out of range 0..100", pt.DeadbandPercent)
	}
	if (pt.Type == "bool" || pt.Type == "string") && (pt.Deadband != 0 || pt.DeadbandPercent != 0) {
		v.errorf(path+".deadband", "a %s point reports any change: no deadband", pt.Type)
	}
}

// profileDoc is a device profile file: points shared by devices of one model.
type profileDoc struct {
	Description string  `toml:"description"`
	Points      []Point `toml:"point"`
}

// profile reads the device's profile and adds its points, except those the
// device overrides by name. The device's own points keep their positions, so
// their lines stay right; profile points keep the lines of the profile file.
func (v *validator) profile(i int, p string, d *Device) {
	if !nameRe.MatchString(d.Profile) {
		v.errorf(p+".profile", "%q may hold only letters, digits, '_' and '-'", d.Profile)
		return
	}
	name := filepath.Join(v.c.Gateway.ProfilesDir, d.Profile+".toml")
	data, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		if packaged, perr := packagedProfiles.ReadFile("profiles/" + d.Profile + ".toml"); perr == nil {
			name, data, err = "(built in) "+d.Profile+".toml", packaged, nil
		}
	}
	if err != nil {
		v.errorf(p+".profile", "no profile %q in %s or built in (%v)", d.Profile, v.c.Gateway.ProfilesDir, errors.Unwrap(err))
		return
	}
	root, derr := parseTOML(data)
	if derr != nil {
		v.errs = append(v.errs, &Error{File: name, Line: derr.line, Key: derr.key, Msg: derr.msg})
		return
	}
	var doc profileDoc
	dec := &decoder{file: name, lines: map[string]int{}}
	dec.decodeTable(root, reflect.ValueOf(&doc).Elem(), "")
	if len(dec.errs) > 0 {
		v.errs = append(v.errs, dec.errs...)
		return
	}
	own := map[string]bool{}
	for _, pt := range d.Points {
		own[pt.Name] = true
	}
	pv := &validator{c: v.c, f: &source{name: name, lines: dec.lines}}
	for j := range doc.Points {
		pt := &doc.Points[j]
		pp := fmt.Sprintf("point[%d]", j)
		pv.name(pp+".name", pt.Name, pointNameRe)
		pv.deadband(pp, pt)
		if !own[pt.Name] {
			d.Points = append(d.Points, *pt)
			v.c.origins[i] = append(v.c.origins[i], origin{pv.f, pp})
		}
	}
	v.errs = append(v.errs, pv.errs...)
}

// modbusServers checks the [[modbus_server]] tables; buses are by name.
func (v *validator) modbusServers(buses map[string]*Bus) {
	listens := map[string]bool{}
	for i := range v.c.ModbusServers {
		m := &v.c.ModbusServers[i]
		p := fmt.Sprintf("modbus_server[%d]", i)
		if _, port, err := net.SplitHostPort(m.Listen); err != nil || port == "" {
			v.errorf(p+".listen", "%q is not host:port", m.Listen)
		} else if listens[m.Listen] {
			v.errorf(p+".listen", "%q is served twice", m.Listen)
		}
		listens[m.Listen] = true
		b, ok := buses[m.Bus]
		switch {
		case m.Bus == "":
			v.errorf(p+".bus", "required")
		case !ok:
			v.errorf(p+".bus", "no [[bus]] is named %q", m.Bus)
		case !strings.HasPrefix(b.Protocol, "modbus-"):
			v.errorf(p+".bus", "bus %q speaks %s: a Modbus server stands only in front of a modbus-rtu, modbus-ascii or modbus-tcp bus", m.Bus, b.Protocol)
		}
		seen := map[int]bool{}
		for j, u := range m.Units {
			v.intRange(fmt.Sprintf("%s.units[%d]", p, j), u, 1, 247)
			if seen[u] {
				v.errorf(fmt.Sprintf("%s.units[%d]", p, j), "unit %d is listed twice", u)
			}
			seen[u] = true
		}
		if len(m.Units) == 0 && ok && len(v.c.DevicesOn(m.Bus)) == 0 {
			v.errorf(p+".units", "bus %q has no devices: list the unit ids to answer for", m.Bus)
		}
		if m.Cache < 0 {
			v.errorf(p+".cache", "must not be negative")
		}
		v.intRange(p+".max_clients", m.MaxClients, 1, 1000)
	}
}

// ServedUnits returns the unit ids a Modbus server answers for: its units,
// or those of the devices on its bus.
func (c *Config) ServedUnits(m *ModbusServer) []byte {
	var out []byte
	for _, u := range m.Units {
		out = append(out, byte(u))
	}
	if len(out) == 0 {
		for _, i := range c.DevicesOn(m.Bus) {
			if u := byte(c.Devices[i].UnitID); !slices.Contains(out, u) {
				out = append(out, u)
			}
		}
	}
	return out
}
