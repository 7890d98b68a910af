package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
)

// targetKiBPerSession is the performance issue's bound on gtund's memory per
// idle session.
const targetKiBPerSession = 64

// ScaleReport is what scripts/scale.sh writes to bench/results.
type ScaleReport struct {
	Meta               map[string]string `json:"meta,omitempty"`
	N                  int               `json:"n"`
	Established        int               `json:"established"`
	Failed             int               `json:"failed"`
	FailedErrors       []string          `json:"failed_errors,omitempty"`
	HandshakesPerS     float64           `json:"handshakes_per_s"`
	SetupMS            Latency           `json:"setup_ms"`
	IdleS              float64           `json:"idle_s"`
	HoldS              float64           `json:"hold_s"`
	SessionsAliveAtEnd int               `json:"sessions_alive_at_end"`
	SessionsEnded      int               `json:"sessions_ended"`
	EndedErrors        []string          `json:"ended_errors,omitempty"`
	AllStayedUp        bool              `json:"all_stayed_up"`
	ConnectedAtEnd     *int              `json:"gtund_connected_at_end"` // from gtund status --json; null if unknown
	PacketsSent        uint64            `json:"packets_sent"`
	PacketsReceived    uint64            `json:"packets_received"`
	Gtund              GtundMem          `json:"gtund"`
	LoadgenRC          int               `json:"loadgen_exit"`
	Loadgen            *Result           `json:"loadgen"`
	Errors             []string          `json:"errors,omitempty"`
}

// GtundMem is the server's memory over the run.
type GtundMem struct {
	RSSBeforeKiB      uint64  `json:"rss_before_kib"`
	RSSIdleKiB        uint64  `json:"rss_idle_kib"`
	RSSEndKiB         uint64  `json:"rss_end_kib"`
	PeakKiB           uint64  `json:"peak_rss_kib"` // VmHWM at the end of the hold
	ThreadsIdle       int     `json:"threads_idle"`
	KiBPerIdleSession float64 `json:"kib_per_idle_session"`
	TargetKiB         int     `json:"target_kib_per_session"`
	WithinTarget      bool    `json:"within_target"`
}

type metaFlag map[string]string

func (m metaFlag) String() string { return fmt.Sprint(map[string]string(m)) }
func (m metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, not %q", s)
	}
	m[k] = v
	return nil
}

func reportMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "loadgen's JSON result")
	before := fs.String("rss-before", "", "copy of gtund's /proc/PID/status before any session")
	idle := fs.String("rss-idle", "", "copy of gtund's /proc/PID/status with all sessions up and idle")
	end := fs.String("rss-end", "", "copy of gtund's /proc/PID/status at the end of the hold")
	status := fs.String("status", "", "gtund status --json at the end of the hold")
	rc := fs.Int("loadgen-exit", 0, "loadgen's exit status")
	out := fs.String("out", "", "write the report JSON here")
	meta := metaFlag{}
	fs.Var(meta, "meta", "KEY=VALUE to record (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *in == "" || *out == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: loadgen report -in loadgen.json -out FILE [-rss-before F] [-rss-idle F] [-rss-end F] [-status F] [-loadgen-exit N] [-meta K=V]...")
		return 2
	}
	rep, err := buildReport(*in, *before, *idle, *end, *status)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen report: %v\n", err)
		return 1
	}
	rep.Meta, rep.LoadgenRC = meta, *rc
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintf(stderr, "loadgen report: %v\n", err)
		return 1
	}
	printTable(stdout, rep)
	return 0
}

func buildReport(in, before, idle, end, status string) (*ScaleReport, error) {
	b, err := os.ReadFile(in)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", in, err)
	}
	rep := &ScaleReport{N: r.N, Established: r.Established, Failed: r.Failed, FailedErrors: r.FailedErrors,
		HandshakesPerS: r.HandshakesPerS, SetupMS: r.SetupMS, IdleS: r.IdleS, HoldS: r.HoldS,
		SessionsAliveAtEnd: r.SessionsAliveAtEnd, SessionsEnded: r.SessionsEnded, EndedErrors: r.EndedErrors,
		AllStayedUp: r.AllStayedUp, PacketsSent: r.PacketsSent, PacketsReceived: r.PacketsReceived, Loadgen: &r,
		Gtund: GtundMem{TargetKiB: targetKiBPerSession}}
	mem := func(path, phase string) (Mem, bool) {
		if path != "" {
			s, err := os.ReadFile(path)
			if err == nil {
				if m := parseStatus(string(s)); m.RSSKiB > 0 {
					return m, true
				}
			}
			rep.Errors = append(rep.Errors, fmt.Sprintf("gtund memory at %s: cannot read %s", phase, path))
		}
		m, ok := r.WatchRSS[phase] // loadgen's own sample, if it watched gtund
		return m, ok
	}
	mb, okB := mem(before, "before")
	mi, okI := mem(idle, "idle")
	me, _ := mem(end, "end")
	rep.Gtund.RSSBeforeKiB, rep.Gtund.RSSIdleKiB, rep.Gtund.RSSEndKiB = mb.RSSKiB, mi.RSSKiB, me.RSSKiB
	rep.Gtund.PeakKiB, rep.Gtund.ThreadsIdle = max(me.HWMKiB, mi.HWMKiB), mi.Threads
	if okB && okI && r.Established > 0 {
		per := (float64(mi.RSSKiB) - float64(mb.RSSKiB)) / float64(r.Established)
		rep.Gtund.KiBPerIdleSession = round(per, 1)
		rep.Gtund.WithinTarget = per <= targetKiBPerSession
	}
	if status != "" {
		n, err := connectedPeers(status)
		if err != nil {
			rep.Errors = append(rep.Errors, "gtund status: "+err.Error())
		} else {
			rep.ConnectedAtEnd = &n
		}
	}
	return rep, nil
}

// connectedPeers counts the connected peers in `gtund status --json`.
func connectedPeers(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var st struct {
		Peers []struct {
			Connected bool `json:"connected"`
		} `json:"peers"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	n := 0
	for _, p := range st.Peers {
		if p.Connected {
			n++
		}
	}
	return n, nil
}

func printTable(w io.Writer, r *ScaleReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "NO"
	}
	connected := "unknown"
	if r.ConnectedAtEnd != nil {
		connected = fmt.Sprintf("%d of %d peers", *r.ConnectedAtEnd, r.N)
	}
	fmt.Fprintf(tw, "sessions established\t%d of %d (%d failed)\n", r.Established, r.N, r.Failed)
	fmt.Fprintf(tw, "handshakes/s\t%.1f\n", r.HandshakesPerS)
	fmt.Fprintf(tw, "setup latency\tp50 %.1f ms, p99 %.1f ms, max %.1f ms\n", r.SetupMS.P50, r.SetupMS.P99, r.SetupMS.Max)
	fmt.Fprintf(tw, "idle, then hold\t%.1f s, %.1f s\n", r.IdleS, r.HoldS)
	fmt.Fprintf(tw, "alive at end of hold\t%d of %d (all stayed up: %s)\n", r.SessionsAliveAtEnd, r.N, yes(r.AllStayedUp))
	fmt.Fprintf(tw, "gtund status at end\t%s connected\n", connected)
	fmt.Fprintf(tw, "packets sent / received\t%d / %d\n", r.PacketsSent, r.PacketsReceived)
	fmt.Fprintf(tw, "gtund RSS before / idle / end\t%d / %d / %d KiB\n", r.Gtund.RSSBeforeKiB, r.Gtund.RSSIdleKiB, r.Gtund.RSSEndKiB)
	fmt.Fprintf(tw, "gtund peak RSS (VmHWM)\t%d KiB\n", r.Gtund.PeakKiB)
	fmt.Fprintf(tw, "gtund RSS per idle session\t%.1f KiB (target <= %d: %s)\n", r.Gtund.KiBPerIdleSession, r.Gtund.TargetKiB, yes(r.Gtund.WithinTarget))
	tw.Flush()
	for _, e := range r.FailedErrors {
		fmt.Fprintf(w, "  setup error: %s\n", e)
	}
	for _, e := range r.EndedErrors {
		fmt.Fprintf(w, "  ended: %s\n", e)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  report: %s\n", e)
	}
}
