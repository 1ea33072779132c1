package board

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// serialRS485 is the kernel's struct serial_rs485.
type serialRS485 struct {
	flags              uint32
	delayRTSBeforeSend uint32
	delayRTSAfterSend  uint32
	padding            [5]uint32
}

// Flags of serial_rs485.
const (
	serRS485Enabled   = 1 << 0
	serRS485RTSOnSend = 1 << 1
)

// EnableRS485 puts a UART in the kernel's RS-485 mode (TIOCSRS485): the
// driver raises RTS, wired to the transceiver's driver-enable pin, while it
// sends, and drops it to listen. Boards whose transceivers switch direction
// by themselves (most USB adapters, many HATs) do not need it. The setting
// belongs to the port, not the file descriptor, so it holds for the port
// opened by the bus.
func EnableRS485(device string) error {
	f, err := os.OpenFile(device, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("rs485 mode on %s: %w", device, err)
	}
	defer func() { _ = f.Close() }()
	cfg := serialRS485{flags: serRS485Enabled | serRS485RTSOnSend}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.TIOCSRS485, uintptr(unsafe.Pointer(&cfg))); errno != 0 {
		return fmt.Errorf("rs485 mode on %s: the port's driver refuses TIOCSRS485 (%w): it has no kernel RS-485 support", device, errno)
	}
	return nil
}
