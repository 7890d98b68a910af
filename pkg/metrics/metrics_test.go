package metrics

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

type testCollector struct{ count, gauge, reasons *prometheus.Desc }

func (c testCollector) Describe(ch chan<- *prometheus.Desc) { Descs(ch, c.count, c.gauge, c.reasons) }

func (c testCollector) Collect(ch chan<- prometheus.Metric) {
	b := NewBuilder(ch)
	b.Counter(c.count, 42, "a")
	b.Bool(c.gauge, true)
	b.Reasons(c.reasons, []string{"known"}, map[string]uint64{"other": 3})
}

// scrape fetches addr's metrics with a real HTTP client and parses them with
// the exposition-format parser Prometheus itself uses.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", Path, resp.Status, b)
	}
	// Legacy name validation: gtun's names must also scrape into a Prometheus
	// older than UTF-8 names (a zero TextParser panics since common v0.6x).
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func TestListenServesAndCloses(t *testing.T) {
	c := testCollector{
		count:   prometheus.NewDesc("t_things_total", "Things.", []string{"l"}, nil),
		gauge:   prometheus.NewDesc("t_up", "Up.", nil, nil),
		reasons: prometheus.NewDesc("t_drops_total", "Drops.", []string{"reason"}, nil),
	}
	s, err := Listen("127.0.0.1:0", slog.New(slog.DiscardHandler), c)
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	fams := scrape(t, addr)
	if f := fams["t_things_total"]; f == nil || f.GetType() != dto.MetricType_COUNTER || f.Metric[0].Counter.GetValue() != 42 ||
		f.Metric[0].Label[0].GetValue() != "a" {
		t.Errorf("t_things_total = %v", f)
	}
	if f := fams["t_up"]; f == nil || f.GetType() != dto.MetricType_GAUGE || f.Metric[0].Gauge.GetValue() != 1 {
		t.Errorf("t_up = %v", f)
	}
	got := map[string]float64{}
	for _, m := range fams["t_drops_total"].GetMetric() {
		got[m.Label[0].GetValue()] = m.Counter.GetValue()
	}
	if len(got) != 2 || got["known"] != 0 || got["other"] != 3 {
		t.Errorf("t_drops_total = %v, want known 0 (present before it happens) and other 3", got)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	if f := fams["t_up"]; !strings.Contains(f.GetHelp(), "Up") {
		t.Errorf("help = %q", f.GetHelp())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still listening after Close")
	}
}

func TestListenBadAddress(t *testing.T) {
	s, err := Listen("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The port is taken: a clear error, not a silent daemon without metrics.
	if _, err := Listen(s.Addr().String(), slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "metrics_listen") {
		t.Fatalf("err = %v", err)
	}
}
