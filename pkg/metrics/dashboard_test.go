package metrics_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/server"
)

// exported lists every metric the daemons serve, each with its labels:
// the descriptors of both collectors and of the Go and process collectors
// metrics.Listen adds. Histograms and summaries would add _bucket, _sum
// and _count; the daemons have none.
func exported(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	descRe := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	for _, c := range []prometheus.Collector{
		server.NewCollector(func() server.Status { return server.Status{} }),
		client.NewCollector(func() client.Status { return client.Status{} }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descRe.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read descriptor %s", d)
			}
			var labels []string
			if m[2] != "" {
				labels = strings.Split(m[2], ",")
			}
			out[m[1]] = labels
		}
	}
	return out
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers = regexp.MustCompile(`\{([^}]*)\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promLabel    = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)`)
	promWords    = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
		"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group", "inf", "nan"}
)

// promNames returns the metric names and the label names a PromQL
// expression uses. Not a PromQL parser: enough for the dashboard's
// selectors, aggregations and functions, which TestPromNames pins.
func promNames(expr string) (metrics, labels []string) {
	expr = promString.ReplaceAllString(expr, `""`)
	for _, m := range promMatchers.FindAllStringSubmatch(expr, -1) {
		for _, l := range promLabel.FindAllStringSubmatch(m[1], -1) {
			labels = append(labels, l[1])
		}
	}
	expr = promMatchers.ReplaceAllString(expr, " ")
	expr = promRange.ReplaceAllString(expr, " ")
	for _, g := range promGrouping.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	expr = promGrouping.ReplaceAllString(expr, " ")
	for _, loc := range promIdent.FindAllStringIndex(expr, -1) {
		word := expr[loc[0]:loc[1]]
		rest := strings.TrimLeft(expr[loc[1]:], " ")
		if strings.HasPrefix(rest, "(") || slices.Contains(promWords, strings.ToLower(word)) {
			continue // a function or a keyword
		}
		if loc[0] > 0 && (expr[loc[0]-1] == '$' || expr[loc[0]-1] >= '0' && expr[loc[0]-1] <= '9') {
			continue // a Grafana variable, or a number's exponent or unit
		}
		metrics = append(metrics, word)
	}
	return metrics, labels
}

func TestPromNames(t *testing.T) {
	for _, c := range []struct {
		expr            string
		metrics, labels []string
	}{
		{`sum by (peer, reason) (rate(gtund_peer_drops_total{instance=~"$gtund",job!="x"}[$__rate_interval])) > 0`,
			[]string{"gtund_peer_drops_total"}, []string{"instance", "job", "peer", "reason"}},
		{`sum(gtun_routes_desired) - sum(gtun_routes_installed{server="a{b}"}) * 8`,
			[]string{"gtun_routes_desired", "gtun_routes_installed"}, []string{"server"}},
		{`no_such_metric / on (instance) group_left foo_total`, []string{"no_such_metric", "foo_total"}, []string{"instance"}},
	} {
		m, l := promNames(c.expr)
		slices.Sort(l)
		if !slices.Equal(m, c.metrics) || !slices.Equal(l, c.labels) {
			t.Errorf("promNames(%s) = %v, %v; want %v, %v", c.expr, m, l, c.metrics, c.labels)
		}
	}
}

// targetLabels are added by Prometheus to every series it scrapes.
var targetLabels = []string{"instance", "job"}

// The Grafana dashboard (docs/grafana/gtun.json) names only metrics the
// daemons export, and only labels those metrics have.
func TestDashboardNamesOnlyExportedMetrics(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "grafana", "gtun.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("docs/grafana/gtun.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	have := exported(t)
	check := func(where, metric string, labels []string) {
		got, ok := have[metric]
		if !ok {
			t.Errorf("%s: %s is not a metric gtun or gtund exports", where, metric)
			return
		}
		for _, l := range labels {
			if !slices.Contains(got, l) && !slices.Contains(targetLabels, l) {
				t.Errorf("%s: %s has no label %q (it has %v)", where, metric, l, got)
			}
		}
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			metrics, labels := promNames(tg.Expr)
			if len(metrics) == 0 {
				t.Errorf("panel %q: no metric found in %s", p.Title, tg.Expr)
			}
			for _, m := range metrics {
				check("panel "+p.Title, m, labels)
				used[m] = true
			}
		}
	}
	labelValues := regexp.MustCompile(`^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$`)
	for _, v := range dash.Templating.List {
		if v.Definition == "" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: cannot read %q", v.Name, v.Definition)
			continue
		}
		check("variable "+v.Name, m[1], []string{m[2]})
	}
	// Every gtun and gtund metric has a place on the dashboard.
	for m := range have {
		if (strings.HasPrefix(m, "gtun_") || strings.HasPrefix(m, "gtund_")) && !used[m] {
			t.Errorf("%s is on no panel of the dashboard", m)
		}
	}
}
