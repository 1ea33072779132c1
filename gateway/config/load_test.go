package config_test

import (
	"edgegw/gateway"
	"edgegw/gateway/config"

	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConfigFull(t *testing.T) {
	cfg, err := gateway.LoadConfig("testdata/full.toml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := cfg.MQTT.Brokers[2], "mqtt://broker:1883"; got != want {
		t.Errorf("default port: got %q, want %q", got, want)
	}
	if cfg.MQTT.BrokerOrder != "spread" || cfg.MQTT.FailbackAfter.D() != 2*time.Minute {
		t.Errorf("broker_order %q, failback_after %s", cfg.MQTT.BrokerOrder, cfg.MQTT.FailbackAfter.D())
	}
	if got, want := cfg.MQTT.ClientID, "edgegw-line3-pi"; got != want {
		t.Errorf("client id: got %q, want %q", got, want)
	}
	if got, want := cfg.Buffer.MaxBytes, config.Size(128<<20); got != want {
		t.Errorf("max_bytes: got %d, want %d", got, want)
	}
	if got, want := cfg.Buses[2].Delimiter, "\r\n"; got != want {
		t.Errorf("delimiter: got %q, want %q", got, want)
	}
	if got := cfg.Buses[1].Timeout.D(); got != time.Second {
		t.Errorf("bus default timeout: got %s", got)
	}
	pts := cfg.Devices[0].Points
	if pts[1].Address != 0x100 || pts[1].ByteOrder != "CDAB" || pts[1].Scale != 0.01 {
		t.Errorf("energy_total decoded wrong: %+v", pts[1])
	}
	// An empty table or type takes its driver's default (holding; bool on
	// bit tables, uint16 on registers, float64 on serial lines).
	if pts[3].Type != "" || pts[3].Bit != -1 {
		t.Errorf("coil point defaults: %+v", pts[3])
	}
	if p := cfg.Devices[1].Points[0]; p.Table != "" || p.Scale != 1 || p.ByteOrder != "ABCD" {
		t.Errorf("point defaults: %+v", p)
	}
	if cfg.Devices[2].UnitID != 1 || cfg.Devices[2].Points[0].Type != "" {
		t.Errorf("serial device defaults: %+v", cfg.Devices[2])
	}
}

func TestExampleConfigsAreValid(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.toml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, f := range files {
		if _, err := gateway.LoadConfig(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

const minimal = `
[gateway]
id = "gw"
[mqtt]
brokers = ["tcp://127.0.0.1:1883"]
[[bus]]
name = "b"
protocol = "modbus-tcp"
address = "127.0.0.1:502"
[[device]]
name = "d"
bus = "b"
  [[device.point]]
  name = "p"
`

// TestParseConfigErrors checks that each broken config is reported at the
// right line and key, with the right message, and without a panic.
func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // each "LINE: key: message fragment"
	}{
		{"empty file", ``, []string{"1: gateway.id: required", "1: mqtt.brokers: at least one"}},
		{"syntax error", "[gateway]\nid = \"gw\nx", []string{"2: syntax error"}},
		{"unknown key", minimal + "  registr = 4\n", []string{"15: device.point.registr: unknown key"}},
		{"typo suggestion", strings.Replace(minimal, `address = "127.0.0.1:502"`, `adress = "127.0.0.1:502"`, 1), []string{`9: bus.adress: unknown key (did you mean "address"?)`}},
		{"unknown table", minimal + "[mqqt]\nqos = 1\n", []string{"15: mqqt: unknown key (did you mean \"mqtt\"?)"}},
		{"wrong type", strings.Replace(minimal, `name = "p"`, `name = 5`, 1), []string{"14: device.point.name: want a string, got an integer"}},
		{"qos out of range", strings.Replace(minimal, `[mqtt]`, "[mqtt]\nqos = 3", 1), []string{"5: mqtt.qos: 3 is out of range 0..2"}},
		{"broker_order unknown", strings.Replace(minimal, `[mqtt]`, "[mqtt]\nbroker_order = \"random\"", 1), []string{"5: mqtt.broker_order: \"random\" is not ordered or spread"}},
		{"failback_after negative", strings.Replace(minimal, `[mqtt]`, "[mqtt]\nfailback_after = \"-1s\"", 1), []string{"5: mqtt.failback_after: duration \"-1s\" must not be negative"}},
		{"command_ttl negative", strings.Replace(minimal, `[mqtt]`, "[mqtt]\ncommand_ttl = \"-1s\"", 1), []string{"5: mqtt.command_ttl: duration \"-1s\" must not be negative"}},
		{"payload unknown", strings.Replace(minimal, `[mqtt]`, "[mqtt]\npayload = \"xml\"", 1), []string{`5: mqtt.payload: "xml" is not json or sparkplug`}},
		{"sparkplug batches", strings.Replace(minimal, `[mqtt]`, "[mqtt]\npayload = \"sparkplug\"\nbatch_max = 10", 1), []string{`6: mqtt.batch_max: payload = "sparkplug" sends each reading alone: leave batch_max at 1`}},
		{"sparkplug group with a slash", strings.Replace(minimal, `[mqtt]`, "[sparkplug]\ngroup_id = \"a/b\"\n[mqtt]\npayload = \"sparkplug\"", 1), []string{`5: sparkplug.group_id: "a/b" may not hold '/', '+' or '#': it is a topic level`}},
		{"sparkplug host wildcard", strings.Replace(minimal, `[mqtt]`, "[sparkplug]\nprimary_host_id = \"scada+\"\n[mqtt]\npayload = \"sparkplug\"", 1), []string{`5: sparkplug.primary_host_id: "scada+" may not hold '/', '+' or '#': it is a topic level`}},
		{"batch_max zero", strings.Replace(minimal, `[mqtt]`, "[mqtt]\nbatch_max = 0", 1), []string{`5: mqtt.batch_max: 0 is out of range 1..10000`}},
		{"batch_bytes tiny", strings.Replace(minimal, `[mqtt]`, "[mqtt]\nbatch_bytes = \"100B\"", 1), []string{`5: mqtt.batch_bytes: 100 bytes is out of range 1KiB..16MiB`}},
		{"batch_linger too long", strings.Replace(minimal, `[mqtt]`, "[mqtt]\nbatch_linger = \"2h\"", 1), []string{`5: mqtt.batch_linger: 2h0m0s is out of range 0s..1h`}},
		{"compression unknown", strings.Replace(minimal, `[mqtt]`, "[mqtt]\nbatch_max = 10\ncompression = \"brotli\"", 1), []string{`6: mqtt.compression: "brotli" is not none, gzip or zstd`}},
		{"compression without batches", strings.Replace(minimal, `[mqtt]`, "[mqtt]\ncompression = \"zstd\"", 1), []string{`5: mqtt.compression: compression applies to batches only`}},
		{"max_rate without /s", strings.Replace(minimal, `[mqtt]`, "[mqtt]\nmax_rate = \"20KiB\"", 1), []string{`5: mqtt.max_rate: bad rate "20KiB"`}},
		{"max_rate zero", strings.Replace(minimal, `[mqtt]`, "[mqtt]\nmax_rate = \"0 readings/s\"", 1), []string{`5: mqtt.max_rate: bad rate`}},
		{"device named batch", strings.Replace(minimal, `name = "d"`, `name = "batch"`, 1), []string{`11: device.name: "batch" collides with the gateway's own topic edgegw/gw/batch (its batches)`}},
		{"device named status", strings.Replace(minimal, `name = "d"`, `name = "status"`, 1), []string{`11: device.name: "status" collides with the gateway's own topic edgegw/gw/status (its retained online/offline status)`}},
		{"protocol unknown", strings.Replace(minimal, `[mqtt]`, "[mqtt]\nprotocol = \"3.1\"", 1), []string{"5: mqtt.protocol: \"3.1\" is not auto, 5 or 3.1.1"}},
		{"min on a read-only point", minimal + "  min = 1\n", []string{"15: device.point.min: applies to writable points only"}},
		{"max below min", minimal + "  writable = true\n  min = 10\n  max = 5\n", []string{"17: device.point.max: 5 is below min = 10"}},
		{"min on a coil", minimal + "  table = \"coil\"\n  writable = true\n  min = 0\n", []string{"17: device.point.min: applies to numeric points only, not bool"}},
		{"max on a serial point", "[gateway]\nid = \"gw\"\n[mqtt]\nbrokers = [\"tcp://127.0.0.1:1883\"]\n[[bus]]\nname = \"s\"\nprotocol = \"serial\"\ndevice = \"/dev/ttyUSB0\"\n[[device]]\nname = \"d\"\nbus = \"s\"\n  [[device.point]]\n  name = \"p\"\n  max = 3\n", []string{"14: device.point.max: applies to Modbus points only"}},
		{"unit id out of range", strings.Replace(minimal, `bus = "b"`, "bus = \"b\"\nunit_id = 248", 1), []string{"13: device.unit_id: 248 is out of range 0..247"}},
		{"address out of range", minimal + "  address = 65536\n", []string{"15: device.point.address: 65536 is out of range 0..65535"}},
		{"negative address", minimal + "  address = -1\n", []string{"15: device.point.address: -1 is out of range"}},
		{"float32 past the end", minimal + "  address = 65535\n  type = \"float32\"\n", []string{"15: device.point.address: a float32 at 65535 runs past register 65535"}},
		{"bad enum", minimal + "  table = \"holdings\"\n", []string{`15: device.point.table: "holdings" is not one of holding, input, coil, discrete`}},
		{"bad type", minimal + "  type = \"float\"\n", []string{`15: device.point.type: "float" is not one of`}},
		{"bad byte order", minimal + "  byte_order = \"abcd\"\n", []string{`15: device.point.byte_order: "abcd" is not one of`}},
		{"bad protocol", strings.Replace(minimal, `protocol = "modbus-tcp"`, `protocol = "modbus"`, 1), []string{`8: bus.protocol: "modbus" is not one of`}},
		{"duplicate device", minimal + "[[device]]\nname = \"d\"\nbus = \"b\"\n  [[device.point]]\n  name = \"q\"\n", []string{`16: device.name: device "d" is defined twice`}},
		{"duplicate bus", minimal + "[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\naddress = \"h:1\"\n", []string{`16: bus.name: bus "b" is defined twice`}},
		{"duplicate point", minimal + "  [[device.point]]\n  name = \"p\"\n", []string{`16: device.point.name: point "p" is defined twice`}},
		{"dangling bus", strings.Replace(minimal, `bus = "b"`, `bus = "rs485"`, 1), []string{`12: device.bus: no [[bus]] is named "rs485"`}},
		{"modbus server without a bus", minimal + "[[modbus_server]]\nlisten = \"127.0.0.1:1502\"\n", []string{"15: modbus_server.bus: required"}},
		{"modbus server unit 0", minimal + "[[modbus_server]]\nbus = \"b\"\nunits = [0]\n", []string{"17: modbus_server.units: 0 is out of range 1..247"}},
		{"modbus server listen without host", minimal + "[[modbus_server]]\nbus = \"b\"\nlisten = \"502\"\n", []string{`17: modbus_server.listen: "502" is not host:port`}},
		{"modbus server max_clients 0", minimal + "[[modbus_server]]\nbus = \"b\"\nmax_clients = 0\n", []string{"17: modbus_server.max_clients: 0 is out of range 1..1000"}},
		{"modbus server on a serial bus", minimal + "[[bus]]\nname = \"s\"\nprotocol = \"serial\"\ndevice = \"/dev/ttyUSB0\"\n[[modbus_server]]\nbus = \"s\"\nunits = [1]\n", []string{`20: modbus_server.bus: bus "s" speaks serial`}},
		{"bad duration", strings.Replace(minimal, `bus = "b"`, "bus = \"b\"\ninterval = \"5 seconds\"", 1), []string{`13: device.interval: bad duration "5 seconds"`}},
		{"duration as number", strings.Replace(minimal, `bus = "b"`, "bus = \"b\"\ninterval = 5", 1), []string{`13: device.interval: want a duration string like "5s", got an integer`}},
		{"negative duration", strings.Replace(minimal, `bus = "b"`, "bus = \"b\"\ninterval = \"-5s\"", 1), []string{`13: device.interval: duration "-5s" must not be negative`}},
		{"zero interval", strings.Replace(minimal, `bus = "b"`, "bus = \"b\"\ninterval = \"0s\"", 1), []string{`13: device.interval: 0s is too short`}},
		{"bad size", strings.Replace(minimal, `[mqtt]`, "[buffer]\nmax_bytes = \"lots\"\n[mqtt]", 1), []string{`5: buffer.max_bytes: bad size "lots"`}},
		{"tiny size", strings.Replace(minimal, `[mqtt]`, "[buffer]\nmax_bytes = 100\n[mqtt]", 1), []string{`5: buffer.max_bytes: 100 bytes is too small`}},
		{"bad broker scheme", strings.Replace(minimal, `tcp://127.0.0.1:1883`, `http://127.0.0.1`, 1), []string{`5: mqtt.brokers: "http://127.0.0.1": scheme must be one of`}},
		{"broker without host", strings.Replace(minimal, `tcp://127.0.0.1:1883`, `tcp://:1883`, 1), []string{`5: mqtt.brokers: "tcp://:1883" has no host`}},
		{"broker bad port", strings.Replace(minimal, `tcp://127.0.0.1:1883`, `tcp://h:99999`, 1), []string{`5: mqtt.brokers: "tcp://h:99999": port must be 1..65535`}},
		{"broker not a url", strings.Replace(minimal, `tcp://127.0.0.1:1883`, "tcp://h:1883\\u007f", 1), []string{`5: mqtt.brokers: `}},
		{"broker credentials", strings.Replace(minimal, `tcp://127.0.0.1:1883`, `tcp://u:p@h:1883`, 1), []string{`5: mqtt.brokers: "tcp://u:p@h:1883": credentials belong in username`}},
		{"brokers not array", strings.Replace(minimal, `brokers = ["tcp://127.0.0.1:1883"]`, `brokers = "tcp://127.0.0.1:1883"`, 1), []string{`5: mqtt.brokers: want an array, got a string`}},
		{"bad gateway id", strings.Replace(minimal, `id = "gw"`, `id = "line 3/pi"`, 1), []string{`3: gateway.id: "line 3/pi" may hold only`}},
		{"bad point name", strings.Replace(minimal, `name = "p"`, `name = "a/b"`, 1), []string{`14: device.point.name: "a/b" may hold only`}},
		{"device without points", strings.TrimSuffix(minimal, "  [[device.point]]\n  name = \"p\"\n"), []string{`10: device: device "d" has no points`}},
		{"tcp without address", strings.Replace(minimal, `address = "127.0.0.1:502"`, ``, 1), []string{`6: bus.address: "" is not host:port`}},
		{"rtu without device", strings.Replace(strings.Replace(minimal, `address = "127.0.0.1:502"`, ``, 1), `modbus-tcp`, `modbus-rtu`, 1), []string{`6: bus.device: required for modbus-rtu`}},
		{"rtu with address", strings.Replace(minimal, `modbus-tcp`, `modbus-rtu`, 1), []string{`9: bus.address: applies to modbus-tcp only`, `6: bus.device: required`}},
		{"tcp with baud", strings.Replace(minimal, `address = "127.0.0.1:502"`, "address = \"127.0.0.1:502\"\nbaud = 9600", 1), []string{`10: bus.baud: applies to serial buses only`}},
		{"bad parity", strings.Replace(minimal, `modbus-tcp"`, "modbus-rtu\"\ndevice = \"/dev/x\"\nparity = \"mark\"", 1), []string{`10: bus.parity: "mark" is not one of none, even, odd`, `11: bus.address: applies`}},
		{"coil not bool", minimal + "  table = \"coil\"\n  type = \"uint16\"\n", []string{`16: device.point.type: a coil point is a bool, not uint16`}},
		{"register bool without bit", minimal + "  type = \"bool\"\n", []string{`13: device.point.bit: a bool from a holding register needs bit = 0..15`}},
		{"bit too big", minimal + "  type = \"bool\"\n  bit = 16\n", []string{`16: device.point.bit: 16 is out of range -1..15`}},
		{"string without length", minimal + "  type = \"string\"\n", []string{`13: device.point.length: 0 is out of range 1..125`}},
		{"writable input", minimal + "  table = \"input\"\n  writable = true\n", []string{`16: device.point.writable: input is read-only`}},
		{"field on modbus point", minimal + "  field = \"x\"\n", []string{`15: device.point.field: applies to serial points only`}},
		{"duplicate key", strings.Replace(minimal, `id = "gw"`, "id = \"gw\"\nid = \"gw2\"", 1), []string{`4: gateway.id: duplicate key (first on line 3)`}},
		{"table twice", minimal + "[gateway]\nboard = \"auto\"\n", []string{`15: gateway: table defined twice (first on line 2)`}},
		{"bad board", strings.Replace(minimal, `id = "gw"`, "id = \"gw\"\nboard = \"beaglebone\"", 1), []string{`4: gateway.board: "beaglebone" is not auto or one of generic, raspberrypi`}},
		{"keepalive too short", strings.Replace(minimal, `[mqtt]`, "[mqtt]\nkeepalive = \"10ms\"", 1), []string{`5: mqtt.keepalive: 10ms is out of range`}},
		{"password without user", strings.Replace(minimal, `[mqtt]`, "[mqtt]\npassword_file = \"/x\"", 1), []string{`5: mqtt.password_file: set username too`}},
		{"cert without key", strings.Replace(minimal, `[mqtt]`, "[mqtt.tls]\ncert_file = \"c.pem\"\n[mqtt]", 1), []string{`4: mqtt.tls.key_file: cert_file and key_file go together`}},
		{"regex without groups", strings.Replace(strings.Replace(minimal, `protocol = "modbus-tcp"
address = "127.0.0.1:502"`, "protocol = \"serial\"\ndevice = \"/dev/ttyS0\"", 1), `bus = "b"`, "bus = \"b\"\nformat = \"regex\"\npattern = \"T=[0-9]+\"", 1) + "  field = \"t\"\n", []string{`14: device.pattern: needs named groups`}},
		{"bad regex", strings.Replace(strings.Replace(minimal, `protocol = "modbus-tcp"
address = "127.0.0.1:502"`, "protocol = \"serial\"\ndevice = \"/dev/ttyS0\"", 1), `bus = "b"`, "bus = \"b\"\nformat = \"regex\"\npattern = \"T=(\"", 1) + "  field = \"t\"\n", []string{`14: device.pattern: bad regular expression`}},
		{"serial point without field", strings.Replace(strings.Replace(minimal, `protocol = "modbus-tcp"
address = "127.0.0.1:502"`, "protocol = \"serial\"\ndevice = \"/dev/ttyS0\"", 1), `bus = "b"`, "bus = \"b\"\nformat = \"kv\"", 1), []string{`14: device.point.field: required on a serial device`}},
		{"fixed framing without length", strings.Replace(strings.Replace(minimal, `protocol = "modbus-tcp"
address = "127.0.0.1:502"`, "protocol = \"serial\"\ndevice = \"/dev/ttyS0\"\nframing = \"fixed\"", 1), `bus = "b"`, "bus = \"b\"\nformat = \"csv\"", 1) + "  field = \"0\"\n", []string{`6: bus.frame_length: 0 is out of range 1..4096`}},
		{"date value", strings.Replace(minimal, `id = "gw"`, `id = 2026-11-23`, 1), []string{`3: gateway.id: want a string, got a date/time`}},
		{"inline table for array of tables", minimal + "[[device]]\nname = \"e\"\nbus = \"b\"\npoint = {name = \"x\"}\n", []string{`18: device.point: want an array of tables`}},
		{"unknown profile", strings.Replace(minimal, `bus = "b"`, "bus = \"b\"\nprofile = \"nosuch\"", 1), []string{`13: device.profile: no profile "nosuch" in /etc/edgegw/profiles or built in`}},
		{"integer overflow", minimal + "  address = 99999999999999999999\n", []string{`15: device.point.address: bad integer "99999999999999999999"`}},
		{"leading zero", minimal + "  address = 0012\n", []string{`15: syntax error: integers cannot have leading zeroes`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := gateway.ParseConfig("s.toml", []byte(tt.doc))
			if err == nil {
				t.Fatalf("no error; want %q", tt.want)
			}
			var got []string
			for _, ce := range config.Errors(err) {
				got = append(got, ce.Error())
			}
			if len(got) == 0 {
				t.Fatalf("error is not a Error: %v", err)
			}
			for _, w := range tt.want {
				found := false
				for _, g := range got {
					if strings.HasPrefix(g, "s.toml:"+w[:strings.Index(w, ":")]+":") && strings.Contains(g, w[strings.Index(w, ":")+1:]) {
						found = true
					}
				}
				if !found {
					t.Errorf("want an error %q, got:\n  %s", "s.toml:"+w, strings.Join(got, "\n  "))
				}
			}
		})
	}
}

// TestSparkplugDefaults: the edge node is the gateway unless named, and
// [sparkplug] is not checked while the payload is JSON.
func TestModbusServerDefaults(t *testing.T) {
	cfg, err := gateway.ParseConfig("m.toml", []byte(strings.Replace(minimal, `name = "d"`, "name = \"d\"\nunit_id = 7", 1)+"[[modbus_server]]\nbus = \"b\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := &cfg.ModbusServers[0]
	if m.Listen != "0.0.0.0:502" || m.Cache.D() != time.Second || m.Writes || m.MaxClients != 16 || len(m.Units) != 0 {
		t.Errorf("defaults: %+v", m)
	}
	if got := cfg.ServedUnits(m); len(got) != 1 || got[0] != 7 {
		t.Errorf("units served: %v, want the device's 7", got)
	}
}

func TestSparkplugDefaults(t *testing.T) {
	cfg, err := gateway.ParseConfig("s.toml", []byte(strings.Replace(minimal, `[mqtt]`, "[mqtt]\npayload = \"sparkplug\"", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Sparkplug; s.GroupID != "plant1" || s.EdgeNodeID != "gw" || s.PrimaryHostID != "" {
		t.Fatalf("[sparkplug] = %+v, want group plant1, edge node gw, no primary host", s)
	}
	if _, err := gateway.ParseConfig("s.toml", []byte(strings.Replace(minimal, `[mqtt]`, "[sparkplug]\ngroup_id = \"a/b\"\n[mqtt]", 1))); err != nil {
		t.Fatalf("JSON payload, unused [sparkplug] refused: %v", err)
	}
}

func TestParseConfigReportsAllProblems(t *testing.T) {
	doc := `[gateway]
id = ""
[mqtt]
brokers = []
qos = 7
[[bus]]
name = "b"
protocol = "nope"
[[bus]]
name = "m"
protocol = "modbus-tcp"
address = "127.0.0.1:502"
[[device]]
name = "d"
bus = "x"
[[device]]
name = "e"
bus = "m"
unit_id = 300
  [[device.point]]
  name = "p"
  frobnicate = 1
`
	_, err := gateway.ParseConfig("s.toml", []byte(doc))
	// Unknown keys are reported first (decoding), then the rest.
	if got := config.Errors(err); len(got) != 1 || got[0].Line != 22 {
		t.Fatalf("decode errors: got %v", got)
	}
	doc = strings.Replace(doc, "  frobnicate = 1\n", "", 1)
	_, err = gateway.ParseConfig("s.toml", []byte(doc))
	got := config.Errors(err)
	wantLines := map[int]bool{2: true, 4: true, 5: true, 8: true, 13: true, 15: true, 19: true}
	for _, ce := range got {
		delete(wantLines, ce.Line)
	}
	if len(wantLines) > 0 {
		t.Errorf("problems on lines %v not reported; got:\n%v", wantLines, err)
	}
}

func TestProfileMerge(t *testing.T) {
	dir := t.TempDir()
	prof := "description = \"test meter\"\n[[point]]\nname = \"v\"\ntable = \"input\"\naddress = 0\ntype = \"float32\"\n[[point]]\nname = \"f\"\ntable = \"input\"\naddress = 70\ntype = \"float32\"\n"
	if err := os.WriteFile(filepath.Join(dir, "meter.toml"), []byte(prof), 0o644); err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(minimal, `id = "gw"`, "id = \"gw\"\nprofiles_dir = \""+dir+"\"", 1)
	doc = strings.Replace(doc, `bus = "b"`, "bus = \"b\"\nprofile = \"meter\"", 1)
	doc = strings.Replace(doc, `name = "p"`, "name = \"f\"\n  address = 5", 1)
	cfg, err := gateway.ParseConfig("s.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	pts := cfg.Devices[0].Points
	if len(pts) != 2 || pts[0].Name != "f" || pts[0].Address != 5 || pts[1].Name != "v" || pts[1].Type != "float32" {
		t.Errorf("merged points: %+v", pts)
	}
	// A broken profile is reported against the profile file.
	os.WriteFile(filepath.Join(dir, "meter.toml"), []byte("[[point]]\nname = \"v\"\ntype = \"float\"\n"), 0o644)
	_, err = gateway.ParseConfig("s.toml", []byte(doc))
	got := config.Errors(err)
	if len(got) != 1 || got[0].File != filepath.Join(dir, "meter.toml") || got[0].Line != 3 {
		t.Errorf("profile error: %v", err)
	}
}

// BenchmarkParseConfig1000Points loads a 50-device, 1,000-point config: the
// size of a big cabinet. Line lookup once made it quadratic (450 ms).
func BenchmarkParseConfig1000Points(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("[gateway]\nid = \"gw\"\n[mqtt]\nbrokers = [\"tcp://127.0.0.1:1883\"]\n[[bus]]\nname = \"b\"\nprotocol = \"modbus-tcp\"\naddress = \"127.0.0.1:502\"\n")
	for d := 1; d <= 50; d++ {
		fmt.Fprintf(&sb, "[[device]]\nname = \"dev%d\"\nbus = \"b\"\nunit_id = %d\n", d, d)
		for p := range 20 {
			fmt.Fprintf(&sb, "  [[device.point]]\n  name = \"p%d\"\n  table = \"input\"\n  address = %d\n  type = \"float32\"\n", p, p*2)
		}
	}
	doc := []byte(sb.String())
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if _, err := gateway.ParseConfig("big.toml", doc); err != nil {
			b.Fatal(err)
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]config.Rate{
		"":               {},
		"20KiB/s":        {Bytes: 20 << 10},
		" 2000B/s ":      {Bytes: 2000},
		"1.5MB/s":        {Bytes: 1.5e6},
		"100 readings/s": {Readings: 100},
		"0.5readings/s":  {Readings: 0.5},
	} {
		if got, err := config.ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"20KiB", "fast/s", "-1KiB/s", "0B/s", "NaN readings/s", "Inf readings/s", "readings/s"} {
		if _, err := config.ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) accepted", in)
		}
	}
}
