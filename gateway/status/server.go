package status

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
)

// Server serves /healthz and /metrics (Prometheus text) of docs/MQTT.md.
// Metrics are read from Source at scrape time: nothing is counted twice
// and nothing costs anything between scrapes.
type Server struct {
	Listen string
	Log    *slog.Logger
	Source Source
	// Started is when the gateway started; loops are timed from it.
	Started time.Time
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Console serves the commissioning page at / ([status] console).
	Console bool
	// Live gives /api/v1/status its devices; none when nil.
	Live LiveSource

	rates rates
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Run serves until ctx ends. A port that cannot be bound is logged, not
// fatal: readings matter more than their metrics; Run then just waits.
func (s *Server) Run(ctx context.Context) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{s.Source}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /api/v1/status", s.api)
	if s.Console {
		mux.Handle("GET /", consoleHandler())
	}
	ln, err := net.Listen("tcp", s.Listen)
	if err != nil {
		s.Log.Error("status_listen_failed", "listen", s.Listen, "err", err, "hint", "the gateway runs on without /metrics and /healthz; free the port or change status.listen")
		<-ctx.Done()
		return nil
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	s.Log.Info("status_listening", "address", ln.Addr().String(), "console", s.Console)
	if s.Console && !loopback(ln.Addr()) {
		s.Log.Warn("status_console_exposed", "address", ln.Addr().String(),
			"hint", "the commissioning page (read-only), /api/v1/status and /metrics are reachable from the network; set status.listen to 127.0.0.1:PORT to keep them on this machine")
	}
	select {
	case err := <-done:
		return fmt.Errorf("status server: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown) // how Serve ended, below, is what counts
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("status server: %w", err)
	}
	return nil
}

// healthz answers 200 while readings are being taken and either published
// or stored, 503 with the reasons otherwise.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	problems := Health(s.now(), s.Started, s.Source())
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(problems, "\n"))
		return
	}
	fmt.Fprintln(w, "ok")
}

// Health lists what stops readings from being taken or kept: stuck loops
// and an unusable buffer.
func Health(now, started time.Time, r Report) []string {
	var problems []string
	for _, s := range Stuck(now, started, r.Loops) {
		problems = append(problems, "stuck: "+s)
	}
	if r.BufferErr != nil {
		problems = append(problems, "buffer: "+r.BufferErr.Error())
	}
	return problems
}

var (
	descBufferReadings = prometheus.NewDesc("edgegw_buffer_readings", "Readings on flash not yet acknowledged by a broker.", nil, nil)
	descBufferBytes    = prometheus.NewDesc("edgegw_buffer_bytes", "Size of the buffered readings, as buffer.max_bytes counts it.", nil, nil)
	descBufferOldest   = prometheus.NewDesc("edgegw_buffer_oldest_age_seconds", "How long the oldest buffered reading has waited while the gateway ran (clock steps do not count); 0 when empty.", nil, nil)
	descBufferFile     = prometheus.NewDesc("edgegw_buffer_file_bytes", "Size of the buffer file on disk.", nil, nil)
	descBufferPending  = prometheus.NewDesc("edgegw_buffer_pending_readings", "Readings taken and waiting in RAM for their commit.", nil, nil)
	descReadings       = prometheus.NewDesc("edgegw_readings_total", "Readings taken, by device.", []string{"device"}, nil)
	descReadErrors     = prometheus.NewDesc("edgegw_read_errors_total", "Points that failed a poll, by device.", []string{"device"}, nil)
	descPublished      = prometheus.NewDesc("edgegw_published_total", "Readings acknowledged by a broker.", nil, nil)
	descDropped        = prometheus.NewDesc("edgegw_dropped_total", "Readings dropped, by reason: max_bytes, max_age, disk_error, corrupt (lost to a damaged buffer file), power_cut (the commit a power cut tore, within commit_interval of it), rejected (refused by the broker for good), too_large (over the broker's maximum packet size).", []string{"reason"}, nil)
	descCmdsDropped    = prometheus.NewDesc("edgegw_commands_dropped_total", "Commands dropped unanswered because too many were waiting for their buses (a flood on the set topics).", nil, nil)
	descRequests       = prometheus.NewDesc("edgegw_bus_requests_total", "Requests to a device on its bus.", []string{"device"}, nil)
	descRequestErrors  = prometheus.NewDesc("edgegw_bus_request_errors_total", "Failed requests, by kind: timeout (no reply), exception (refused), transport (broken reply or port).", []string{"device", "kind"}, nil)
	descResponseTime   = prometheus.NewDesc("edgegw_bus_response_seconds", "Time from request to reply.", []string{"device"}, nil)
	descConnected      = prometheus.NewDesc("edgegw_mqtt_connected", "1 while connected to a broker.", nil, nil)
	descBrokerInfo     = prometheus.NewDesc("edgegw_mqtt_broker_info", "1 for the broker in use, 0 for the other configured brokers.", []string{"url"}, nil)
	descServerRequests = prometheus.NewDesc("edgegw_modbus_server_requests_total", "Requests of other masters to a Modbus server, by outcome: cache (answered from the register image), bus (the device answered, exceptions included), refused (by edgegw: unknown unit, function or data, writes off, busy, too many clients), error (the device did not answer, or a malformed frame).", []string{"server", "outcome"}, nil)
	descServerWait     = prometheus.NewDesc("edgegw_modbus_server_queue_wait_seconds", "Time a Modbus server's requests waited for their turn on the bus.", []string{"server"}, nil)
	descServerClients  = prometheus.NewDesc("edgegw_modbus_server_clients", "Connections open to a Modbus server.", []string{"server"}, nil)
	descProtocol       = prometheus.NewDesc("edgegw_mqtt_protocol", "The MQTT protocol level spoken to the broker in use: 5 for MQTT 5, 4 for MQTT 3.1.1 (label version spells it).", []string{"url", "version"}, nil)
)

// collector turns a Report into metrics at scrape time.
type collector struct{ source Source }

// Describe implements prometheus.Collector.
func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBufferReadings, descBufferBytes, descBufferOldest, descBufferFile, descBufferPending,
		descReadings, descReadErrors, descPublished, descDropped, descCmdsDropped, descConnected, descBrokerInfo, descProtocol,
		descRequests, descRequestErrors, descResponseTime, descServerRequests, descServerWait, descServerClients} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	r := c.source()
	if st := r.Buffer; st != nil {
		gauge(ch, descBufferReadings, float64(st.Readings))
		gauge(ch, descBufferBytes, float64(st.Bytes))
		gauge(ch, descBufferFile, float64(st.FileSize))
		gauge(ch, descBufferPending, float64(st.Pending))
		gauge(ch, descBufferOldest, st.OldestAge.Seconds())
		for _, reason := range []string{buffer.DropMaxBytes, buffer.DropMaxAge, buffer.DropDiskError, buffer.DropCorrupt, buffer.DropPowerCut} {
			counter(ch, descDropped, float64(st.Dropped[reason]), reason)
		}
	}
	for _, d := range r.Devices {
		counter(ch, descReadings, float64(d.Readings), d.Device)
		counter(ch, descReadErrors, float64(d.ReadErrors), d.Device)
	}
	for _, bs := range r.Buses {
		counter(ch, descRequests, float64(bs.Requests), bs.Device)
		for kind, n := range bs.Errors {
			counter(ch, descRequestErrors, float64(n), bs.Device, kind)
		}
		ch <- prometheus.MustNewConstSummary(descResponseTime, bs.Responses, bs.ResponseTime.Seconds(), nil, bs.Device)
	}
	for _, m := range r.ModbusServers {
		for _, outcome := range []string{"cache", "bus", "refused", "error"} {
			counter(ch, descServerRequests, float64(m.Requests[outcome]), m.Name, outcome)
		}
		ch <- prometheus.MustNewConstSummary(descServerWait, m.QueueWaits, m.QueueWait.Seconds(), nil, m.Name)
		gauge(ch, descServerClients, float64(m.Clients), m.Name)
	}
	up := r.Uplink
	if up == nil { // not started yet
		return
	}
	counter(ch, descPublished, float64(up.Published))
	counter(ch, descDropped, float64(up.Rejected), "rejected")
	counter(ch, descDropped, float64(up.TooLarge), "too_large")
	counter(ch, descCmdsDropped, float64(up.CommandsDropped))
	connected := 0.0
	if up.Broker != "" {
		connected = 1
	}
	gauge(ch, descConnected, connected)
	for _, b := range r.Brokers {
		v := 0.0
		if b == up.Broker {
			v = 1
		}
		gauge(ch, descBrokerInfo, v, b)
	}
	if up.Broker != "" {
		level := 5.0
		if up.Protocol == "3.1.1" {
			level = 4
		}
		gauge(ch, descProtocol, level, up.Broker, up.Protocol)
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}
