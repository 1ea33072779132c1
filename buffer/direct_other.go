//go:build !linux

package buffer

import (
	"errors"
	"os"
)

func openDirect(string) (*os.File, error) { return nil, errors.New("no O_DIRECT here") }

func dropCache(*os.File) {}

func alignedBuffer(n int) []byte { return make([]byte, n) }
