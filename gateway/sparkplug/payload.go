package sparkplug

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"edgegw/gateway/sparkplug/spb"
)

// Session numbers the messages of one MQTT connection: the bdSeq that its
// will (NDEATH) and its NBIRTH carry, and the message seq, 0 at the NBIRTH
// and one more for every message after it, 255 followed by 0. Only the
// goroutine that publishes uses it.
type Session struct {
	BdSeq uint64
	seq   uint8
}

// next is the seq of the next message.
func (s *Session) next() *uint64 {
	v := uint64(s.seq)
	s.seq++
	return &v
}

// unnumber gives back the seq of the last message numbered, which will not
// be published: the host must see no gap.
func (s *Session) unnumber() { s.seq-- }

func ms(t time.Time) *uint64 {
	v := uint64(t.UnixMilli())
	return &v
}

// NodeDeath is the NDEATH payload for a will: the bdSeq, no seq.
func NodeDeath(bdSeq uint64, now time.Time) ([]byte, error) {
	return marshal(&spb.Payload{Timestamp: ms(now), Metrics: []*spb.Payload_Metric{bdSeqMetric(bdSeq, now)}})
}

func bdSeqMetric(bdSeq uint64, now time.Time) *spb.Payload_Metric {
	return &spb.Payload_Metric{Name: proto.String(BdSeqMetric), Timestamp: ms(now), Datatype: dt(spb.DataType_Int64),
		Value: &spb.Payload_Metric_LongValue{LongValue: bdSeq}}
}

// NodeBirth is the NBIRTH payload, which starts the session at seq 0.
// Every metric of a birth carries a timestamp (the specification's
// payloads-name-birth-data-requirement).
func (s *Session) NodeBirth(now time.Time) ([]byte, error) {
	s.seq = 0
	return marshal(&spb.Payload{Timestamp: ms(now), Seq: s.next(), Metrics: []*spb.Payload_Metric{
		bdSeqMetric(s.BdSeq, now),
		{Name: proto.String(RebirthMetric), Timestamp: ms(now), Datatype: dt(spb.DataType_Boolean),
			Value: &spb.Payload_Metric_BooleanValue{BooleanValue: false}},
	}})
}

// Known is what the host was last told of a point: its value (JSON) and
// when it was read, or the error that replaced it.
type Known struct {
	Value json.RawMessage
	TS    time.Time
	Err   string
}

// DeviceBirth is the DBIRTH payload of d: every metric with its name,
// alias, type and unit (property engUnit), with the value known of it and
// when that was read, else as null.
func (s *Session) DeviceBirth(d *Device, known map[string]Known, now time.Time) ([]byte, error) {
	metrics := make([]*spb.Payload_Metric, 0, len(d.Metrics))
	for _, m := range d.Metrics {
		pm := &spb.Payload_Metric{Name: proto.String(m.Name), Alias: proto.Uint64(m.Alias), Datatype: dt(m.Type)}
		if m.Unit != "" {
			pm.Properties = &spb.Payload_PropertySet{Keys: []string{"engUnit"}, Values: []*spb.Payload_PropertyValue{
				{Type: proto.Uint32(uint32(spb.DataType_String)), Value: &spb.Payload_PropertyValue_StringValue{StringValue: m.Unit}}}}
		}
		if k, ok := known[m.Name]; ok && k.Err == "" && k.Value != nil {
			if err := setValue(pm, m.Type, k.Value); err != nil {
				return nil, fmt.Errorf("sparkplug: %s.%s: %w", d.Name, m.Name, err)
			}
			pm.Timestamp = ms(k.TS)
		} else {
			pm.IsNull, pm.Timestamp = proto.Bool(true), ms(now) // null as of the birth
		}
		metrics = append(metrics, pm)
	}
	return marshal(&spb.Payload{Timestamp: ms(now), Seq: s.next(), Metrics: metrics})
}

// DeviceDeath is the DDEATH payload, published at now.
func (s *Session) DeviceDeath(now time.Time) ([]byte, error) {
	return marshal(&spb.Payload{Timestamp: ms(now), Seq: s.next()})
}

// Data is the metrics of a reading of d (the JSON of docs/MQTT.md) as
// DDATA carries them: those it holds, by alias, in birth order, with the
// time they were read; points in error are null. historical marks a
// reading sent late, from the buffer. A point the birth lacks, or a value
// its type cannot hold, is an error: nothing a host could place.
func (d *Device) Data(r reading, historical bool) ([]*spb.Payload_Metric, error) {
	for name := range r.Values {
		if _, ok := d.Metric(name); !ok {
			return nil, fmt.Errorf("sparkplug: %s has no point %q in its birth (removed from the config?)", d.Name, name)
		}
	}
	var metrics []*spb.Payload_Metric
	for _, m := range d.Metrics { // birth order, not the reading's
		raw, hasValue := r.Values[m.Name]
		_, hasError := r.Errors[m.Name]
		if !hasValue && !hasError {
			continue
		}
		pm := &spb.Payload_Metric{Alias: proto.Uint64(m.Alias), Timestamp: ms(r.TS), Datatype: dt(m.Type)}
		if historical {
			pm.IsHistorical = proto.Bool(true)
		}
		if !hasValue {
			pm.IsNull = proto.Bool(true)
		} else if err := setValue(pm, m.Type, raw); err != nil {
			return nil, fmt.Errorf("sparkplug: %s.%s: %w", d.Name, m.Name, err)
		}
		metrics = append(metrics, pm)
	}
	return metrics, nil
}

// DeviceData is the DDATA payload of metrics (Device.Data's).
func (s *Session) DeviceData(metrics []*spb.Payload_Metric, now time.Time) ([]byte, error) {
	return marshal(&spb.Payload{Timestamp: ms(now), Seq: s.next(), Metrics: metrics})
}

// reading is the part of a JSON reading that DDATA carries.
type reading struct {
	TS     time.Time                  `json:"ts"`
	Values map[string]json.RawMessage `json:"values"`
	Errors map[string]string          `json:"errors"`
}

func parseReading(doc []byte) (reading, error) {
	var r reading
	if err := json.Unmarshal(doc, &r); err != nil {
		return r, fmt.Errorf("sparkplug: reading: %w", err)
	}
	return r, nil
}

// setValue puts raw, a JSON value, in pm as type t requires.
func setValue(pm *spb.Payload_Metric, t spb.DataType, raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	switch t {
	case spb.DataType_Boolean:
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return err
		}
		pm.Value = &spb.Payload_Metric_BooleanValue{BooleanValue: b}
	case spb.DataType_String:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		pm.Value = &spb.Payload_Metric_StringValue{StringValue: s}
	case spb.DataType_Int8, spb.DataType_Int16, spb.DataType_Int32, spb.DataType_Int64:
		i, err := strconv.ParseInt(string(raw), 10, bits[t])
		if err != nil {
			return err
		}
		if t == spb.DataType_Int64 {
			pm.Value = &spb.Payload_Metric_LongValue{LongValue: uint64(i)}
		} else { // two's complement in uint32
			pm.Value = &spb.Payload_Metric_IntValue{IntValue: uint32(int32(i))}
		}
	case spb.DataType_UInt8, spb.DataType_UInt16, spb.DataType_UInt32, spb.DataType_UInt64:
		u, err := strconv.ParseUint(string(raw), 10, bits[t])
		if err != nil {
			return err
		}
		if t == spb.DataType_UInt8 || t == spb.DataType_UInt16 {
			pm.Value = &spb.Payload_Metric_IntValue{IntValue: uint32(u)}
		} else { // UInt32 too: in long_value, where Eclipse Tahu (Java and
			// JavaScript), and so the hosts built on it, look for it
			pm.Value = &spb.Payload_Metric_LongValue{LongValue: u}
		}
	case spb.DataType_Float:
		f, err := strconv.ParseFloat(string(raw), 32)
		if err != nil {
			return err
		}
		pm.Value = &spb.Payload_Metric_FloatValue{FloatValue: float32(f)}
	default: // Double
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsInf(f, 0) {
			return fmt.Errorf("%s is not a number", raw)
		}
		pm.Value = &spb.Payload_Metric_DoubleValue{DoubleValue: f}
	}
	return nil
}

// bits is the width of the integer types.
var bits = map[spb.DataType]int{
	spb.DataType_Int8: 8, spb.DataType_Int16: 16, spb.DataType_Int32: 32, spb.DataType_Int64: 64,
	spb.DataType_UInt8: 8, spb.DataType_UInt16: 16, spb.DataType_UInt32: 32, spb.DataType_UInt64: 64,
}

func dt(t spb.DataType) *uint32 { return proto.Uint32(uint32(t)) }

func marshal(p *spb.Payload) ([]byte, error) {
	b, err := proto.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("sparkplug: encoding a payload: %w", err)
	}
	return b, nil
}
