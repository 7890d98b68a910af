// Package metrics serves a daemon's Prometheus metrics on metrics_listen.
// Each daemon registers one collector that builds its metrics from the
// status snapshot at scrape time, so the packet path pays nothing for them;
// this package owns the private registry (plus Go and process metrics) and
// the HTTP endpoint.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Path is where the metrics are served.
const Path = "/metrics"

// Server is a running metrics endpoint.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
}

// Listen binds addr and serves the collectors, with Go runtime and process
// metrics, on Path until Close.
func Listen(addr string, log *slog.Logger, cs ...prometheus.Collector) (*Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics collector: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen %s: %w", addr, err)
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            errLog,
		ErrorHandling:       promhttp.ContinueOnError, // a broken metric must not hide the others
		MaxRequestsInFlight: 4,                        // scrapes are cheap but not free; a flood waits
		Timeout:             10 * time.Second,
	}))
	s := &Server{ln: ln, done: make(chan struct{}), srv: &http.Server{Handler: mux,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 20 * time.Second,
		IdleTimeout: time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}}
	go func() { // stopped by Close
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "addr", addr, "err", err)
		}
	}()
	log.Info("serving metrics", "addr", "http://"+ln.Addr().String()+Path)
	return s, nil
}

// Addr is the address the endpoint listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving: scrapes in flight get two seconds to finish.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}

// Builder collects the metrics of one scrape: each daemon's collector
// describes its metrics once (Desc) and emits values with Counter and Gauge.
type Builder struct{ ch chan<- prometheus.Metric }

// NewBuilder emits into ch (the argument of Collector.Collect).
func NewBuilder(ch chan<- prometheus.Metric) Builder { return Builder{ch} }

// Counter emits a counter value.
func (b Builder) Counter(d *prometheus.Desc, v uint64, labels ...string) {
	b.emit(d, prometheus.CounterValue, float64(v), labels)
}

// Gauge emits a gauge value.
func (b Builder) Gauge(d *prometheus.Desc, v float64, labels ...string) {
	b.emit(d, prometheus.GaugeValue, v, labels)
}

// emit sends one value; a mistake in a collector becomes a scrape error
// for that metric (and a failing test), never a panic in the daemon.
func (b Builder) emit(d *prometheus.Desc, t prometheus.ValueType, v float64, labels []string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	b.ch <- m
}

// Bool emits a gauge that is 1 when v holds, else 0.
func (b Builder) Bool(d *prometheus.Desc, v bool, labels ...string) {
	f := 0.0
	if v {
		f = 1
	}
	b.Gauge(d, f, labels...)
}

// Reasons emits one counter per reason: every reason in known (0 until it
// happens, so that dashboards and alerts see the series from the start) and
// any other reason the snapshot has. labels come before the reason label.
func (b Builder) Reasons(d *prometheus.Desc, known []string, counts map[string]uint64, labels ...string) {
	for _, r := range known {
		b.Counter(d, counts[r], append(labels, r)...)
	}
	for r, n := range counts {
		if !slices.Contains(known, r) {
			b.Counter(d, n, append(labels, r)...)
		}
	}
}

// Descs sends every descriptor to ch (the argument of Collector.Describe).
func Descs(ch chan<- *prometheus.Desc, ds ...*prometheus.Desc) {
	for _, d := range ds {
		ch <- d
	}
}
