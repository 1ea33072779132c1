package gateway

import (
	"edgegw/drivers"
	"edgegw/gateway/config"

	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"edgegw/buffer"
	"edgegw/internal/faultfs"
	"edgegw/internal/testbroker"
	"edgegw/internal/testlog"
)

// TestBufferUnavailableAtStart: the SD card answers reads with EIO at
// start. The gateway neither moves the buffer aside nor exits: /healthz
// says why it waits, and once the card reads again it opens the buffer,
// with its backlog, and polls.
func TestBufferUnavailableAtStart(t *testing.T) {
	ffs := faultfs.Mount(t)
	buf, err := buffer.Open(filepath.Join(ffs.Dir, "buffer.db"), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		buf.Append([]byte(`{"backlog":true}`))
	}
	buf.Close()
	ffs.Fail(faultfs.Fault{Kind: faultfs.Read, Name: "buffer.db", Errno: syscall.EIO})

	status := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	path := filepath.Join(t.TempDir(), "sensors.toml")
	doc := fmt.Sprintf(reloadConfig, ffs.Dir, "tcp://127.0.0.1:1", 1, "", status, device("a"))
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	drv := countingDriver{mu: &sync.Mutex{}, polls: map[string]int{}}
	logs := &testlog.Sink{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Options{
			Open:   func(config.Bus, []config.Device, *slog.Logger) (drivers.Driver, error) { return drv, nil },
			Logger: slog.New(slog.NewTextHandler(logs, nil)), Version: "test",
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	healthz := func() (int, string) {
		resp, err := http.Get("http://" + status + "/healthz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	waitHealth := func(want int, contains string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			code, body := healthz()
			if code == want && strings.Contains(body, contains) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/healthz %d %q, want %d with %q; log:\n%s", code, body, want, contains, logs.String())
			}
			time.Sleep(20 * time.Millisecond) // polling an HTTP endpoint
		}
	}
	waitHealth(http.StatusServiceUnavailable, "storage unavailable")
	if aside, _ := filepath.Glob(filepath.Join(ffs.Dir, "buffer.db.corrupt-*")); len(aside) > 0 {
		t.Fatalf("the buffer was moved aside on EIO: %v", aside)
	}
	ffs.Heal()
	waitHealth(http.StatusOK, "ok")
	if !strings.Contains(logs.String(), "msg=buffer_opened") || !strings.Contains(logs.String(), "readings=5") {
		t.Fatalf("the backlog did not survive:\n%s", logs.String())
	}
}
