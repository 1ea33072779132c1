package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"edgegw/drivers"
	"edgegw/drivers/port"
	"edgegw/gateway/config"
	"edgegw/gateway/status"
)

// PollSession reads the devices of a config now, for `edgegw poll`: no
// buffer, no MQTT, one driver per bus opened once for every round.
type PollSession struct {
	buses []*pollBus
}

type pollBus struct {
	bus     config.Bus
	devices []config.Device
	drv     drivers.Driver
	openErr error
	live    map[string]*liveDevice
}

// ErrNoSuchDevice is a device name the config does not have.
var ErrNoSuchDevice = errors.New("no such device")

// OpenPollSession prepares the buses of cfg's devices (of the named one
// only, when device is not ""). A serial port another program holds is not
// opened: its devices fail with who holds it and what to do.
func OpenPollSession(cfg *config.Config, device string, log *slog.Logger) (*PollSession, error) {
	s := &PollSession{}
	for _, bus := range cfg.Buses {
		pb := &pollBus{bus: bus, live: map[string]*liveDevice{}}
		for _, d := range cfg.Devices {
			if d.Bus == bus.Name && (device == "" || d.Name == device) {
				pb.devices = append(pb.devices, d)
				pb.live[d.Name] = newLiveDevice(d)
			}
		}
		if len(pb.devices) == 0 {
			continue
		}
		if pb.openErr = portFree(bus); pb.openErr == nil {
			if pb.drv, pb.openErr = openDriver(bus, pb.devices, log); pb.openErr != nil {
				pb.drv = nil
			}
		}
		s.buses = append(s.buses, pb)
	}
	if len(s.buses) == 0 && device != "" {
		return nil, fmt.Errorf("%w %q in %s", ErrNoSuchDevice, device, cfg.File)
	}
	return s, nil
}

// portFree says why a bus's serial port cannot be used now: held by
// another program (by name when it can be seen, as the edgegw service
// when it is one), or missing.
func portFree(bus config.Bus) error {
	if bus.Device == "" || bus.Protocol == "modbus-tcp" {
		return nil
	}
	// Root opens a port another process holds (TIOCEXCL does not stop
	// it), and two masters on one line garble each other: look first.
	for _, h := range port.Holders(bus.Device) {
		if fields := strings.Fields(h.Command); len(fields) > 1 && filepath.Base(fields[0]) == "edgegw" && fields[1] == "run" {
			return fmt.Errorf("%s is in use by `%s` (pid %d), the edgegw service: stop it first (sudo systemctl stop edgegw), and start it again after", bus.Device, h.Command, h.PID)
		}
	}
	p, err := port.Open(bus.Device, port.Line{Device: bus.Device, Baud: bus.Baud, DataBits: bus.DataBits, Parity: bus.Parity, StopBits: bus.StopBits}.Mode())
	if errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("%s is in use by another program (the edgegw service, if it runs: sudo systemctl stop edgegw, and start it again after): %w", bus.Device, err)
	}
	if err != nil {
		return fmt.Errorf("%s cannot be opened: %w", bus.Device, err)
	}
	return p.Close()
}

// Round reads every device once (the buses side by side, the devices of a
// bus one after the other) and returns them as the page shows them, with
// each bus's traffic since the session opened.
func (s *PollSession) Round(ctx context.Context) ([]status.Device, []status.Bus) {
	var wg sync.WaitGroup
	for _, pb := range s.buses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r drivers.Reading
			for _, d := range pb.devices {
				start := time.Now()
				r.Reset(d.Name, start)
				if pb.drv != nil {
					pb.drv.Read(ctx, d.Name, &r)
				} else {
					for _, pt := range d.Points {
						r.AddError(pt.Name, pb.openErr.Error())
					}
				}
				pb.live[d.Name].note(&r, start, time.Since(start))
			}
		}()
	}
	wg.Wait()
	var devices []status.Device
	var buses []status.Bus
	for _, pb := range s.buses {
		raw, _ := pb.drv.(rawReader)
		for _, d := range pb.devices {
			devices = append(devices, pb.live[d.Name].snapshot(raw, false))
		}
		var stats []drivers.BusStats
		if sr, ok := pb.drv.(statsReporter); ok {
			stats = sr.Stats()
		}
		buses = append(buses, busTraffic(pb.bus, stats))
	}
	return devices, buses
}

// Close releases the buses.
func (s *PollSession) Close() {
	for _, pb := range s.buses {
		if pb.drv != nil {
			_ = pb.drv.Close() // a poll's ports: nothing left to lose
		}
	}
}
