package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	gmodbus "github.com/goburrow/modbus"
)

// ErrBadReply is a reply that does not answer the request it followed
// (another function code, or a byte count the request did not ask for).
var ErrBadReply = errors.New("modbus: reply does not answer the request")

// Transact sends one request PDU (function code, then data) to unit and
// returns the reply PDU as the device sent it; an exception reply is a
// reply, not an error. A request that gets no reply, or a broken one, is
// tried again like a poll's (retries), and the last error is returned:
// so it is on the wire for at most timeout × (1 + retries). Read replies
// refresh the image; a write drops what it may have changed, answered or
// not. Like Read, it must be called from the bus's goroutine.
func (b *Bus) Transact(ctx context.Context, unit byte, pdu []byte) ([]byte, error) {
	if len(pdu) == 0 {
		return nil, fmt.Errorf("%w: empty request", ErrBadReply)
	}
	req := &gmodbus.ProtocolDataUnit{FunctionCode: pdu[0], Data: pdu[1:]}
	defer b.dropWritten(unit, pdu)
	var err error
	for try := 0; try <= b.retries; try++ {
		if err = ctx.Err(); err != nil {
			return nil, err
		}
		var reply []byte
		if reply, err = b.transact(unit, req); err == nil {
			b.storeRead(unit, pdu, reply)
			return reply, nil
		}
		b.reset()
	}
	return nil, fmt.Errorf("modbus: unit %d, function %d on bus %s: %s", unit, pdu[0], b.name, describe(err, b.timeout))
}

// transact is one try of Transact.
func (b *Bus) transact(unit byte, req *gmodbus.ProtocolDataUnit) ([]byte, error) {
	b.setUnit(unit)
	adu, err := b.packager.Encode(req)
	if err != nil {
		return nil, err
	}
	resp, err := b.transporter.Send(adu)
	if err != nil {
		return nil, err
	}
	if err := b.packager.Verify(adu, resp); err != nil {
		return nil, err
	}
	got, err := b.packager.Decode(resp)
	if err != nil {
		return nil, err
	}
	reply := append([]byte{got.FunctionCode}, got.Data...)
	switch fc := req.FunctionCode; {
	case got.FunctionCode == fc|0x80 && len(got.Data) == 1:
		return reply, nil // an exception, passed on as it came
	case got.FunctionCode != fc:
		return nil, fmt.Errorf("%w: function code %d after a request of %d", ErrBadReply, got.FunctionCode, fc)
	case fc >= 1 && fc <= 4:
		if want := readReplyBytes(fc, req.Data); len(got.Data) == 0 || int(got.Data[0]) != want || len(got.Data) != 1+want {
			return nil, fmt.Errorf("%w: %d data bytes where %d were asked for", ErrBadReply, len(got.Data)-1, want)
		}
	}
	return reply, nil
}

// ReadTable is the table a read function code (1 to 4) reads; ok is false
// for any other code.
func ReadTable(fc byte) (t Table, ok bool) {
	if fc < 1 || fc > 4 {
		return 0, false
	}
	return [5]Table{1: Coil, 2: Discrete, 3: Holding, 4: Input}[fc], true
}

// readReplyBytes is how many data bytes a read request asks for.
func readReplyBytes(fc byte, data []byte) int {
	if len(data) < 4 {
		return -1
	}
	count := int(binary.BigEndian.Uint16(data[2:]))
	if t, _ := ReadTable(fc); t.bits() {
		return (count + 7) / 8
	}
	return 2 * count
}

// storeRead puts the answer of a read request into the image.
func (b *Bus) storeRead(unit byte, pdu, reply []byte) {
	table, ok := ReadTable(pdu[0])
	if !ok || reply[0] != pdu[0] || len(pdu) < 5 {
		return
	}
	start, count := binary.BigEndian.Uint16(pdu[1:]), binary.BigEndian.Uint16(pdu[3:])
	b.image.Store(unit, table, start, count, reply[2:], time.Now())
}

// dropWritten forgets in the image what a write request may have changed.
func (b *Bus) dropWritten(unit byte, pdu []byte) {
	if len(pdu) < 5 {
		return
	}
	addr, count := binary.BigEndian.Uint16(pdu[1:]), binary.BigEndian.Uint16(pdu[3:])
	switch pdu[0] {
	case 5:
		b.image.Drop(unit, Coil, addr, 1)
	case 6:
		b.image.Drop(unit, Holding, addr, 1)
	case 15:
		b.image.Drop(unit, Coil, addr, count)
	case 16:
		b.image.Drop(unit, Holding, addr, count)
	}
}
