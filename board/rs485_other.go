//go:build !linux

package board

import "errors"

// EnableRS485 is Linux only.
func EnableRS485(device string) error { return errors.New("rs485 mode: only on Linux") }
