package uplink

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the uplink (and autopaho under it) starts must be gone
// once Run has returned. Toxiproxy, the fault injector of the tests, now and
// then leaves a toxic's pipe blocked after Stop: its own, not ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"))
}
