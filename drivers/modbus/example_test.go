package modbus_test

import (
	"fmt"

	"edgegw/drivers"
	"edgegw/drivers/modbus"
)

// Plan merges the points of a device into as few requests as the protocol
// allows: here three float32 values and a counter across a small gap.
func ExamplePlan() {
	points := []modbus.Point{
		{Name: "voltage", Table: modbus.Input, Address: 0, Type: drivers.Float32, Scale: 1, Bit: -1},
		{Name: "current", Table: modbus.Input, Address: 6, Type: drivers.Float32, Scale: 1, Bit: -1},
		{Name: "power", Table: modbus.Input, Address: 12, Type: drivers.Float32, Scale: 1, Bit: -1},
		{Name: "energy", Table: modbus.Holding, Address: 100, Type: drivers.Uint32, Scale: 0.01, Bit: -1},
	}
	for _, r := range modbus.Plan(points, modbus.SerialMaxGap) {
		fmt.Printf("%s %d+%d for points %v\n", r.Table, r.Start, r.Count, r.Points)
	}
	// Output:
	// holding 100+2 for points [3]
	// input 0+14 for points [0 1 2]
}

// Decode reads a point from a reply, in its byte order, scaled.
func ExamplePoint_Decode() {
	p := modbus.Point{Name: "energy", Table: modbus.Holding, Address: 100, Type: drivers.Uint32,
		Order: drivers.CDAB, Scale: 0.01, Bit: -1}
	reply := []byte{0xE2, 0x40, 0x00, 0x01} // registers 100-101, low word first
	v, _ := p.Decode(reply, 100)
	fmt.Printf("%s = %.2f\n", v.Point, v.F)
	// Output: energy = 1234.56
}
