// Package serial reads sensors on serial lines for the gateway. For now it
// lists the machine's serial ports (go.bug.st/serial's enumerator); line and
// frame drivers come with the serial sensor work.
package serial

import (
	"fmt"

	"go.bug.st/serial/enumerator"
)

// Port is a serial port of this machine.
type Port struct {
	Name string
	// USB is true for USB adapters; then VID, PID and SerialNumber are known.
	USB          bool
	VID, PID     string
	SerialNumber string
	Product      string
}

// Ports lists the serial ports of this machine.
func Ports() ([]Port, error) {
	list, err := enumerator.GetDetailedPortsList()
	if err != nil {
		return nil, fmt.Errorf("serial: list ports: %w", err)
	}
	out := make([]Port, 0, len(list))
	for _, p := range list {
		out = append(out, Port{Name: p.Name, USB: p.IsUSB, VID: p.VID, PID: p.PID, SerialNumber: p.SerialNumber, Product: p.Product})
	}
	return out, nil
}
