package modbus

import (
	"fmt"
	"testing"

	"edgegw/drivers"
)

func pts(spec ...any) []Point {
	var out []Point
	for i := 0; i < len(spec); i += 3 {
		out = append(out, Point{Name: fmt.Sprint(i / 3), Table: spec[i].(Table), Address: uint16(spec[i+1].(int)), Type: spec[i+2].(drivers.Type), Bit: -1, Scale: 1})
	}
	return out
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name   string
		points []Point
		gap    int
		want   string
	}{
		{"one point", pts(Input, 0, drivers.Float32), 10, "[input 0+2 [0]]"},
		{"adjacent merge", pts(Input, 0, drivers.Float32, Input, 2, drivers.Float32, Input, 4, drivers.Uint16), 10, "[input 0+5 [0 1 2]]"},
		{"small gap bridged", pts(Input, 0, drivers.Float32, Input, 12, drivers.Float32), 10, "[input 0+14 [0 1]]"},
		{"large gap split", pts(Input, 0, drivers.Float32, Input, 13, drivers.Float32), 10, "[input 0+2 [0] input 13+2 [1]]"},
		{"no gap allowed", pts(Input, 0, drivers.Uint16, Input, 2, drivers.Uint16), 0, "[input 0+1 [0] input 2+1 [1]]"},
		{"tables apart", pts(Holding, 0, drivers.Uint16, Input, 1, drivers.Uint16), 10, "[holding 0+1 [0] input 1+1 [1]]"},
		{"unsorted input", pts(Input, 10, drivers.Uint16, Input, 0, drivers.Uint16, Input, 5, drivers.Uint16), 10, "[input 0+11 [1 2 0]]"},
		{"overlap", pts(Holding, 0, drivers.Uint32, Holding, 1, drivers.Uint16), 10, "[holding 0+2 [0 1]]"},
		{"125 register limit", pts(Holding, 0, drivers.Uint16, Holding, 123, drivers.Float32, Holding, 125, drivers.Uint16), 200, "[holding 0+125 [0 1] holding 125+1 [2]]"},
		{"2000 bit limit", pts(Coil, 0, drivers.Bool, Coil, 1999, drivers.Bool, Coil, 2000, drivers.Bool), 5000, "[coil 0+2000 [0 1] coil 2000+1 [2]]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, r := range Plan(tt.points, tt.gap) {
				got = append(got, fmt.Sprintf("%v %d+%d %v", r.Table, r.Start, r.Count, r.Points))
			}
			if s := fmt.Sprint(got); s != tt.want {
				t.Errorf("got  %s\nwant %s", s, tt.want)
			}
		})
	}
}
