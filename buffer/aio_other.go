//go:build !linux

package buffer

import (
	"errors"
	"os"
)

// aioWriter is Linux AIO (aio_linux.go); elsewhere the log uses pwrite.
type aioWriter struct{ broken bool }

var errAIORefused = errors.New("aio refused the write")

func getAIOWriter(*os.File) (*aioWriter, error) { return nil, errors.New("no Linux AIO here") }

func (*aioWriter) writeAt([]byte, int64) error { return errAIORefused }

func (*aioWriter) release() {}
