package uplink

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the uplink (and autopaho under it) starts must be gone
// once Run has returned.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
