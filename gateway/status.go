package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"edgegw/buffer"
	"edgegw/gateway/uplink"
)

// statusServer serves /healthz and /metrics (Prometheus text) of docs/MQTT.md.
// Metrics are read from the live components at scrape time: nothing is
// counted twice and nothing costs anything between scrapes.
type statusServer struct {
	listen  string
	log     *slog.Logger
	buf     *bufferState
	uplink  func() *uplink.Uplink // the current ones: a reload replaces them
	brokers func() []string
	pollers func() []*poller
	started time.Time
	now     func() time.Time
}

// Run serves until ctx ends. A port that cannot be bound is logged, not
// fatal: readings matter more than their metrics.
func (s *statusServer) Run(ctx context.Context) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", s.healthz)
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		s.log.Error("status_listen_failed", "listen", s.listen, "err", err, "hint", "the gateway runs on without /metrics and /healthz; free the port or change status.listen")
		return nil
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	s.log.Info("status_listening", "address", ln.Addr().String())
	select {
	case err := <-done:
		return fmt.Errorf("status server: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("status server: %w", err)
	}
	return nil
}

// healthz answers 200 while readings are being taken and either published
// or stored, 503 with the reasons otherwise.
func (s *statusServer) healthz(w http.ResponseWriter, _ *http.Request) {
	problems := health(s.now(), s.started, s.pollers(), s.buf.Err())
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(problems, "\n"))
		return
	}
	fmt.Fprintln(w, "ok")
}

// health lists what stops readings from being taken or kept.
func health(now, started time.Time, pollers []*poller, bufErr error) []string {
	var problems []string
	for _, p := range pollers {
		last := time.Unix(0, p.alive.Load())
		if last.Before(started) {
			last = started
		}
		if stalled := now.Sub(last); stalled > p.stallLimit() {
			problems = append(problems, fmt.Sprintf("bus %s: no poll for %s", p.bus.Name, stalled.Round(time.Second)))
		}
	}
	if bufErr != nil {
		problems = append(problems, "buffer: "+bufErr.Error())
	}
	return problems
}

// stallLimit is how long a bus may go without finishing a poll before it
// counts as stuck: three of its slowest device's intervals, plus what a
// round of failing requests may take.
func (p *poller) stallLimit() time.Duration {
	var slowest time.Duration
	for _, d := range p.devices {
		slowest = max(slowest, d.Interval.D())
	}
	perRequest := p.bus.Timeout.D() * time.Duration(p.bus.Retries+1)
	return 3*slowest + perRequest*time.Duration(len(p.devices)) + 10*time.Second
}

var (
	descBufferReadings = prometheus.NewDesc("edgegw_buffer_readings", "Readings on flash not yet acknowledged by a broker.", nil, nil)
	descBufferBytes    = prometheus.NewDesc("edgegw_buffer_bytes", "config.Size of the buffered readings, as buffer.max_bytes counts it.", nil, nil)
	descBufferOldest   = prometheus.NewDesc("edgegw_buffer_oldest_age_seconds", "How long the oldest buffered reading has waited while the gateway ran (clock steps do not count); 0 when empty.", nil, nil)
	descBufferFile     = prometheus.NewDesc("edgegw_buffer_file_bytes", "config.Size of the buffer file on disk.", nil, nil)
	descBufferPending  = prometheus.NewDesc("edgegw_buffer_pending_readings", "Readings taken and waiting in RAM for their commit.", nil, nil)
	descReadings       = prometheus.NewDesc("edgegw_readings_total", "Readings taken, by device.", []string{"device"}, nil)
	descReadErrors     = prometheus.NewDesc("edgegw_read_errors_total", "Points that failed a poll, by device.", []string{"device"}, nil)
	descPublished      = prometheus.NewDesc("edgegw_published_total", "Readings acknowledged by a broker.", nil, nil)
	descDropped        = prometheus.NewDesc("edgegw_dropped_total", "Readings dropped, by reason: max_bytes, max_age, disk_error, corrupt (lost to a damaged buffer file), rejected (refused by the broker for good).", []string{"reason"}, nil)
	descRequests       = prometheus.NewDesc("edgegw_bus_requests_total", "Requests to a device on its bus.", []string{"device"}, nil)
	descRequestErrors  = prometheus.NewDesc("edgegw_bus_request_errors_total", "Failed requests, by kind: timeout (no reply), exception (refused), transport (broken reply or port).", []string{"device", "kind"}, nil)
	descResponseTime   = prometheus.NewDesc("edgegw_bus_response_seconds", "Time from request to reply.", []string{"device"}, nil)
	descConnected      = prometheus.NewDesc("edgegw_mqtt_connected", "1 while connected to a broker.", nil, nil)
	descBrokerInfo     = prometheus.NewDesc("edgegw_mqtt_broker_info", "1 for the broker in use, 0 for the other configured brokers.", []string{"url"}, nil)
)

// Describe implements prometheus.Collector.
func (s *statusServer) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBufferReadings, descBufferBytes, descBufferOldest, descBufferFile, descBufferPending,
		descReadings, descReadErrors, descPublished, descDropped, descConnected, descBrokerInfo,
		descRequests, descRequestErrors, descResponseTime} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *statusServer) Collect(ch chan<- prometheus.Metric) {
	if buf, _ := s.buf.get(); buf != nil { // nil until the buffer is open
		st := buf.Stats()
		gauge(ch, descBufferReadings, float64(st.Readings))
		gauge(ch, descBufferBytes, float64(st.Bytes))
		gauge(ch, descBufferFile, float64(st.FileSize))
		gauge(ch, descBufferPending, float64(st.Pending))
		gauge(ch, descBufferOldest, st.OldestAge.Seconds())
		for _, reason := range []string{buffer.DropMaxBytes, buffer.DropMaxAge, buffer.DropDiskError, buffer.DropCorrupt} {
			counter(ch, descDropped, float64(st.Dropped[reason]), reason)
		}
	}
	for _, p := range s.pollers() {
		for _, d := range p.devices {
			ds := p.stats[d.Name]
			counter(ch, descReadings, float64(ds.Readings.Load()), d.Name)
			counter(ch, descReadErrors, float64(ds.ReadErrors.Load()), d.Name)
		}
		for _, bs := range p.busStats() {
			counter(ch, descRequests, float64(bs.Requests), bs.Device)
			for kind, n := range bs.Errors {
				counter(ch, descRequestErrors, float64(n), bs.Device, kind)
			}
			ch <- prometheus.MustNewConstSummary(descResponseTime, bs.Responses, bs.ResponseTime.Seconds(), nil, bs.Device)
		}
	}
	up := s.uplink()
	if up == nil { // not started yet
		return
	}
	counter(ch, descPublished, float64(up.Published()))
	counter(ch, descDropped, float64(up.Rejected()), "rejected")
	inUse := up.Broker()
	connected := 0.0
	if inUse != "" {
		connected = 1
	}
	gauge(ch, descConnected, connected)
	for _, b := range s.brokers() {
		v := 0.0
		if b == inUse {
			v = 1
		}
		gauge(ch, descBrokerInfo, v, b)
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}
