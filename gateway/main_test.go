package gateway

import (
	"testing"

	"go.uber.org/goleak"

	"edgegw/internal/faultfs"
)

func TestMain(m *testing.M) {
	faultfs.ServeIfAsked()
	serveGatewayIfAsked()
	goleak.VerifyTestMain(m)
}
