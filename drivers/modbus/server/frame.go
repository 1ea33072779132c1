package server

import (
	"encoding/binary"
	"errors"
	"fmt"

	"edgegw/drivers/modbus"
)

// headerLen is the MBAP header: transaction id, protocol id, length, unit id.
const headerLen = 7

// maxLength is the largest MBAP length field: the unit id and a PDU of at
// most 253 bytes (a 260-byte ADU).
const maxLength = 254

// errFrame is an MBAP header no Modbus TCP master sends: the connection
// cannot be trusted to be in step any more, and is closed.
var errFrame = errors.New("malformed MBAP header")

// header is a parsed MBAP header.
type header struct {
	tid    uint16
	length int // bytes after the length field: the unit id and the PDU
	unit   byte
}

// parseHeader checks the 7 bytes of an MBAP header.
func parseHeader(b []byte) (header, error) {
	h := header{tid: binary.BigEndian.Uint16(b), length: int(binary.BigEndian.Uint16(b[4:])), unit: b[6]}
	if proto := binary.BigEndian.Uint16(b[2:]); proto != 0 {
		return h, fmt.Errorf("%w: protocol id %d, not 0 (Modbus)", errFrame, proto)
	}
	if h.length < 2 || h.length > maxLength {
		return h, fmt.Errorf("%w: length %d, not 2..%d", errFrame, h.length, maxLength)
	}
	return h, nil
}

// appendReply appends the reply ADU for h carrying pdu.
func appendReply(out []byte, h header, pdu []byte) []byte {
	out = binary.BigEndian.AppendUint16(out, h.tid)
	out = append(out, 0, 0)
	out = binary.BigEndian.AppendUint16(out, uint16(1+len(pdu)))
	out = append(out, h.unit)
	return append(out, pdu...)
}

// Exception codes the server answers with.
const (
	exIllegalFunction = 1
	exIllegalAddress  = 2
	exIllegalValue    = 3
	exBusy            = 6
	exTargetFailed    = 0x0B // gateway target device failed to respond
)

// request is a checked request PDU.
type request struct {
	fc           byte
	start, count uint16 // of a read or write; count 1 for FC5 and FC6
	write        bool
}

// limits are the largest counts per function code (Modbus application
// protocol 1.1b3, section 6).
var limits = map[byte]int{1: modbus.MaxBits, 2: modbus.MaxBits, 3: modbus.MaxRegisters, 4: modbus.MaxRegisters, 15: 1968, 16: 123}

// checkPDU parses a request PDU of a function code the server carries,
// or returns the exception code that answers it.
func checkPDU(pdu []byte) (request, byte) {
	if len(pdu) == 0 {
		return request{}, exIllegalFunction
	}
	r := request{fc: pdu[0]}
	switch r.fc {
	case 1, 2, 3, 4, 5, 6, 15, 16:
	default:
		return r, exIllegalFunction
	}
	if len(pdu) < 5 {
		return r, exIllegalValue
	}
	r.start, r.count = binary.BigEndian.Uint16(pdu[1:]), binary.BigEndian.Uint16(pdu[3:])
	switch r.fc {
	case 1, 2, 3, 4:
		if len(pdu) != 5 || r.count == 0 || int(r.count) > limits[r.fc] {
			return r, exIllegalValue
		}
	case 5:
		r.write = true
		if len(pdu) != 5 || r.count != 0 && r.count != 0xFF00 {
			return r, exIllegalValue
		}
		r.count = 1
	case 6:
		r.write, r.count = true, 1
		if len(pdu) != 5 {
			return r, exIllegalValue
		}
	case 15, 16:
		r.write = true
		if len(pdu) < 6 || r.count == 0 || int(r.count) > limits[r.fc] {
			return r, exIllegalValue
		}
		want := 2 * int(r.count)
		if r.fc == 15 {
			want = (int(r.count) + 7) / 8
		}
		if int(pdu[5]) != want || len(pdu) != 6+want {
			return r, exIllegalValue
		}
	}
	if int(r.start)+int(r.count) > 0x10000 {
		return r, exIllegalAddress
	}
	return r, 0
}

// exception is the PDU of exception code ex to function code fc.
func exception(fc, ex byte) []byte { return []byte{fc | 0x80, ex} }
