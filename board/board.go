// Package board knows the hardware edgegw runs on: which profile fits the
// machine and what that profile says about it. Nothing here is required on a
// plain PC: detection falls back to the generic profile when no hardware file
// is present.
package board

import (
	"os"
	"sort"
	"strings"
)

// Profile describes one kind of board.
type Profile struct {
	// Name is what gateway.board names in sensors.toml.
	Name string
	// Description is shown in the log at start.
	Description string
	// SerialPorts names the board's own serial ports, in the order a user
	// would try them; informative, shown by `edgegw ports`.
	SerialPorts []string
}

var profiles = map[string]Profile{
	"generic": {
		Name:        "generic",
		Description: "generic Linux machine",
	},
	"raspberrypi": {
		Name:        "raspberrypi",
		Description: "Raspberry Pi",
		SerialPorts: []string{"/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0"},
	},
}

// Names lists the profiles gateway.board may name, besides "auto".
func Names() []string {
	names := make([]string, 0, len(profiles))
	for n := range profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the named profile.
func Lookup(name string) (Profile, bool) {
	p, ok := profiles[name]
	return p, ok
}

// DeviceTreeModel is where Linux on ARM boards names the board.
const DeviceTreeModel = "/proc/device-tree/model"

// Detect picks the profile for this machine from the device-tree model file
// (DeviceTreeModel outside tests); a missing file means a generic machine.
func Detect(modelFile string) Profile {
	model, err := os.ReadFile(modelFile)
	if err == nil && strings.HasPrefix(string(model), "Raspberry Pi") {
		p := profiles["raspberrypi"]
		p.Description = strings.TrimRight(string(model), "\x00\n")
		return p
	}
	return profiles["generic"]
}

// Select returns the profile gateway.board names, detecting it for "auto".
func Select(name string) Profile {
	if p, ok := profiles[name]; ok {
		return p
	}
	return Detect(DeviceTreeModel)
}
