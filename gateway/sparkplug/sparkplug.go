// Package sparkplug speaks Sparkplug B 3.0 for the gateway: the topics, the
// metrics of every device with an alias each, and the payloads of births,
// deaths and data (package spb holds the protobuf schema). It turns the
// gateway's JSON readings (docs/MQTT.md) into DDATA, so it needs nothing of
// the poller or the buffer.
package sparkplug

import (
	"edgegw/gateway/config"
	"edgegw/gateway/sparkplug/spb"
)

// Namespace is the first topic level of Sparkplug B.
const Namespace = "spBv1.0"

// Message types: the third topic level.
const (
	NBirth = "NBIRTH"
	NDeath = "NDEATH"
	NData  = "NDATA"
	NCmd   = "NCMD"
	DBirth = "DBIRTH"
	DDeath = "DDEATH"
	DData  = "DDATA"
	DCmd   = "DCMD"
)

// Metric names the specification gives the edge node.
const (
	BdSeqMetric   = "bdSeq"
	RebirthMetric = "Node Control/Rebirth"
)

// Node names an edge node.
type Node struct {
	Group string
	ID    string
}

// Topic is the topic of a message of type typ about device, or about the
// node itself when device is "".
func (n Node) Topic(typ, device string) string {
	t := Namespace + "/" + n.Group + "/" + typ + "/" + n.ID
	if device != "" {
		t += "/" + device
	}
	return t
}

// Metric is a point as a Sparkplug metric.
type Metric struct {
	Name     string
	Alias    uint64
	Type     spb.DataType
	Unit     string
	Writable bool
}

// Device is a Sparkplug device: a configured device and its metrics.
type Device struct {
	Name    string
	Metrics []Metric
	byName  map[string]int
}

// Metric returns the metric of the point named name.
func (d *Device) Metric(name string) (Metric, bool) {
	i, ok := d.byName[name]
	if !ok {
		return Metric{}, false
	}
	return d.Metrics[i], true
}

// Plan is the edge node's devices and their metrics. Aliases are unique in
// the node, given in config order from 1, so the same config always gives
// the same aliases.
type Plan struct {
	Devices []*Device
	byName  map[string]*Device
}

// NewPlan plans the metrics of devices; defaultType gives the type of a
// point that names none, which is the protocol's (uint16 for Modbus,
// float64 for serial sensors).
func NewPlan(devices []config.Device, defaultType func(config.Device) string) *Plan {
	p := &Plan{byName: map[string]*Device{}}
	alias := uint64(0)
	for _, cd := range devices {
		d := &Device{Name: cd.Name, byName: map[string]int{}}
		for _, pt := range cd.Points {
			alias++
			if pt.Type == "" {
				pt.Type = defaultType(cd)
			}
			d.byName[pt.Name] = len(d.Metrics)
			d.Metrics = append(d.Metrics, Metric{Name: pt.Name, Alias: alias, Type: DataType(pt), Unit: pt.Unit, Writable: pt.Writable})
		}
		p.Devices = append(p.Devices, d)
		p.byName[d.Name] = d
	}
	return p
}

// Device returns the device named name.
func (p *Plan) Device(name string) (*Device, bool) {
	d, ok := p.byName[name]
	return d, ok
}

// DataType is the Sparkplug type of a point's values: its register type,
// or Double once scale or offset make it a measurement. pt.Type is set.
func DataType(pt config.Point) spb.DataType {
	switch {
	case pt.Type == "bool" || pt.Table == "coil" || pt.Table == "discrete" || pt.Bit >= 0 && pt.Type != "string":
		return spb.DataType_Boolean
	case pt.Type == "string":
		return spb.DataType_String
	case pt.Scale != 1 && pt.Scale != 0 || pt.Offset != 0:
		return spb.DataType_Double
	}
	switch pt.Type {
	case "int16":
		return spb.DataType_Int16
	case "uint16":
		return spb.DataType_UInt16
	case "int32":
		return spb.DataType_Int32
	case "uint32":
		return spb.DataType_UInt32
	case "int64":
		return spb.DataType_Int64
	case "uint64":
		return spb.DataType_UInt64
	case "float32":
		return spb.DataType_Float
	}
	return spb.DataType_Double
}
