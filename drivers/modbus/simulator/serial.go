package simulator

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	smodbus "github.com/simonvetter/modbus"

	"edgegw/drivers"
	"edgegw/drivers/modbus"
	"edgegw/drivers/port"
)

// ServeSerial answers Modbus RTU requests (ASCII when ascii is set) on p
// until ctx ends, as the devices of a real RS-485 line would: requests for
// other unit ids get no answer, exceptions are sent as exception replies.
// The caller closes p.
func (s *Server) ServeSerial(ctx context.Context, p port.Port, ascii bool) error {
	var buf []byte
	chunk := make([]byte, 256)
	s.log.Info("simulator_serving_serial", "ascii", ascii, "units", len(s.units))
	for ctx.Err() == nil {
		if err := p.SetReadTimeout(50 * time.Millisecond); err != nil {
			return err
		}
		n, err := p.Read(chunk)
		if err != nil {
			return fmt.Errorf("simulator: read: %w", err)
		}
		buf = append(buf, chunk[:n]...)
		for {
			frame, rest, ok := nextRequest(buf, ascii)
			progressed := len(rest) < len(buf)
			buf = rest
			if !ok {
				if progressed {
					continue // a bad frame was dropped: look at what follows
				}
				break
			}
			if len(rest) > 0 {
				s.overlaps.Add(1)
			}
			if reply := s.answer(frame); reply != nil {
				if ascii {
					reply = encodeASCII(reply)
				} else {
					reply = binary.LittleEndian.AppendUint16(reply, drivers.CRC16(reply))
				}
				if _, err := p.Write(reply); err != nil {
					return fmt.Errorf("simulator: write: %w", err)
				}
			}
		}
		if len(buf) > 1024 {
			buf = buf[:0] // noise
		}
	}
	return nil
}

// nextRequest takes the first whole, valid request (unit id and PDU, no
// checksum) off buf, returning what follows it; bytes that cannot start one
// are dropped (rest shorter than buf, ok false).
func nextRequest(buf []byte, ascii bool) (frame, rest []byte, ok bool) {
	if ascii {
		start := bytes.IndexByte(buf, ':')
		end := bytes.Index(buf, []byte("\r\n"))
		if start < 0 || end < start {
			return nil, buf, false
		}
		raw, err := hex.DecodeString(string(buf[start+1 : end]))
		if err != nil || len(raw) < 3 || lrc(raw[:len(raw)-1]) != raw[len(raw)-1] {
			return nil, buf[end+2:], false // a bad frame: dropped
		}
		return raw[:len(raw)-1], buf[end+2:], true
	}
	for len(buf) >= 8 {
		n := 8
		if fc := buf[1]; fc == 15 || fc == 16 {
			n = 9 + int(buf[6])
		}
		if len(buf) < n {
			return nil, buf, false
		}
		if binary.LittleEndian.Uint16(buf[n-2:n]) == drivers.CRC16(buf[:n-2]) {
			return buf[:n-2], buf[n:], true
		}
		buf = buf[1:] // not a frame here: resynchronise a byte later
	}
	return nil, buf, false
}

// answer handles one request (unit, PDU) and returns the reply, nil for
// units that are not simulated.
func (s *Server) answer(frame []byte) []byte {
	unit, pdu := frame[0], frame[1:]
	if _, ok := s.units[unit]; !ok || len(pdu) < 5 {
		return nil
	}
	s.requests.Add(1)
	fc := pdu[0]
	addr, qty := binary.BigEndian.Uint16(pdu[1:3]), binary.BigEndian.Uint16(pdu[3:5])
	reply := []byte{unit, fc}
	var err error
	table, _ := modbus.ReadTable(fc)
	switch fc {
	case 1, 2:
		reply, err = s.readBits(reply, unit, table, addr, qty)
	case 3, 4:
		reply, err = s.readRegisters(reply, unit, table, addr, qty)
	case 5:
		v := uint16(0)
		if qty == 0xFF00 {
			v = 1
		}
		if err = s.write(unit, modbus.Coil, addr, []uint16{v}); err == nil {
			reply = append(reply, pdu[1:5]...)
		}
	case 6:
		if err = s.write(unit, modbus.Holding, addr, []uint16{qty}); err == nil {
			reply = append(reply, pdu[1:5]...)
		}
	case 15, 16:
		if err = s.writeMultiple(unit, fc, addr, qty, pdu); err == nil {
			reply = append(reply, pdu[1:5]...)
		}
	default:
		err = smodbus.ErrIllegalFunction
	}
	if err != nil {
		return []byte{unit, fc | 0x80, exceptionCode(err)}
	}
	return reply
}

// readBits answers FC1/FC2: the bits packed eight to a byte.
func (s *Server) readBits(reply []byte, unit byte, table modbus.Table, addr, qty uint16) ([]byte, error) {
	if qty == 0 || qty > modbus.MaxBits {
		return reply, smodbus.ErrIllegalDataValue
	}
	bits, err := s.bits(unit, table, addr, qty)
	if err != nil {
		return reply, err
	}
	packed := make([]byte, (len(bits)+7)/8)
	for i, b := range bits {
		if b {
			packed[i/8] |= 1 << (i % 8)
		}
	}
	return append(append(reply, byte(len(packed))), packed...), nil
}

// readRegisters answers FC3/FC4.
func (s *Server) readRegisters(reply []byte, unit byte, table modbus.Table, addr, qty uint16) ([]byte, error) {
	if qty == 0 || qty > modbus.MaxRegisters {
		return reply, smodbus.ErrIllegalDataValue
	}
	regs, err := s.registers(unit, table, addr, qty)
	if err != nil {
		return reply, err
	}
	reply = append(reply, byte(2*len(regs)))
	for _, r := range regs {
		reply = binary.BigEndian.AppendUint16(reply, r)
	}
	return reply, nil
}

// writeMultiple carries out FC15 (coils) and FC16 (registers).
func (s *Server) writeMultiple(unit, fc byte, addr, qty uint16, pdu []byte) error {
	if len(pdu) < 6 || len(pdu) < 6+int(pdu[5]) {
		return smodbus.ErrIllegalDataValue
	}
	data := pdu[6 : 6+int(pdu[5])]
	vals := make([]uint16, qty)
	for i := range vals {
		if fc == 15 && i/8 < len(data) {
			vals[i] = uint16(data[i/8] >> (i % 8) & 1)
		} else if fc == 16 && 2*i+1 < len(data) {
			vals[i] = binary.BigEndian.Uint16(data[2*i:])
		}
	}
	table := modbus.Coil
	if fc == 16 {
		table = modbus.Holding
	}
	return s.write(unit, table, addr, vals)
}

func exceptionCode(err error) byte {
	switch {
	case errors.Is(err, smodbus.ErrIllegalFunction):
		return 1
	case errors.Is(err, smodbus.ErrIllegalDataAddress):
		return 2
	case errors.Is(err, smodbus.ErrIllegalDataValue):
		return 3
	}
	return 4 // server device failure
}

// lrc is the Modbus ASCII checksum: the two's complement of the byte sum.
func lrc(b []byte) byte {
	var sum byte
	for _, c := range b {
		sum += c
	}
	return -sum
}

func encodeASCII(frame []byte) []byte {
	out := []byte{':'}
	out = append(out, bytes.ToUpper([]byte(hex.EncodeToString(append(frame, lrc(frame)))))...)
	return append(out, '\r', '\n')
}
