package modbus

import (
	"sort"
)

// Protocol limits of one read request.
const (
	MaxRegisters = 125  // FC3, FC4
	MaxBits      = 2000 // FC1, FC2
)

// DefaultMaxGap is how many unused registers (or bits) a request may read
// to avoid a second request. A request costs a round trip and, on RS-485, a
// 3.5-character silence and a header each way; a few unused registers cost
// 2 bytes each.
const DefaultMaxGap = 10

// Request is one read of a contiguous range of a table, serving some points.
type Request struct {
	Table Table
	Start uint16
	Count uint16
	// Points are indexes into the slice given to Plan.
	Points []int
}

// Plan coalesces points into as few requests as the protocol limits allow,
// reading across gaps of at most maxGap unused addresses.
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
		limit := MaxRegisters
		if p.Table.bits() {
			limit = MaxBits
		}
		pEnd := int(p.Address) + p.Width()
		if n := len(reqs); n > 0 {
			r := &reqs[n-1]
			newEnd := max(end, pEnd)
			if r.Table == p.Table && int(p.Address)-end <= maxGap && newEnd-int(r.Start) <= limit {
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
