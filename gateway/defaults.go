package gateway

import (
	"reflect"
	"time"
)

// The defaults of docs/CONFIG.md, all in one place.

// DefaultConfig returns a Config holding every default and no devices.
func DefaultConfig() *Config {
	return &Config{
		Gateway: GatewayConfig{
			DataDir:     "/var/lib/edgegw",
			Board:       "auto",
			ProfilesDir: "/etc/edgegw/profiles",
		},
		MQTT: MQTTConfig{
			QoS:            1,
			TopicPrefix:    "edgegw",
			KeepAlive:      Duration(30 * time.Second),
			ConnectTimeout: Duration(5 * time.Second),
			MaxInflight:    64,
		},
		Buffer: BufferConfig{
			MaxBytes:       128 << 20,
			MaxAge:         Duration(168 * time.Hour),
			CommitInterval: Duration(250 * time.Millisecond),
		},
		Status: StatusConfig{Listen: "127.0.0.1:9130"},
	}
}

func (b *BusConfig) setDefaults() {
	*b = BusConfig{
		Baud:      9600,
		DataBits:  8,
		Parity:    "none",
		StopBits:  1,
		Timeout:   Duration(time.Second),
		Retries:   1,
		MaxGap:    -1,
		Framing:   "line",
		Delimiter: "\n",
	}
}

func (d *DeviceConfig) setDefaults() {
	*d = DeviceConfig{UnitID: 1, Interval: Duration(5 * time.Second)}
}

func (p *PointConfig) setDefaults() {
	*p = PointConfig{ByteOrder: "ABCD", Bit: -1, Scale: 1}
}

func reflectValue(c *Config) reflect.Value { return reflect.ValueOf(c).Elem() }
