package sparkplug

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"edgegw/gateway/sparkplug/spb"
)

// FuzzReceived: whatever a peer publishes on the edge node's command and
// STATE topics (NCMD, DCMD of known and unknown devices, STATE) is taken or
// refused without a panic, and every command it yields names a device and
// point of the plan.
func FuzzReceived(f *testing.F) {
	rebirth, _ := proto.Marshal(&spb.Payload{Metrics: []*spb.Payload_Metric{{Name: proto.String(RebirthMetric),
		Datatype: proto.Uint32(uint32(spb.DataType_Boolean)), Value: &spb.Payload_Metric_BooleanValue{BooleanValue: true}}}})
	write, _ := proto.Marshal(&spb.Payload{Metrics: []*spb.Payload_Metric{{Alias: proto.Uint64(2),
		Datatype: proto.Uint32(uint32(spb.DataType_Int32)), Value: &spb.Payload_Metric_IntValue{IntValue: 7}}}})
	for _, seed := range []struct {
		kind    byte
		payload []byte
	}{
		{0, rebirth}, {1, write}, {2, []byte(`{"online":true,"timestamp":1700000000000}`)},
		{2, []byte(`{"online":false,"timestamp":-1}`)}, {1, []byte{0x12, 0xff, 0xff, 0xff, 0xff, 0x0f}}, {3, write},
	} {
		f.Add(seed.kind, seed.payload)
	}
	e := NewEdge(Node{Group: "g", ID: "n"}, testPlan(), "scada", f.TempDir(), nil)
	topics := []string{"spBv1.0/g/NCMD/n", "spBv1.0/g/DCMD/n/meter", "spBv1.0/STATE/scada", "spBv1.0/g/DCMD/n/nobody"}
	f.Fuzz(func(t *testing.T, kind byte, payload []byte) {
		r := e.Received(topics[int(kind)%len(topics)], payload)
		for _, cmd := range r.Commands {
			d, ok := e.plan.Device(cmd.Device)
			if !ok {
				t.Fatalf("a command for a device not in the plan: %+v", cmd)
			}
			if _, ok := d.Metric(cmd.Point); !ok {
				t.Fatalf("a command for a point not in the plan: %+v", cmd)
			}
		}
	})
}
