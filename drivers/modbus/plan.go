package modbus

import "sort"

// Protocol limits of one read request.
const (
	MaxRegisters = 125  // FC3, FC4
	MaxBits      = 2000 // FC1, FC2
)

// SerialMaxGap is how many unused registers a request on a serial line may
// read to save a second request: a request costs about 20 characters of
// wire time (its 8 bytes, the reply's 5 of framing, two 3.5-character
// silences) plus the device's turnaround; an unused register costs 2.
const SerialMaxGap = 10

// MaxGapFor is the gap a bus bridges: its max_gap, or by protocol when -1.
func MaxGapFor(o Options) int {
	switch {
	case o.MaxGap >= 0:
		return o.MaxGap
	case o.Mode == TCP:
		return MaxRegisters // a round trip costs more than any bytes
	default:
		return SerialMaxGap
	}
}

// Request is one read of a contiguous range of a table, serving some points.
type Request struct {
	Table Table
	Start uint16
	Count uint16
	// Points are indexes into the slice given to Plan.
	Points []int
}

// Plan coalesces points into as few requests as the protocol limits allow,
// reading across gaps of at most maxGap unused registers (16 times as many
// bits in the bit tables).
func Plan(points []Point, maxGap int) []Request {
	idx := make([]int, len(points))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		pa, pb := &points[idx[a]], &points[idx[b]]
		if pa.Table != pb.Table {
			return pa.Table < pb.Table
		}
		return pa.Address < pb.Address
	})
	var reqs []Request
	var end int // one past the last address of the open request
	for _, i := range idx {
		p := &points[i]
		limit, gap := MaxRegisters, maxGap
		if p.Table.bits() {
			limit, gap = MaxBits, maxGap*16
		}
		pEnd := int(p.Address) + p.Width()
		if n := len(reqs); n > 0 {
			r := &reqs[n-1]
			newEnd := max(end, pEnd)
			if r.Table == p.Table && int(p.Address)-end <= gap && newEnd-int(r.Start) <= limit {
				r.Points = append(r.Points, i)
				end = newEnd
				r.Count = uint16(end - int(r.Start))
				continue
			}
		}
		reqs = append(reqs, Request{Table: p.Table, Start: p.Address, Count: uint16(p.Width()), Points: []int{i}})
		end = pEnd
	}
	return reqs
}
