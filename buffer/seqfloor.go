package buffer

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// seqReserve is how far ahead of the last seq the ceiling is kept: the side
// file is rewritten about once per seqReserve/2 records, a few bytes in place.
const seqReserve = 100000

// seqFloor keeps, in a small file beside the buffer, a ceiling that seq
// numbers never pass without raising it first (fsynced). If the buffer file
// is ever damaged beyond reading, the fresh one starts above the ceiling, so
// a seq is never reused and consumers deduping on seq lose nothing new.
type seqFloor struct {
	f    *os.File
	ceil uint64
}

func openSeqFloor(path string) (*seqFloor, error) {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("buffer: %w", err)
	}
	if os.IsNotExist(statErr) {
		if err := syncDir(path); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	// An unreadable value counts as 0: the buffer file's own counter and
	// the first reserve() rebuild it.
	ceil, _ := strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 10, 64)
	return &seqFloor{f: f, ceil: ceil}, nil
}

func (s *seqFloor) ceiling() uint64 { return s.ceil }

// reserve makes sure seq numbers up to upTo are below the ceiling, with room to spare.
func (s *seqFloor) reserve(upTo uint64) error {
	if upTo+seqReserve/2 <= s.ceil {
		return nil
	}
	next := upTo + seqReserve
	// Fixed width, written in place: no new blocks after the first write,
	// so it works on a full disk too.
	if _, err := s.f.WriteAt([]byte(fmt.Sprintf("%020d\n", next)), 0); err != nil {
		return fmt.Errorf("buffer: reserve seq numbers: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("buffer: reserve seq numbers: %w", err)
	}
	s.ceil = next
	return nil
}

func (s *seqFloor) close() error { return s.f.Close() }
