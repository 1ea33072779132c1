package gateway

import (
	"encoding/hex"
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

	"edgegw/board"
)

var nameRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// pointNameRe also allows dots: point names are JSON keys and one topic level.
var pointNameRe = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// Protocols a bus may speak.
const (
	ProtoModbusRTU   = "modbus-rtu"
	ProtoModbusASCII = "modbus-ascii"
	ProtoModbusTCP   = "modbus-tcp"
	ProtoSerial      = "serial"
)

var (
	protocols  = []string{ProtoModbusRTU, ProtoModbusASCII, ProtoModbusTCP, ProtoSerial}
	parities   = []string{"none", "even", "odd"}
	framings   = []string{"line", "fixed"}
	formats    = []string{"kv", "csv", "regex", "binary"}
	checksums  = []string{"", "sum8", "xor8", "crc16"}
	tables     = []string{"holding", "input", "coil", "discrete"}
	types      = []string{"bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"}
	byteOrders = []string{"ABCD", "DCBA", "BADC", "CDAB"}
	schemes    = map[string]string{"tcp": "1883", "mqtt": "1883", "tls": "8883", "ssl": "8883", "mqtts": "8883"}
)

// validator collects problems with the lines of the keys they concern.
type validator struct {
	c    *Config
	errs []error
}

// line returns the line of path, or of the nearest enclosing table that the
// file wrote, so a missing key is reported where it should have been.
func (v *validator) line(path string) int {
	for p := path; p != ""; {
		if l, ok := v.c.lines[p]; ok {
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

func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, &ConfigError{File: v.c.File, Line: v.line(path), Key: displayKey(path), Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) set(path string) bool { _, ok := v.c.lines[path]; return ok }

func (v *validator) oneOf(path, val string, allowed []string) {
	if !slices.Contains(allowed, val) {
		v.errorf(path, "%q is not one of %s", val, strings.Join(allowed, ", "))
	}
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

func (c *Config) validate() []error {
	v := &validator{c: c}
	v.gateway()
	v.mqtt()
	v.buffer()
	if l := c.Status.Listen; l != "" {
		if _, port, err := net.SplitHostPort(l); err != nil || port == "" {
			v.errorf("status.listen", "%q is not host:port", l)
		}
	}
	buses := v.buses()
	v.devices(buses)
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
}

// ClientIDDefault is the client id used when client_id is empty.
func (m *MQTTConfig) ClientIDDefault(gatewayID string) string {
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

// buses validates every bus and returns them by name.
func (v *validator) buses() map[string]*BusConfig {
	byName := map[string]*BusConfig{}
	for i := range v.c.Buses {
		b := &v.c.Buses[i]
		p := fmt.Sprintf("bus[%d]", i)
		v.name(p+".name", b.Name, nameRe)
		if _, dup := byName[b.Name]; dup && b.Name != "" {
			v.errorf(p+".name", "bus %q is defined twice", b.Name)
		}
		byName[b.Name] = b
		v.oneOf(p+".protocol", b.Protocol, protocols)
		serialLine := b.Protocol != ProtoModbusTCP
		if b.Protocol == ProtoModbusTCP {
			if _, port, err := net.SplitHostPort(b.Address); err != nil || port == "" {
				v.errorf(p+".address", "%q is not host:port (modbus-tcp needs address)", b.Address)
			}
			for _, k := range []string{"device", "baud", "data_bits", "parity", "stop_bits", "rs485"} {
				if v.set(p + "." + k) {
					v.errorf(p+"."+k, "applies to serial buses only, not %s", b.Protocol)
				}
			}
		} else if v.set(p + ".address") {
			v.errorf(p+".address", "applies to modbus-tcp only; a serial bus uses device")
		}
		if serialLine && b.Device == "" {
			v.errorf(p+".device", "required for %s (the serial port, like /dev/ttyUSB0)", b.Protocol)
		}
		v.intRange(p+".baud", b.Baud, 50, 4000000)
		v.intRange(p+".data_bits", b.DataBits, 5, 8)
		v.oneOf(p+".parity", b.Parity, parities)
		v.intRange(p+".stop_bits", b.StopBits, 1, 2)
		v.positive(p+".timeout", b.Timeout)
		v.intRange(p+".retries", b.Retries, 0, 10)
		v.intRange(p+".max_gap", b.MaxGap, -1, 125)
		if b.Protocol == ProtoSerial && v.set(p+".max_gap") {
			v.errorf(p+".max_gap", "applies to Modbus buses only")
		}
		if b.Protocol == ProtoSerial {
			v.oneOf(p+".framing", b.Framing, framings)
			if b.Framing == "line" && b.Delimiter == "" {
				v.errorf(p+".delimiter", "must not be empty for line framing")
			}
			if b.Framing == "fixed" {
				v.intRange(p+".frame_length", b.FrameLength, 1, 4096)
				v.oneOf(p+".checksum", b.Checksum, checksums)
				if h, err := hex.DecodeString(b.Header); err != nil {
					v.errorf(p+".header", "%q is not hex bytes, like \"AA55\"", b.Header)
				} else if len(h)+checksumSize(b.Checksum) >= b.FrameLength && b.FrameLength > 0 {
					v.errorf(p+".header", "header and checksum leave no room in a %d-byte frame", b.FrameLength)
				}
			} else {
				for _, k := range []string{"header", "checksum"} {
					if v.set(p + "." + k) {
						v.errorf(p+"."+k, "applies to framing = \"fixed\" only")
					}
				}
			}
		} else {
			for _, k := range []string{"framing", "delimiter", "frame_length", "header", "checksum"} {
				if v.set(p + "." + k) {
					v.errorf(p+"."+k, "applies to protocol serial only, not %s", b.Protocol)
				}
			}
		}
	}
	return byName
}

func (v *validator) devices(buses map[string]*BusConfig) {
	seen := map[string]bool{}
	for i := range v.c.Devices {
		d := &v.c.Devices[i]
		p := fmt.Sprintf("device[%d]", i)
		v.name(p+".name", d.Name, nameRe)
		if seen[d.Name] && d.Name != "" {
			v.errorf(p+".name", "device %q is defined twice", d.Name)
		}
		seen[d.Name] = true
		bus, ok := buses[d.Bus]
		switch {
		case d.Bus == "":
			v.errorf(p+".bus", "required")
		case !ok:
			v.errorf(p+".bus", "no [[bus]] is named %q", d.Bus)
		}
		if d.Interval.D() < 10*time.Millisecond {
			v.errorf(p+".interval", "%s is too short: at least 10ms", d.Interval)
		}
		isSerial := ok && bus.Protocol == ProtoSerial
		if isSerial && d.Format == "binary" && bus.Framing != "fixed" {
			v.errorf(p+".format", "binary needs a bus with framing = \"fixed\"")
		}
		own := len(d.Points)
		if d.Profile != "" {
			v.profile(p, d, ok, isSerial)
		}
		if isSerial {
			v.serialDevice(p, d)
		} else {
			v.intRange(p+".unit_id", d.UnitID, 0, 247)
			for _, k := range []string{"request", "format", "pattern"} {
				if v.set(p + "." + k) {
					v.errorf(p+"."+k, "applies to devices on a serial bus only")
				}
			}
		}
		if len(d.Points) == 0 {
			v.errorf(p, "device %q has no points: add [[device.point]] tables or a profile", d.Name)
		}
		names := map[string]bool{}
		for j := range d.Points[:own] {
			pt := &d.Points[j]
			pp := fmt.Sprintf("%s.point[%d]", p, j)
			v.name(pp+".name", pt.Name, pointNameRe)
			if names[pt.Name] && pt.Name != "" {
				v.errorf(pp+".name", "point %q is defined twice in device %q", pt.Name, d.Name)
			}
			names[pt.Name] = true
			if ok {
				v.point(pp, pt, isSerial)
			}
		}
	}
}

// profileDoc is a device profile file: points shared by devices of one model.
type profileDoc struct {
	Description string        `toml:"description"`
	Points      []PointConfig `toml:"point"`
}

// profile reads the device's profile and adds its points, except those the
// device overrides by name. The device's own points keep their positions, so
// their lines stay right; profile points are checked against the profile file.
func (v *validator) profile(p string, d *DeviceConfig, busKnown, serial bool) {
	if !nameRe.MatchString(d.Profile) {
		v.errorf(p+".profile", "%q may hold only letters, digits, '_' and '-'", d.Profile)
		return
	}
	file := filepath.Join(v.c.Gateway.ProfilesDir, d.Profile+".toml")
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		if packaged, perr := packagedProfiles.ReadFile("profiles/" + d.Profile + ".toml"); perr == nil {
			file, data, err = "(built in) "+d.Profile+".toml", packaged, nil
		}
	}
	if err != nil {
		v.errorf(p+".profile", "no profile %q in %s or built in (%v)", d.Profile, v.c.Gateway.ProfilesDir, errors.Unwrap(err))
		return
	}
	root, derr := parseTOML(data)
	if derr != nil {
		v.errs = append(v.errs, &ConfigError{File: file, Line: derr.line, Key: derr.key, Msg: derr.msg})
		return
	}
	var doc profileDoc
	dec := &decoder{file: file, lines: map[string]int{}}
	dec.decodeTable(root, reflect.ValueOf(&doc).Elem(), "")
	if len(dec.errs) > 0 {
		v.errs = append(v.errs, dec.errs...)
		return
	}
	own := map[string]bool{}
	for _, pt := range d.Points {
		own[pt.Name] = true
	}
	pv := &validator{c: &Config{File: file, lines: dec.lines}}
	for j := range doc.Points {
		pt := &doc.Points[j]
		pp := fmt.Sprintf("point[%d]", j)
		pv.name(pp+".name", pt.Name, pointNameRe)
		if busKnown {
			pv.point(pp, pt, serial)
		}
		if !own[pt.Name] {
			d.Points = append(d.Points, *pt)
		}
	}
	v.errs = append(v.errs, pv.errs...)
}

func (v *validator) serialDevice(p string, d *DeviceConfig) {
	if v.set(p + ".unit_id") {
		v.errorf(p+".unit_id", "applies to Modbus devices only")
	}
	v.oneOf(p+".format", d.Format, formats)
	if d.Format == "regex" {
		re, err := regexp.Compile(d.Pattern)
		switch {
		case d.Pattern == "":
			v.errorf(p+".pattern", "required for format regex")
		case err != nil:
			v.errorf(p+".pattern", "bad regular expression: %v", err)
		case len(re.SubexpNames()) < 2 || slices.Equal(re.SubexpNames()[1:], make([]string, len(re.SubexpNames())-1)):
			v.errorf(p+".pattern", "needs named groups, like (?P<temp>[0-9.]+)")
		}
	} else if v.set(p + ".pattern") {
		v.errorf(p+".pattern", "applies to format regex only")
	}
}

// registerCount is how many 16-bit registers a point of type t spans.
func registerCount(t string, length int) int {
	switch t {
	case "int32", "uint32", "float32":
		return 2
	case "int64", "uint64", "float64":
		return 4
	case "string":
		return length
	}
	return 1
}

func (v *validator) point(pp string, pt *PointConfig, serial bool) {
	if !isFinite(pt.Scale) || !isFinite(pt.Offset) {
		v.errorf(pp+".scale", "scale and offset must be finite numbers")
	}
	if serial {
		if pt.Type == "" {
			pt.Type = "float64"
		}
		v.oneOf(pp+".type", pt.Type, types)
		if pt.Field == "" {
			v.errorf(pp+".field", "required on a serial device (kv key, csv column, regex group or binary byte offset)")
		}
		v.oneOf(pp+".byte_order", pt.ByteOrder, byteOrders)
		for _, k := range []string{"table", "address", "length", "bit", "writable"} {
			if v.set(pp + "." + k) {
				v.errorf(pp+"."+k, "applies to Modbus points only")
			}
		}
		return
	}
	if v.set(pp + ".field") {
		v.errorf(pp+".field", "applies to serial points only")
	}
	if pt.Table == "" {
		pt.Table = "holding"
	}
	v.oneOf(pp+".table", pt.Table, tables)
	bitTable := pt.Table == "coil" || pt.Table == "discrete"
	if pt.Type == "" {
		pt.Type = "uint16"
		if bitTable || pt.Bit >= 0 {
			pt.Type = "bool"
		}
	}
	v.oneOf(pp+".type", pt.Type, types)
	v.oneOf(pp+".byte_order", pt.ByteOrder, byteOrders)
	v.intRange(pp+".address", pt.Address, 0, 65535)
	switch {
	case bitTable && pt.Type != "bool":
		v.errorf(pp+".type", "a %s point is a bool, not %s", pt.Table, pt.Type)
	case bitTable && pt.Bit >= 0:
		v.errorf(pp+".bit", "applies to register tables only, not %s", pt.Table)
	case !bitTable && pt.Type == "bool" && pt.Bit < 0:
		v.errorf(pp+".bit", "a bool from a %s register needs bit = 0..15", pt.Table)
	case pt.Bit >= 0 && pt.Type != "bool":
		v.errorf(pp+".bit", "applies to type bool only")
	}
	v.intRange(pp+".bit", pt.Bit, -1, 15)
	if pt.Type == "string" {
		v.intRange(pp+".length", pt.Length, 1, 125)
	} else if pt.Length != 0 {
		v.errorf(pp+".length", "applies to type string only")
	}
	if !bitTable {
		if end := pt.Address + registerCount(pt.Type, pt.Length) - 1; end > 65535 && pt.Address <= 65535 {
			v.errorf(pp+".address", "a %s at %d runs past register 65535", pt.Type, pt.Address)
		}
	}
	if pt.Writable && (pt.Table == "input" || pt.Table == "discrete") {
		v.errorf(pp+".writable", "%s is read-only in Modbus: only holding and coil points are writable", pt.Table)
	}
}

// checksumSize is how many bytes a frame's checksum takes.
func checksumSize(kind string) int {
	switch kind {
	case "sum8", "xor8":
		return 1
	case "crc16":
		return 2
	}
	return 0
}

func isFinite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
