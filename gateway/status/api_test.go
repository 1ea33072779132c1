package status

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"edgegw/internal/testlog"
)

// TestAPIEncoding: the hand-made JSON of the devices is valid and says
// what the page needs, for a device whose readings are kept and one whose
// values are composed from its points (report by exception).
func TestAPIEncoding(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	devices := []Device{
		{Name: "meter", Bus: "rs485", Interval: time.Second, Polls: 7, LastPoll: now.Add(-time.Second), PollTook: 40 * time.Millisecond,
			PointsJSON: []byte(`[{"name":"voltage","unit":"V"},{"name":"freq","unit":"<b>Hz</b>"}]`),
			Reading:    []byte(`{"ts":"2026-12-05T11:59:59.000Z","device":"meter","values":{"voltage":230.5},"errors":{"freq":"timeout"}}`),
			Previous:   []byte(`{"ts":"2026-12-05T11:59:58.000Z","device":"meter","values":{"voltage":230.1,"freq":50},"errors":{}}`),
			Points:     []Point{{Name: "freq", Value: "50", At: now.Add(-2 * time.Second), Error: "timeout"}}},
		{Name: "rbe \"quoted\"", Bus: "rs485", LastPoll: now.Add(-time.Second), FailingSince: now.Add(-time.Second),
			LastError: "a: modbus exception 2", LastErrorAt: now,
			PointsJSON: []byte(`[{"name":"a"},{"name":"b"}]`),
			Points: []Point{{Name: "a", Value: "1", Previous: "0", At: now, Error: "modbus exception 2"},
				{Name: "b", Value: "true", Previous: "false", At: now, Raw: "0001"}}},
		{Name: "new", PointsJSON: []byte(`[]`)},
	}
	body, err := BuildAPI(Report{Gateway: Gateway{ID: "gw", Started: now.Add(-time.Hour)}}, devices, now, now.Add(-time.Hour), 1.5, true).Encode()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Now     time.Time `json:"now"`
		Devices []struct {
			Name         string              `json:"name"`
			State        string              `json:"state"`
			FailingSince *time.Time          `json:"failing_since"`
			Points       []map[string]string `json:"points"`
			Reading      *struct {
				Values map[string]any    `json:"values"`
				Errors map[string]string `json:"errors"`
			} `json:"reading"`
			Previous *struct {
				Values map[string]any `json:"values"`
			} `json:"previous"`
			Stale map[string]struct {
				Value any       `json:"value"`
				At    time.Time `json:"at"`
			} `json:"stale"`
			Raw map[string]string `json:"raw"`
		} `json:"devices"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%v:\n%s", err, body)
	}
	m, r, n := got.Devices[0], got.Devices[1], got.Devices[2]
	if m.State != "answering" || m.Reading.Values["voltage"] != 230.5 || m.Previous.Values["voltage"] != 230.1 || m.Reading.Errors["freq"] != "timeout" {
		t.Errorf("kept readings: %+v", m)
	}
	if m.Stale["freq"].Value != 50.0 || !m.Stale["freq"].At.Equal(now.Add(-2*time.Second)) || m.Points[1]["unit"] != "<b>Hz</b>" {
		t.Errorf("a point in error keeps its last value: %+v, points %v", m.Stale, m.Points)
	}
	if r.Name != `rbe "quoted"` || r.State != "failing" || r.FailingSince == nil {
		t.Errorf("composed device: %+v", r)
	}
	if _, ok := r.Reading.Values["a"]; ok || r.Reading.Values["b"] != true || r.Reading.Errors["a"] != "modbus exception 2" || r.Previous.Values["a"] != 0.0 {
		t.Errorf("composed reading: %+v previous %+v", r.Reading, r.Previous)
	}
	if r.Stale["a"].Value != 1.0 || r.Raw["b"] != "0001" {
		t.Errorf("composed stale %+v raw %+v", r.Stale, r.Raw)
	}
	if n.State != "waiting" || n.Reading != nil || n.Previous != nil {
		t.Errorf("a device not polled yet: %+v", n)
	}
}

// TestConsoleHeaders: the page comes with a policy that forbids inline
// script and other origins, and is not served with console = false.
func TestConsoleHeaders(t *testing.T) {
	s := &Server{Source: func() Report { return Report{} }, Console: true}
	rec := httptest.NewRecorder()
	consoleHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	csp := rec.Header().Get("Content-Security-Policy")
	if rec.Code != 200 || !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") {
		t.Errorf("status %d, policy %q", rec.Code, csp)
	}
	if !strings.Contains(rec.Body.String(), `<script src="app.js" defer></script>`) || strings.Contains(rec.Body.String(), "<script>") {
		t.Error("the page must load its script from a file, with no inline script")
	}
	rec = httptest.NewRecorder()
	s.api(rec, httptest.NewRequest(http.MethodGet, "/api/v1/status", nil))
	if rec.Code != 200 || !json.Valid(rec.Body.Bytes()) {
		t.Errorf("api: %d %s", rec.Code, rec.Body)
	}
}

// TestConsoleExposedIsLogged: a page reachable from the network says so at
// start; on loopback it says nothing.
func TestConsoleExposedIsLogged(t *testing.T) {
	for _, tc := range []struct {
		listen string
		warn   bool
	}{{"127.0.0.1:0", false}, {"0.0.0.0:0", true}} {
		var sink testlog.Sink
		s := &Server{Listen: tc.listen, Log: slog.New(slog.NewTextHandler(&sink, nil)), Source: func() Report { return Report{} }, Console: true}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(sink.String(), "status_listening") {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the server never listened:\n%s", tc.listen, sink.String())
			}
			time.Sleep(5 * time.Millisecond) // polling the log
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(sink.String(), "status_console_exposed"); got != tc.warn {
			t.Errorf("%s: warned %v, want %v:\n%s", tc.listen, got, tc.warn, sink.String())
		}
	}
}
