package server

import (
	"context"
	"testing"
	"time"
)

// FuzzRequest: whatever bytes a client sends, the header and PDU checks
// neither panic nor pass a request the bus could not carry, and every
// answer is a well-formed reply PDU.
func FuzzRequest(f *testing.F) {
	for _, seed := range [][]byte{
		adu(1, 1, 3, 0, 0, 0, 10),
		adu(2, 1, 1, 0, 0, 7, 0xD0),
		adu(3, 1, 16, 0, 1, 0, 2, 4, 0, 1, 0, 2),
		adu(4, 1, 15, 0, 1, 0, 9, 2, 0xFF, 1),
		adu(5, 1, 5, 0, 1, 0xFF, 0),
		adu(6, 2, 0x2B, 0x0E),
		{0, 1, 0, 1, 0, 6, 1, 3, 0, 0, 0, 1},
		{0, 1, 0, 0, 1, 0, 1},
	} {
		f.Add(seed)
	}
	s := New(Config{Units: []byte{1}, Writes: true, Cache: time.Second}, &fakeBus{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < headerLen {
			return
		}
		h, err := parseHeader(b[:headerLen])
		if err != nil {
			return
		}
		pdu := b[headerLen:]
		if len(pdu) > h.length-1 {
			pdu = pdu[:h.length-1]
		}
		if req, ex := checkPDU(pdu); ex == 0 {
			if req.count == 0 || int(req.start)+int(req.count) > 0x10000 || len(pdu) < 5 {
				t.Fatalf("passed %+v from % x", req, pdu)
			}
		}
		if len(pdu) == 0 {
			return // the read loop never hands on an empty PDU: length ≥ 2
		}
		reply, _ := s.answer(context.Background(), h.unit, pdu)
		if len(reply) < 2 || reply[0] != pdu[0] && reply[0] != pdu[0]|0x80 {
			t.Fatalf("reply % x to % x", reply, pdu)
		}
	})
}
