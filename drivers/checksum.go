package drivers

// CRC16 is the Modbus CRC (polynomial 0xA001, reflected, start 0xFFFF),
// sent low byte first; serial sensors use it too.
func CRC16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// ChecksumNames lists the frame checksums of sensors.toml; "" is none.
func ChecksumNames() []string { return []string{"", "sum8", "xor8", "crc16"} }

// ChecksumSize is how many bytes a checksum of the named kind takes.
func ChecksumSize(kind string) int {
	switch kind {
	case "sum8", "xor8":
		return 1
	case "crc16":
		return 2
	}
	return 0
}

// ChecksumOK reports whether frame ends with a good checksum of kind over
// the bytes before it; every frame is good for kind "".
func ChecksumOK(kind string, frame []byte) bool {
	n := len(frame)
	switch kind {
	case "sum8", "xor8":
		if n < 1 {
			return false
		}
		var s byte
		for _, c := range frame[:n-1] {
			if kind == "sum8" {
				s += c
			} else {
				s ^= c
			}
		}
		return s == frame[n-1]
	case "crc16":
		return n >= 3 && CRC16(frame[:n-2]) == uint16(frame[n-2])|uint16(frame[n-1])<<8
	}
	return true
}
