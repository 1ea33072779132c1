package status

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// API is the body of GET /api/v1/status: what the commissioning page shows,
// for scripts too (docs/MQTT.md). Times are RFC 3339 in UTC, ages and
// durations in seconds.
type API struct {
	Now           time.Time         `json:"now"`
	Gateway       apiGateway        `json:"gateway"`
	Health        []string          `json:"health"`
	Devices       []apiDevice       `json:"devices"`
	Buses         []apiBus          `json:"buses"`
	Uplink        *apiUplink        `json:"uplink"`
	ModbusServers []apiModbusServer `json:"modbus_servers"`
}

type apiGateway struct {
	ID      string     `json:"id"`
	Version string     `json:"version"`
	Board   string     `json:"board"`
	Config  string     `json:"config"`
	Started time.Time  `json:"started"`
	Uptime  float64    `json:"uptime_s"`
	Reload  *apiReload `json:"reload"`
}

type apiReload struct {
	At    time.Time `json:"at"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
}

type apiDevice struct {
	Name string `json:"name"`
	Bus  string `json:"bus"`
	// State is "answering", "failing" (no point read since failing_since)
	// or "waiting" (not polled yet).
	State        string     `json:"state"`
	FailingSince *time.Time `json:"failing_since,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	LastErrorAt  *time.Time `json:"last_error_at,omitempty"`
	LastPoll     *time.Time `json:"last_poll,omitempty"`
	PollTook     float64    `json:"poll_s"`
	Interval     float64    `json:"interval_s"`
	Polls        uint64     `json:"polls"`
	Points       []apiPoint `json:"points"`
}

type apiPoint struct {
	Name string `json:"name"`
	Unit string `json:"unit,omitempty"`
	// Value is the newest value read (null when none), Age how old it is.
	Value json.RawMessage `json:"value"`
	Age   *float64        `json:"age_s"`
	// Change is the value minus the one read before, for numbers; Changed
	// says whether the newest read differs from the one before.
	Change  *float64 `json:"change"`
	Changed bool     `json:"changed"`
	Error   string   `json:"error,omitempty"`
	Raw     string   `json:"raw,omitempty"`
}

type apiBus struct {
	Name     string  `json:"name"`
	Protocol string  `json:"protocol"`
	Requests uint64  `json:"requests"`
	Errors   uint64  `json:"errors"`
	WireTime float64 `json:"wire_s"`
	Queue    int     `json:"queue"`
}

type apiUplink struct {
	Broker         string     `json:"broker"`
	Protocol       string     `json:"protocol"`
	ConnectedSince *time.Time `json:"connected_since,omitempty"`
	Published      uint64     `json:"published"`
	PublishRate    float64    `json:"publish_rate"`
	Waiting        int        `json:"waiting"`
	OldestWaiting  float64    `json:"oldest_waiting_s"`
	LastError      string     `json:"last_error,omitempty"`
	LastErrorAt    *time.Time `json:"last_error_at,omitempty"`
}

type apiModbusServer struct {
	Listen   string            `json:"listen"`
	Clients  int               `json:"clients"`
	Requests map[string]uint64 `json:"requests"`
}

// rateWindow is how far back the publish rate looks.
const rateWindow = 10 * time.Second

// rates turns the published counter into a rate, from the samples the
// API's requests take: nothing runs between requests.
type rates struct {
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at time.Time
	n  uint64
}

// add notes n at now and returns the rate over the samples of the last
// rateWindow (0 until there are two).
func (r *rates) add(now time.Time, n uint64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, sample{now, n})
	i := 0
	for i < len(r.samples)-2 && now.Sub(r.samples[i+1].at) >= rateWindow {
		i++
	}
	r.samples = r.samples[i:]
	first := r.samples[0]
	if dt := now.Sub(first.at).Seconds(); dt > 0 && n >= first.n {
		return float64(n-first.n) / dt
	}
	return 0
}

// BuildAPI turns a Report into the API's body at now.
func BuildAPI(r Report, now, started time.Time, rate float64) API {
	a := API{Now: now.UTC(), Health: append([]string{}, Health(now, started, r)...), Devices: []apiDevice{}, Buses: []apiBus{}, ModbusServers: []apiModbusServer{}}
	g := r.Gateway
	a.Gateway = apiGateway{ID: g.ID, Version: g.Version, Board: g.Board, Config: g.Config, Started: g.Started.UTC(), Uptime: seconds(now.Sub(g.Started))}
	if g.Reload != nil {
		a.Gateway.Reload = &apiReload{At: g.Reload.At.UTC(), OK: g.Reload.Err == "", Error: g.Reload.Err}
	}
	for i := range r.Live {
		a.Devices = append(a.Devices, apiDeviceOf(&r.Live[i], now))
	}
	for _, b := range r.BusInfo {
		a.Buses = append(a.Buses, apiBus{Name: b.Name, Protocol: b.Protocol, Requests: b.Requests, Errors: b.Errors, WireTime: seconds(b.WireTime), Queue: b.Queue})
	}
	if up := r.Uplink; up != nil {
		u := &apiUplink{Broker: up.Broker, Protocol: up.Protocol, ConnectedSince: timeOrNil(up.ConnectedSince), Published: up.Published,
			PublishRate: math.Round(rate*100) / 100, LastError: up.LastError, LastErrorAt: timeOrNil(up.LastErrorAt)}
		if st := r.Buffer; st != nil {
			u.Waiting, u.OldestWaiting = st.Readings+st.Pending, seconds(st.OldestAge)
		}
		a.Uplink = u
	}
	for _, m := range r.ModbusServers {
		a.ModbusServers = append(a.ModbusServers, apiModbusServer{Listen: m.Name, Clients: m.Clients, Requests: m.Requests})
	}
	return a
}

func apiDeviceOf(d *Device, now time.Time) apiDevice {
	out := apiDevice{Name: d.Name, Bus: d.Bus, State: "answering", FailingSince: timeOrNil(d.FailingSince), LastError: d.LastError,
		LastErrorAt: timeOrNil(d.LastErrorAt), LastPoll: timeOrNil(d.LastPoll), PollTook: seconds(d.PollTook),
		Interval: seconds(d.Interval), Polls: d.Polls, Points: make([]apiPoint, 0, len(d.Points))}
	switch {
	case d.LastPoll.IsZero():
		out.State = "waiting"
	case !d.FailingSince.IsZero():
		out.State = "failing"
	}
	for _, p := range d.Points {
		ap := apiPoint{Name: p.Name, Unit: p.Unit, Value: json.RawMessage("null"), Error: p.Error, Raw: p.Raw}
		if p.Value != "" {
			ap.Value = json.RawMessage(p.Value)
			age := seconds(now.Sub(p.At))
			ap.Age = &age
			ap.Changed = p.Previous != "" && p.Previous != p.Value
			if ap.Changed {
				if v, err := strconv.ParseFloat(p.Value, 64); err == nil {
					if prev, err := strconv.ParseFloat(p.Previous, 64); err == nil {
						c := v - prev
						ap.Change = &c
					}
				}
			}
		}
		out.Points = append(out.Points, ap)
	}
	return out
}

func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1e6) / 1e6 }

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// api serves GET /api/v1/status.
func (s *Server) api(w http.ResponseWriter, _ *http.Request) {
	now := s.now()
	r := s.Source()
	var published uint64
	if r.Uplink != nil {
		published = r.Uplink.Published
	}
	body, err := json.Marshal(BuildAPI(r, now, s.Started, s.rates.add(now, published)))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}
