// Package testlog is a log sink for tests: slog handlers write to it from
// any goroutine, the test reads what was logged.
package testlog

import (
	"bytes"
	"sync"
)

// Sink collects log output; safe for concurrent writes. The zero value is ready.
type Sink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything logged so far.
func (s *Sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
