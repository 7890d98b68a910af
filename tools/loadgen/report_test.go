package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	writeJSON(t, p("lg.json"), &Result{N: 4, Established: 4, HandshakesPerS: 100, SessionsAliveAtEnd: 4, AllStayedUp: true,
		SetupMS:  Latency{P50: 5, P99: 9},
		WatchRSS: map[string]Mem{"before": {RSSKiB: 1}, "idle": {RSSKiB: 2}, "end": {RSSKiB: 3, HWMKiB: 4}}})
	status := func(name string, kib, hwm int) {
		s := "Name:\tgtund\nVmHWM:\t" + itoa(hwm) + " kB\nVmRSS:\t" + itoa(kib) + " kB\nThreads:\t6\n"
		if err := os.WriteFile(p(name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	status("before", 10000, 10000)
	status("idle", 10200, 10300)
	status("end", 10250, 10400)
	if err := os.WriteFile(p("st.json"), []byte(`{"listen":["x"],"peers":[{"name":"a","connected":true},{"name":"b","connected":false},{"name":"c","connected":true}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	rc := reportMain([]string{"-in", p("lg.json"), "-out", p("rep.json"), "-rss-before", p("before"), "-rss-idle", p("idle"),
		"-rss-end", p("end"), "-status", p("st.json"), "-meta", "commit=abc", "-loadgen-exit", "0"}, &out, &errb)
	if rc != 0 {
		t.Fatalf("exit %d: %s", rc, errb.String())
	}
	var rep ScaleReport
	b, err := os.ReadFile(p("rep.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	g := rep.Gtund
	if g.RSSBeforeKiB != 10000 || g.RSSIdleKiB != 10200 || g.RSSEndKiB != 10250 || g.PeakKiB != 10400 || g.ThreadsIdle != 6 {
		t.Errorf("gtund memory %+v", g)
	}
	if g.KiBPerIdleSession != 50 || !g.WithinTarget {
		t.Errorf("per session %v (within %v), want 50 KiB", g.KiBPerIdleSession, g.WithinTarget)
	}
	if rep.ConnectedAtEnd == nil || *rep.ConnectedAtEnd != 2 {
		t.Errorf("connected at end %v, want 2", rep.ConnectedAtEnd)
	}
	if rep.Meta["commit"] != "abc" || rep.Loadgen == nil || rep.HandshakesPerS != 100 {
		t.Errorf("report %+v", rep)
	}
	if !strings.Contains(out.String(), "50.0 KiB (target <= 64: yes)") || !strings.Contains(out.String(), "2 of 4 peers connected") {
		t.Errorf("table:\n%s", out.String())
	}

	// Without the status copies it falls back to loadgen's own samples.
	rc = reportMain([]string{"-in", p("lg.json"), "-out", p("rep2.json")}, &out, &errb)
	if rc != 0 {
		t.Fatalf("exit %d", rc)
	}
	b, _ = os.ReadFile(p("rep2.json"))
	rep = ScaleReport{}
	_ = json.Unmarshal(b, &rep)
	if rep.Gtund.KiBPerIdleSession != 0.3 || rep.Gtund.PeakKiB != 4 || rep.ConnectedAtEnd != nil {
		t.Errorf("fallback: %+v connected %v", rep.Gtund, rep.ConnectedAtEnd)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
