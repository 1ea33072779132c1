package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is the whole of sensors.toml, as documented in docs/CONFIG.md.
// Load fills it with defaults, the file's values, and checks it.
type Config struct {
	Gateway Gateway `toml:"gateway"`
	MQTT    MQTT    `toml:"mqtt"`
	Buffer  Buffer  `toml:"buffer"`
	Status  Status  `toml:"status"`
	// Sparkplug is used when mqtt.payload is "sparkplug".
	Sparkplug Sparkplug `toml:"sparkplug"`
	Buses     []Bus     `toml:"bus"`
	Devices   []Device  `toml:"device"`
	// ModbusServers serve Modbus TCP to other masters in front of a bus.
	ModbusServers []ModbusServer `toml:"modbus_server"`

	// File is the path the config was loaded from, for messages.
	File string `toml:"-"`
	// Secrets are read from the files the config names.
	Secrets Secrets `toml:"-"`
	// file holds the line of every key the file set, by key path
	// ("device[1].point[0].address"); a key absent there took its default.
	file *source
	// origins says where each device's points were written, by device.
	origins [][]origin
}

// Gateway is the [gateway] table.
type Gateway struct {
	// ID names this gateway in topics and the MQTT client id; required.
	ID string `toml:"id"`
	// DataDir holds the flash buffer (DataDir/buffer.db).
	DataDir string `toml:"data_dir"`
	// Board is "auto" or the name of a profile from the board package.
	Board string `toml:"board"`
	// ProfilesDir holds device profiles, NAME.toml files of [[point]] tables.
	ProfilesDir string `toml:"profiles_dir"`
}

// MQTT is the [mqtt] table.
type MQTT struct {
	// Brokers are URLs; at least one. BrokerOrder says how they are used.
	Brokers []string `toml:"brokers"`
	// BrokerOrder is "ordered" (the list is a priority order) or "spread"
	// (equal brokers, each gateway starts at a place derived from its id).
	BrokerOrder string `toml:"broker_order"`
	// Protocol is the MQTT version: "auto" (5, and 3.1.1 for a broker
	// that refuses 5, per address), "5" or "3.1.1".
	Protocol string `toml:"protocol"`
	// FailbackAfter (ordered only) moves back to an earlier broker once it
	// has been reachable this long; 0 never.
	FailbackAfter Duration `toml:"failback_after"`
	// CommandTTL refuses a command older than this when its bus is free
	// to write it; 0 no limit.
	CommandTTL Duration `toml:"command_ttl"`
	// ClientID defaults to "edgegw-" + gateway.id when empty.
	ClientID string `toml:"client_id"`
	Username string `toml:"username"`
	// PasswordFile holds the password, so sensors.toml holds no secret.
	PasswordFile string `toml:"password_file"`
	// QoS is 0, 1 or 2.
	QoS int `toml:"qos"`
	// TopicPrefix is the first topic level of everything published.
	TopicPrefix string `toml:"topic_prefix"`
	// KeepAlive is the MQTT keepalive; whole seconds.
	KeepAlive Duration `toml:"keepalive"`
	// ConnectTimeout bounds one connection attempt to one broker.
	ConnectTimeout Duration `toml:"connect_timeout"`
	// MaxInflight is the most unacknowledged publishes at once.
	MaxInflight int `toml:"max_inflight"`
	// Payload is the format of what is published: PayloadJSON or PayloadSparkplug.
	Payload string `toml:"payload"`
	// BatchMax readings go in one message at most; 1 publishes each alone.
	BatchMax int `toml:"batch_max"`
	// BatchBytes bounds a batch before compression (and the broker's
	// Maximum Packet Size bounds it on the wire).
	BatchBytes Size `toml:"batch_bytes"`
	// BatchLinger is how long a batch may wait to fill.
	BatchLinger Duration `toml:"batch_linger"`
	// Compression of batches: "none", "gzip" or "zstd".
	Compression string `toml:"compression"`
	// MaxRate caps the uplink, "20KiB/s" or "100 readings/s"; "" none.
	MaxRate string `toml:"max_rate"`
	TLS     TLS    `toml:"tls"`
}

// Rate is a parsed max_rate: at most Bytes or Readings a second; both 0
// is no cap.
type Rate struct {
	Bytes    float64
	Readings float64
}

// ParseRate reads max_rate: "" (none), a size a second ("20KiB/s",
// "2000B/s") or readings a second ("100 readings/s").
func ParseRate(s string) (Rate, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return Rate{}, nil
	}
	bad := fmt.Errorf("bad rate %q: want a size a second like \"20KiB/s\", or \"100 readings/s\"", s)
	t, ok := strings.CutSuffix(t, "/s")
	if !ok {
		return Rate{}, bad
	}
	if n, ok := strings.CutSuffix(t, "readings"); ok {
		r, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
		if err != nil || !(r > 0) || math.IsInf(r, 0) {
			return Rate{}, bad
		}
		return Rate{Readings: r}, nil
	}
	n, err := parseSize(t)
	if err != nil || n <= 0 {
		return Rate{}, bad
	}
	return Rate{Bytes: float64(n)}, nil
}

// TLS is [mqtt.tls]: files used for tls://, ssl://, mqtts:// and wss:// brokers.
type TLS struct {
	CAFile     string `toml:"ca_file"`
	CertFile   string `toml:"cert_file"`
	KeyFile    string `toml:"key_file"`
	ServerName string `toml:"server_name"`
}

// Buffer is the [buffer] table.
type Buffer struct {
	// MaxBytes bounds the buffer; beyond it the oldest readings are dropped.
	MaxBytes Size `toml:"max_bytes"`
	// MaxAge drops readings older than this.
	MaxAge Duration `toml:"max_age"`
	// CommitInterval is the longest a reading waits in RAM before it is on flash.
	CommitInterval Duration `toml:"commit_interval"`
}

// Sparkplug is the [sparkplug] table: the gateway as a Sparkplug B edge node.
type Sparkplug struct {
	GroupID string `toml:"group_id"`
	// EdgeNodeID defaults to gateway.id when empty.
	EdgeNodeID string `toml:"edge_node_id"`
	// PrimaryHostID, when set, names the host application whose STATE
	// the gateway waits for before it publishes.
	PrimaryHostID string `toml:"primary_host_id"`
	// DataQoS is the QoS of DDATA and DDEATH, 0 (the specification's) or
	// 1; a reading leaves flash only once the broker is known to have it.
	DataQoS int `toml:"data_qos"`
}

// Status is the [status] table.
type Status struct {
	// Listen is host:port of the status server; "" disables it.
	Listen string `toml:"listen"`
	// Console serves the commissioning page at / (read-only).
	Console bool `toml:"console"`
}

// ModbusServer is one [[modbus_server]]: Modbus TCP served to other
// masters (a SCADA, an HMI) for the devices of one Modbus bus.
type ModbusServer struct {
	// Listen is host:port.
	Listen string `toml:"listen"`
	// Bus names the [[bus]] (a Modbus one) whose devices it answers for.
	Bus string `toml:"bus"`
	// Units are the unit ids answered, 1..247; empty means the unit ids of
	// the devices configured on the bus.
	Units []int `toml:"units"`
	// Cache is how recently edgegw's polls must have read every register
	// of a read for it to be answered from memory; 0 never.
	Cache Duration `toml:"cache"`
	// Writes passes function codes 5, 6, 15 and 16 to the bus; false
	// answers them with exception 1.
	Writes bool `toml:"writes"`
	// MaxClients bounds the TCP connections at once; more are closed.
	MaxClients int `toml:"max_clients"`
}

// Bus is one [[bus]]: a serial line or a Modbus TCP connection.
type Bus struct {
	Name     string `toml:"name"`
	Protocol string `toml:"protocol"`
	// Device is the serial port (modbus-rtu, modbus-ascii, serial).
	Device string `toml:"device"`
	// Address is host:port (modbus-tcp).
	Address string `toml:"address"`
	// RS485 asks the kernel to drive the transceiver's direction with RTS
	// (TIOCSRS485), for UARTs wired so; serial buses only.
	RS485    bool   `toml:"rs485"`
	Baud     int    `toml:"baud"`
	DataBits int    `toml:"data_bits"`
	Parity   string `toml:"parity"`
	StopBits int    `toml:"stop_bits"`
	// Timeout bounds one request.
	Timeout Duration `toml:"timeout"`
	// Retries is the number of extra tries of a failed request.
	Retries int `toml:"retries"`
	// MaxGap is how many unused registers (16 times as many bits) one
	// request may read to save another; -1 (the default) means 125 on
	// modbus-tcp, where requests cost round trips and bytes are cheap, and
	// 10 on serial lines, where every register costs wire time.
	MaxGap int `toml:"max_gap"`
	// Framing, Delimiter and FrameLength apply to protocol "serial" only.
	Framing     string `toml:"framing"`
	Delimiter   string `toml:"delimiter"`
	FrameLength int    `toml:"frame_length"`
	// Header (hex, fixed framing) starts every frame: the framer
	// resynchronises on it after noise.
	Header string `toml:"header"`
	// Checksum (fixed framing) is in the last byte(s) of a frame, over the
	// bytes before: sum8, xor8 or crc16 (Modbus CRC, low byte first).
	Checksum string `toml:"checksum"`
}

// Device is one [[device]]: something polled on a bus.
type Device struct {
	Name    string `toml:"name"`
	Bus     string `toml:"bus"`
	UnitID  int    `toml:"unit_id"`
	Profile string `toml:"profile"`
	// Interval is the poll period.
	Interval Duration `toml:"interval"`
	// Report is ReportEveryPoll or ReportChange (report by exception);
	// FullEvery bounds the time between full readings in ReportChange.
	Report    string   `toml:"report"`
	FullEvery Duration `toml:"full_every"`
	// Request, Format and Pattern apply to serial devices only.
	Request string  `toml:"request"`
	Format  string  `toml:"format"`
	Pattern string  `toml:"pattern"`
	Points  []Point `toml:"point"`
}

// Point is one [[device.point]]: one value of a device.
type Point struct {
	Name      string `toml:"name"`
	Table     string `toml:"table"`
	Address   int    `toml:"address"`
	Type      string `toml:"type"`
	ByteOrder string `toml:"byte_order"`
	// Length is in registers, for type "string" only.
	Length int `toml:"length"`
	// Bit is 0..15 to read one bit of a register as a bool; -1 means none.
	Bit   int    `toml:"bit"`
	Field string `toml:"field"`
	// Scale and Offset map raw to value: raw*Scale + Offset.
	Scale    float64 `toml:"scale"`
	Offset   float64 `toml:"offset"`
	Unit     string  `toml:"unit"`
	Writable bool    `toml:"writable"`
	// Deadband and DeadbandPercent (of the last value reported): with
	// report = "change", smaller changes are not reported.
	Deadband        float64 `toml:"deadband"`
	DeadbandPercent float64 `toml:"deadband_percent"`
	// Min and Max bound writes (engineering units); -Inf and +Inf, their
	// defaults, are no limit.
	Min float64 `toml:"min"`
	Max float64 `toml:"max"`
}

// Duration is a time.Duration written in TOML as a Go duration string.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// Size is a byte count written in TOML as "128MiB", "2GB" or a plain integer.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first so "MiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 || n*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("bad size %q: want a number with a unit, like \"128MiB\" or \"2GB\"", s)
	}
	return int64(n * float64(mult)), nil
}

// Error is one problem in a config file, at a line and key.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
}

// Errors lists every *Error in err, in file order.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if ce, ok := err.(*Error); ok {
			out = append(out, ce)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}

// Load reads, decodes and validates the config at path. On any problem
// it returns an error joining a *Error per problem, all of them.
func Load(path string, check BusCheck) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Line: 0, Msg: fmt.Sprintf("cannot read config: %v", errors.Unwrap(err))}
	}
	return Parse(path, data, check)
}

// Parse decodes and validates data, naming file in every message; check
// (nil: none) validates each bus's protocol-specific part. It touches no
// hardware and no network; it reads the profiles and secrets the config
// names.
func Parse(file string, data []byte, check BusCheck) (*Config, error) {
	root, derr := parseTOML(data)
	if derr != nil {
		return nil, &Error{File: file, Line: derr.line, Key: derr.key, Msg: derr.msg}
	}
	cfg := Default()
	cfg.File = file
	d := &decoder{file: file, lines: map[string]int{}}
	d.decodeTable(root, reflectValue(cfg), "")
	cfg.file = &source{name: file, lines: d.lines}
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	if errs := cfg.validate(check); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// The values of [[device]] report.
const (
	ReportEveryPoll = "every_poll" // a full reading at every poll
	ReportChange    = "change"     // what changed beyond its deadband, and full readings now and then
)
