// Package serial reads sensors that talk plain text or fixed frames on a
// serial line, not Modbus: key=value lines, CSV, anything a regular
// expression reads, pushed by the sensor or asked for with a request. It
// frames what arrives (lines or fixed-length frames), skips noise and cut
// frames, and reopens a port that went away. It also lists the machine's
// serial ports (go.bug.st/serial's enumerator).
package serial

import (
	"fmt"

	"go.bug.st/serial/enumerator"
)

// PortInfo describes a serial port of this machine.
type PortInfo struct {
	Name string
	// USB is true for USB adapters; then VID, PID and SerialNumber are known.
	USB          bool
	VID, PID     string
	SerialNumber string
	Product      string
}

// Ports lists the serial ports of this machine.
func Ports() ([]PortInfo, error) {
	list, err := enumerator.GetDetailedPortsList()
	if err != nil {
		return nil, fmt.Errorf("serial: list ports: %w", err)
	}
	out := make([]PortInfo, 0, len(list))
	for _, p := range list {
		out = append(out, PortInfo{Name: p.Name, USB: p.IsUSB, VID: p.VID, PID: p.PID, SerialNumber: p.SerialNumber, Product: p.Product})
	}
	return out, nil
}
