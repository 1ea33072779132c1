package simulator

import (
	"log/slog"
	"testing"

	"edgegw/drivers/modbus"
)

// FuzzRequests feeds the simulator's request framer and handler arbitrary
// line bytes, RTU and ASCII: no panic, and replies only for its own units.
func FuzzRequests(f *testing.F) {
	f.Add([]byte{7, 3, 0, 0, 0, 2, 0xc5, 0xad}, false)
	f.Add([]byte(":070300000002F4\r\n"), true)
	f.Add([]byte{7, 16, 0, 0, 0, 1, 2, 0, 5, 0, 0}, false)
	devices := []modbus.Device{{Name: "d", UnitID: 7, Points: []modbus.PointSpec{
		{Name: "p", Table: "holding", Type: "uint16", ByteOrder: "ABCD", Bit: -1, Scale: 1}}}}
	sim, err := New(devices, "", slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte, ascii bool) {
		for i := 0; i < 64; i++ {
			frame, rest, ok := nextRequest(b, ascii)
			if len(rest) > len(b) {
				t.Fatal("rest grew")
			}
			if ok {
				if reply := sim.answer(frame); reply != nil && reply[0] != 7 {
					t.Fatalf("a reply for unit %d", reply[0])
				}
			}
			if !ok && len(rest) == len(b) {
				break
			}
			b = rest
		}
	})
}
