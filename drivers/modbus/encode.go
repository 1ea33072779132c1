package modbus

// Encode writes value, an engineering value (after scale and offset), as
// the registers of p into dst (2*Width() bytes, in p's byte order): the
// inverse of Decode. Integer types round to the nearest raw value.
func (p *Point) Encode(dst []byte, value float64) error {
	c := p.codec()
	if p.Table.bits() {
		c.Bit = -1 // a coil is one bit: written as 0 or 1
	}
	return c.Encode(dst, value)
}

// EncodeString writes s into the Length registers of a string point,
// padded with NULs.
func (p *Point) EncodeString(dst []byte, s string) error {
	c := p.codec()
	return c.EncodeString(dst, s)
}
