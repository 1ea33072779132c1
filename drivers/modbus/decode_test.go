package modbus

import (
	"edgegw/drivers"

	"encoding/hex"
	"math"
	"testing"
)

func TestDecodeByteOrders(t *testing.T) {
	tests := []struct {
		typ   drivers.Type
		order drivers.Order
		hex   string
		want  drivers.Value
	}{
		{drivers.Uint16, drivers.ABCD, "0102", drivers.Value{Kind: drivers.KindUint, U: 0x0102}},
		{drivers.Uint16, drivers.DCBA, "0201", drivers.Value{Kind: drivers.KindUint, U: 0x0102}},
		{drivers.Uint16, drivers.BADC, "0201", drivers.Value{Kind: drivers.KindUint, U: 0x0102}},
		{drivers.Uint16, drivers.CDAB, "0102", drivers.Value{Kind: drivers.KindUint, U: 0x0102}},
		{drivers.Int16, drivers.ABCD, "fffe", drivers.Value{Kind: drivers.KindInt, I: -2}},
		{drivers.Uint32, drivers.ABCD, "01020304", drivers.Value{Kind: drivers.KindUint, U: 0x01020304}},
		{drivers.Uint32, drivers.DCBA, "04030201", drivers.Value{Kind: drivers.KindUint, U: 0x01020304}},
		{drivers.Uint32, drivers.BADC, "02010403", drivers.Value{Kind: drivers.KindUint, U: 0x01020304}},
		{drivers.Uint32, drivers.CDAB, "03040102", drivers.Value{Kind: drivers.KindUint, U: 0x01020304}},
		{drivers.Int32, drivers.ABCD, "fffffff6", drivers.Value{Kind: drivers.KindInt, I: -10}},
		{drivers.Int32, drivers.CDAB, "fff6ffff", drivers.Value{Kind: drivers.KindInt, I: -10}},
		{drivers.Uint64, drivers.ABCD, "0102030405060708", drivers.Value{Kind: drivers.KindUint, U: 0x0102030405060708}},
		{drivers.Uint64, drivers.DCBA, "0807060504030201", drivers.Value{Kind: drivers.KindUint, U: 0x0102030405060708}},
		{drivers.Uint64, drivers.BADC, "0201040306050807", drivers.Value{Kind: drivers.KindUint, U: 0x0102030405060708}},
		{drivers.Uint64, drivers.CDAB, "0708050603040102", drivers.Value{Kind: drivers.KindUint, U: 0x0102030405060708}},
		{drivers.Int64, drivers.ABCD, "fffffffffffffffe", drivers.Value{Kind: drivers.KindInt, I: -2}},
		// 230.1 as float32 is 0x4366199a.
		{drivers.Float32, drivers.ABCD, "4366199a", drivers.Value{Kind: drivers.KindFloat32, F: float64(float32(230.1))}},
		{drivers.Float32, drivers.DCBA, "9a196643", drivers.Value{Kind: drivers.KindFloat32, F: float64(float32(230.1))}},
		{drivers.Float32, drivers.BADC, "66439a19", drivers.Value{Kind: drivers.KindFloat32, F: float64(float32(230.1))}},
		{drivers.Float32, drivers.CDAB, "199a4366", drivers.Value{Kind: drivers.KindFloat32, F: float64(float32(230.1))}},
		// 1234.5 as float64 is 0x40934a0000000000.
		{drivers.Float64, drivers.ABCD, "40934a0000000000", drivers.Value{Kind: drivers.KindFloat, F: 1234.5}},
		{drivers.Float64, drivers.CDAB, "000000004a004093", drivers.Value{Kind: drivers.KindFloat, F: 1234.5}},
	}
	for _, tt := range tests {
		data, _ := hex.DecodeString(tt.hex)
		p := Point{Name: "p", Table: Holding, Type: tt.typ, Order: tt.order, Bit: -1, Scale: 1}
		got, err := p.Decode(data, 0)
		tt.want.Point = "p"
		if err != nil || got != tt.want {
			t.Errorf("%v %v %s: got %+v, %v; want %+v", tt.typ, tt.order, tt.hex, got, err, tt.want)
		}
	}
}

func TestDecodeScaleBitsStringsAndOffsets(t *testing.T) {
	regs, _ := hex.DecodeString("0000" + "08fd" + "0008" + "4142434400002020") // pad, 2301, bit 3 set, "ABCD\0\0  "
	p := Point{Name: "v", Table: Input, Address: 11, Type: drivers.Uint16, Scale: 0.1, Offset: -100, Bit: -1}
	if v, err := p.Decode(regs, 10); err != nil || v.Kind != drivers.KindFloat || math.Abs(v.F-130.1) > 1e-9 {
		t.Errorf("scaled: %+v %v", v, err)
	}
	p = Point{Name: "b", Table: Holding, Address: 12, Type: drivers.Bool, Bit: 3}
	if v, _ := p.Decode(regs, 10); v.Kind != drivers.KindBool || !v.B {
		t.Errorf("bit 3: %+v", v)
	}
	p.Bit = 2
	if v, _ := p.Decode(regs, 10); v.B {
		t.Errorf("bit 2: %+v", v)
	}
	p = Point{Name: "s", Table: Holding, Address: 13, Type: drivers.String, Length: 4, Bit: -1}
	if v, _ := p.Decode(regs, 10); v.S != "ABCD" {
		t.Errorf("string: %q", v.S)
	}
	p.Order = drivers.BADC
	if v, _ := p.Decode(regs, 10); v.S != "BADC" {
		t.Errorf("byte-swapped string: %q", v.S)
	}
	p = Point{Name: "far", Table: Holding, Address: 20, Type: drivers.Float32, Bit: -1, Scale: 1}
	if _, err := p.Decode(regs, 10); err != drivers.ErrShortData {
		t.Errorf("past the reply: %v", err)
	}
	coils := []byte{0b00000101, 0b10000000}
	for addr, want := range map[uint16]bool{100: true, 101: false, 102: true, 115: true, 114: false} {
		p = Point{Name: "c", Table: Coil, Address: addr, Type: drivers.Bool, Bit: -1}
		if v, err := p.Decode(coils, 100); err != nil || v.B != want {
			t.Errorf("coil %d: %+v %v", addr, v, err)
		}
	}
}

// TestEncodeDecodeRoundTrip checks every type in every byte order both ways.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	values := map[drivers.Type]float64{drivers.Int16: -1234, drivers.Uint16: 54321, drivers.Int32: -123456789, drivers.Uint32: 3123456789,
		drivers.Int64: -1 << 60, drivers.Uint64: 1 << 62, drivers.Float32: 230.1, drivers.Float64: 1234.56789, drivers.Bool: 1}
	for typ, v := range values {
		for _, o := range []drivers.Order{drivers.ABCD, drivers.DCBA, drivers.BADC, drivers.CDAB} {
			p := Point{Name: "p", Table: Holding, Type: typ, Order: o, Bit: -1, Scale: 1}
			if typ == drivers.Bool {
				p.Bit = 5
			}
			buf := make([]byte, 2*p.Width())
			if err := p.Encode(buf, v); err != nil {
				t.Fatalf("%v %v: %v", typ, o, err)
			}
			got, err := p.Decode(buf, 0)
			if err != nil {
				t.Fatal(err)
			}
			var f float64
			switch got.Kind {
			case drivers.KindInt:
				f = float64(got.I)
			case drivers.KindUint:
				f = float64(got.U)
			case drivers.KindBool:
				if got.B {
					f = 1
				}
			default:
				f = got.F
			}
			if typ == drivers.Float32 {
				v = float64(float32(v))
			}
			if f != v {
				t.Errorf("%v %v: wrote %v, read %v", typ, o, v, f)
			}
		}
	}
	p := Point{Name: "p", Table: Holding, Type: drivers.Uint16, Bit: -1, Scale: 1}
	if err := p.Encode(make([]byte, 2), 70000); err != drivers.ErrOutOfRange {
		t.Errorf("70000 into uint16: %v", err)
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	data := make([]byte, 250)
	p := Point{Name: "p", Table: Input, Address: 40, Type: drivers.Float32, Order: drivers.CDAB, Bit: -1, Scale: 1}
	if n := testing.AllocsPerRun(1000, func() { p.Decode(data, 0) }); n != 0 {
		t.Errorf("Decode allocates %.0f times per point", n)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x43, 0x66, 0x19, 0x9a}, uint16(0), uint8(drivers.Float32), uint8(drivers.ABCD), 0, int8(-1))
	f.Add([]byte{0xff}, uint16(3), uint8(drivers.Bool), uint8(drivers.DCBA), 2, int8(15))
	f.Fuzz(func(t *testing.T, data []byte, addr uint16, typ, order uint8, length int, bit int8) {
		p := Point{Name: "p", Table: Table(typ % 4), Address: addr % 300, Type: drivers.Type(typ % 10), Order: drivers.Order(order % 4),
			Length: length % 130, Bit: int(bit) % 16, Scale: 1}
		if p.Type == drivers.String && p.Length < 1 {
			p.Length = 1
		}
		if p.Bit < 0 {
			p.Bit = 0
		}
		p.Decode(data, 0) // must not panic, whatever the reply holds
	})
}

// BenchmarkDecode decodes one float32 point from a reply.
func BenchmarkDecode(b *testing.B) {
	data := make([]byte, 250)
	p := Point{Name: "p", Table: Input, Address: 40, Type: drivers.Float32, Order: drivers.CDAB, Bit: -1, Scale: 1}
	b.ReportAllocs()
	for b.Loop() {
		p.Decode(data, 0)
	}
}
