package status

import (
	"encoding/binary"
	"encoding/json"
	"hash/fnv"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"edgegw/drivers"
)

// API is the body of GET /api/v1/status: what the commissioning page shows,
// for scripts too (docs/MQTT.md). Times are RFC 3339 in UTC, ages and
// durations in seconds.
type API struct {
	Now time.Time `json:"now"`
	// Layout changes when a device or point is added, removed or renamed:
	// a client that has the points of this layout may ask without them.
	Layout  string     `json:"layout"`
	Gateway apiGateway `json:"gateway"`
	Health  []string   `json:"health"`
	// Devices is JSON made by hand (appendDevices), spliced in by Encode:
	// json.Marshal would scan it all again.
	Devices       []byte            `json:"-"`
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

// BuildAPI turns a Report and its devices into the API's body at now;
// without points, the devices leave out their points' names and units.
func BuildAPI(r Report, devices []Device, now, started time.Time, rate float64, points bool) API {
	a := API{Now: now.UTC(), Health: append([]string{}, Health(now, started, r)...), Buses: []apiBus{}, ModbusServers: []apiModbusServer{}}
	g := r.Gateway
	a.Gateway = apiGateway{ID: g.ID, Version: g.Version, Board: g.Board, Config: g.Config, Started: g.Started.UTC(), Uptime: seconds(now.Sub(g.Started))}
	if g.Reload != nil {
		a.Gateway.Reload = &apiReload{At: g.Reload.At.UTC(), OK: g.Reload.Err == "", Error: g.Reload.Err}
	}
	size := 0
	for i := range devices {
		d := &devices[i]
		size += 512 + len(d.PointsJSON) + len(d.Reading) + len(d.Previous) + 128*len(d.Points)
	}
	devs := (*apiDevices.Get().(*[]byte))[:0]
	if cap(devs) < size {
		devs = make([]byte, 0, size)
	}
	a.Devices = appendDevices(devs, devices, points)
	layout := fnv.New64a()
	for i := range devices {
		layout.Write(binary.LittleEndian.AppendUint64(nil, devices[i].Layout))
	}
	a.Layout = strconv.FormatUint(layout.Sum64(), 16)
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

// Encode returns the API's body. Call it once: it hands the memory of
// Devices back for the next answer.
func (a API) Encode() ([]byte, error) {
	rest, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	body := (*apiBodies.Get().(*[]byte))[:0]
	if need := len(rest) + len(a.Devices) + 16; cap(body) < need {
		body = make([]byte, 0, need)
	}
	body = append(body, rest[:len(rest)-1]...)
	body = append(body, `,"devices":`...)
	body = append(body, a.Devices...)
	devs := a.Devices
	apiDevices.Put(&devs)
	return append(body, '}'), nil
}

// apiBodies and apiDevices hold the memory of earlier answers for the next:
// the page asks every second for some hundred kilobytes.
var (
	apiBodies  = sync.Pool{New: func() any { return new([]byte) }}
	apiDevices = sync.Pool{New: func() any { return new([]byte) }}
)

// appendDevices encodes the devices by hand: with 50 devices of 60 points
// the page asks every second, and the readings are already JSON.
func appendDevices(b []byte, devices []Device, points bool) []byte {
	b = append(b, '[')
	for i := range devices {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendDevice(b, &devices[i], points)
	}
	return append(b, ']')
}

func appendDevice(b []byte, d *Device, points bool) []byte {
	state := "answering"
	switch {
	case d.LastPoll.IsZero():
		state = "waiting"
	case !d.FailingSince.IsZero():
		state = "failing"
	}
	b = append(b, `{"name":`...)
	b = drivers.AppendJSONString(b, d.Name)
	b = append(b, `,"bus":`...)
	b = drivers.AppendJSONString(b, d.Bus)
	b = append(b, `,"state":"`...)
	b = append(b, state...)
	b = append(b, '"')
	b = appendTime(b, "failing_since", d.FailingSince)
	if d.LastError != "" {
		b = append(b, `,"last_error":`...)
		b = drivers.AppendJSONString(b, d.LastError)
		b = appendTime(b, "last_error_at", d.LastErrorAt)
	}
	b = appendTime(b, "last_poll", d.LastPoll)
	b = append(b, `,"poll_s":`...)
	b = strconv.AppendFloat(b, seconds(d.PollTook), 'f', -1, 64)
	b = append(b, `,"interval_s":`...)
	b = strconv.AppendFloat(b, seconds(d.Interval), 'f', -1, 64)
	b = append(b, `,"polls":`...)
	b = strconv.AppendUint(b, d.Polls, 10)
	if points {
		b = append(b, `,"points":`...)
		b = append(b, d.PointsJSON...)
	}
	b = append(b, `,"reading":`...)
	switch {
	case d.Reading != nil:
		b = append(b, d.Reading...)
	case d.LastPoll.IsZero():
		b = append(b, "null"...)
	default: // composed from the points
		b = append(b, `{"ts":"`...)
		b = d.LastPoll.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","values":`...)
		b = appendPoints(b, d.Points, func(p *Point) string {
			if p.Error != "" {
				return ""
			}
			return p.Value
		})
		b = append(b, `,"errors":{`...)
		n := 0
		for i := range d.Points {
			if p := &d.Points[i]; p.Error != "" {
				b = appendKey(b, n, p.Name)
				b = drivers.AppendJSONString(b, p.Error)
				n++
			}
		}
		b = append(b, "}}"...)
	}
	b = append(b, `,"previous":`...)
	switch {
	case d.Previous != nil:
		b = append(b, d.Previous...)
	case d.Reading != nil || d.LastPoll.IsZero():
		b = append(b, "null"...)
	default:
		b = append(b, `{"values":`...)
		b = appendPoints(b, d.Points, func(p *Point) string { return p.Previous })
		b = append(b, '}')
	}
	// The last value of each point in error, with when it was read.
	b = append(b, `,"stale":{`...)
	n := 0
	for i := range d.Points {
		if p := &d.Points[i]; p.Error != "" && p.Value != "" {
			b = appendKey(b, n, p.Name)
			b = append(b, `{"value":`...)
			b = append(b, p.Value...)
			b = appendTime(b, "at", p.At)
			b = append(b, '}')
			n++
		}
	}
	b = append(b, `},"raw":{`...)
	n = 0
	for i := range d.Points {
		if p := &d.Points[i]; p.Raw != "" {
			b = appendKey(b, n, p.Name)
			b = drivers.AppendJSONString(b, p.Raw)
			n++
		}
	}
	return append(b, "}}"...)
}

// appendPoints appends an object of each point's value that value gives
// ("" leaves the point out).
func appendPoints(b []byte, points []Point, value func(*Point) string) []byte {
	b = append(b, '{')
	n := 0
	for i := range points {
		if v := value(&points[i]); v != "" {
			b = appendKey(b, n, points[i].Name)
			b = append(b, v...)
			n++
		}
	}
	return append(b, '}')
}

// appendKey appends an object's n-th key and its colon.
func appendKey(b []byte, n int, key string) []byte {
	if n > 0 {
		b = append(b, ',')
	}
	b = drivers.AppendJSONString(b, key)
	return append(b, ':')
}

// appendTime appends ,"name":"time" unless t is zero.
func appendTime(b []byte, name string, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1e6) / 1e6 }

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// api serves GET /api/v1/status; ?raw=1 adds the raw registers, ?points=0
// leaves out the points' names and units (the page has them: Layout).
func (s *Server) api(w http.ResponseWriter, req *http.Request) {
	now := s.now()
	r := s.Source()
	var devices []Device
	if s.Live != nil {
		devices = s.Live(req.URL.Query().Get("raw") == "1")
	}
	points := req.URL.Query().Get("points") != "0"
	var published uint64
	if r.Uplink != nil {
		published = r.Uplink.Published
	}
	body, err := BuildAPI(r, devices, now, s.Started, s.rates.add(now, published), points).Encode()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer apiBodies.Put(&body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(body)
}
