package gateway

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"edgegw/drivers"
	"edgegw/drivers/modbus"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestGolden")

// TestGolden runs each testdata/golden/<case>/sensors.toml through the whole
// path a poll takes, without a wire: config → driver options → request plan
// → the reading decoded from a fixed register image → the MQTT payload.
// The result must match expected.golden; go test -run Golden -update
// rewrites it after a deliberate change (review the diff).
func TestGolden(t *testing.T) {
	dirs, _ := filepath.Glob("testdata/golden/*")
	if len(dirs) == 0 {
		t.Fatal("no golden cases")
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			got := goldenRun(t, dir)
			file := filepath.Join(dir, "expected.golden")
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test -run Golden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the golden file; got:\n%s", dir, got)
			}
		})
	}
}

// goldenRun describes the plan and the reading of every Modbus device of a case.
func goldenRun(t *testing.T, dir string) []byte {
	t.Helper()
	cfg, err := LoadConfig(filepath.Join(dir, "sensors.toml"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, bus := range cfg.Buses {
		b, err := busFor(bus, devicesOn(cfg, bus.Name), nil)
		if err != nil {
			t.Fatal(err)
		}
		if b.modbus == nil {
			fmt.Fprintf(&out, "bus %s (%s): no Modbus plan\n", bus.Name, bus.Protocol)
			continue
		}
		o := b.modbus
		fmt.Fprintf(&out, "bus %s (%s, max gap %d)\n", o.Name, o.Mode, modbus.MaxGapFor(*o))
		for _, d := range o.Devices {
			goldenDevice(t, &out, d, modbus.MaxGapFor(*o))
		}
	}
	return out.Bytes()
}

func goldenDevice(t *testing.T, out *bytes.Buffer, d modbus.Device, maxGap int) {
	var points []modbus.Point
	for _, s := range d.Points {
		p, err := modbus.ParsePoint(s)
		if err != nil {
			t.Fatal(err)
		}
		points = append(points, p)
	}
	plan := modbus.Plan(points, maxGap)
	fmt.Fprintf(out, "  device %s (unit %d): %d points in %d requests\n", d.Name, d.UnitID, len(points), len(plan))
	values := make([]drivers.Value, len(points))
	errs := make([]error, len(points))
	for _, req := range plan {
		var names []string
		data := registerImage(req)
		for _, i := range req.Points {
			names = append(names, points[i].Name)
			values[i], errs[i] = points[i].Decode(data, req.Start)
		}
		fmt.Fprintf(out, "    %s %d+%d: %s\n", req.Table, req.Start, req.Count, strings.Join(names, " "))
	}
	r := &drivers.Reading{}
	r.Reset(d.Name, time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	for i := range points {
		if errs[i] != nil {
			r.AddError(points[i].Name, errs[i].Error())
		} else {
			r.Add(values[i])
		}
	}
	_, payload, err := Message(nil, "edgegw/golden", 1, AppendEntry(nil, r))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(out, "    payload %s\n", payload)
}

// registerImage is what a device answers to req in these tests: register a
// holds a*0x0101 + 0x1234 (table-independent, every byte distinct enough to
// show byte orders); coil or discrete input a is on when a%3 == 0.
func registerImage(req modbus.Request) []byte {
	if req.Table == modbus.Coil || req.Table == modbus.Discrete {
		data := make([]byte, (int(req.Count)+7)/8)
		for i := range int(req.Count) {
			if (int(req.Start)+i)%3 == 0 {
				data[i/8] |= 1 << (i % 8)
			}
		}
		return data
	}
	data := make([]byte, 2*int(req.Count))
	for i := range int(req.Count) {
		binary.BigEndian.PutUint16(data[2*i:], uint16((int(req.Start)+i)*0x0101+0x1234))
	}
	return data
}
