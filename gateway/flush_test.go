package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"edgegw/drivers"
	"edgegw/gateway/config"
	"edgegw/internal/testbroker"
)

// TestQuietBusesCommitAtOnce: when no bus polls again within the commit
// interval, a reading is committed (and published) right after its poll,
// not at the interval's end: here a minute.
func TestQuietBusesCommitAtOnce(t *testing.T) {
	br := testbroker.Start(t)
	sub := testbroker.Subscribe(t, br.Addr(), "edgegw/quiet/meter")
	path := filepath.Join(t.TempDir(), "sensors.toml")
	doc := fmt.Sprintf(`
[gateway]
id = "quiet"
data_dir = %q
[mqtt]
brokers = [%q]
[status]
listen = ""
[buffer]
commit_interval = "1m"
[[bus]]
name = "b"
protocol = "modbus-tcp"
address = "127.0.0.1:1"
[[device]]
name = "meter"
bus = "b"
interval = "1h"
  [[device.point]]
  name = "n"
`, t.TempDir(), br.URL())
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	drv := &fakeDriver{reads: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Options{Open: func(config.Bus, []config.Device, *slog.Logger) (drivers.Driver, error) { return drv, nil },
			Logger: slog.New(slog.DiscardHandler), Version: "test"})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(sub.Messages()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the reading of a bus quiet for an hour waited for the commit interval (a minute)")
		}
		time.Sleep(20 * time.Millisecond) // polling the subscriber
	}
}
