package config

import (
	"math"
	"reflect"
	"time"
)

// The defaults of docs/CONFIG.md, all in one place.

// Default returns a Config holding every default and no devices.
func Default() *Config {
	return &Config{
		Gateway: Gateway{
			DataDir:     "/var/lib/edgegw",
			Board:       "auto",
			ProfilesDir: "/etc/edgegw/profiles",
		},
		MQTT: MQTT{
			BrokerOrder:    "ordered",
			Protocol:       "auto",
			FailbackAfter:  Duration(5 * time.Minute),
			CommandTTL:     Duration(30 * time.Second),
			QoS:            1,
			TopicPrefix:    "edgegw",
			KeepAlive:      Duration(30 * time.Second),
			ConnectTimeout: Duration(5 * time.Second),
			MaxInflight:    64,
			Payload:        PayloadJSON,
			BatchMax:       1,
			BatchBytes:     64 << 10,
			Compression:    "none",
		},
		Buffer: Buffer{
			MaxBytes:       128 << 20,
			MaxAge:         Duration(168 * time.Hour),
			CommitInterval: Duration(250 * time.Millisecond),
		},
		Status:    Status{Listen: "127.0.0.1:9130", Console: true},
		Sparkplug: Sparkplug{GroupID: "plant1"},
	}
}

func (b *Bus) setDefaults() {
	*b = Bus{
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

func (m *ModbusServer) setDefaults() {
	*m = ModbusServer{Listen: "0.0.0.0:502", Cache: Duration(time.Second), MaxClients: 16}
}

func (d *Device) setDefaults() {
	*d = Device{UnitID: 1, Interval: Duration(5 * time.Second), Report: ReportEveryPoll, FullEvery: Duration(10 * time.Minute)}
}

func (p *Point) setDefaults() {
	*p = Point{ByteOrder: "ABCD", Bit: -1, Scale: 1, Min: math.Inf(-1), Max: math.Inf(1)}
}

func reflectValue(c *Config) reflect.Value { return reflect.ValueOf(c).Elem() }
