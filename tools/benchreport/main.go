// Command benchreport turns the raw measurements written by scripts/bench.sh
// into a table on stdout and a JSON report.
//
//	benchreport -dir RAWDIR [-out bench/results/TS.json]
//
// RAWDIR holds:
//
//	{direct,tunnel}-<test>.json   iperf3 -J output, <test> one of Tests
//	{direct,tunnel}-ping.txt      output of ping -q
//	{direct,tunnel}-ping-1cpu.txt the same ping, pinger and daemons pinned to CPU 0
//	meta.env                      key=value lines: timestamp, transport,
//	                              kernel, commit, duration_s, clk_tck,
//	                              cpu.<test>.<daemon>  (CPU ticks used
//	                              during that tunnel test), rss.<daemon>_kb
//	                              (VmHWM), err.<anything> (failed steps),
//	                              topology (where the two sections above ran)
//
// and, for the lossy-link section (bench.sh with LOSSY=1, the wan link going
// through tools/wanemu), for each TCP congestion control CC listed in meta
// lossy.ccs, each condition TAG = CC-d<one-way delay ms>-l<loss %> listed in
// meta lossy.conditions ("25:1" for 25 ms, 1%) and each MODE in direct, tcp,
// kcp:
//
//	lossy-TAG-MODE-tcp-up-1.json  iperf3 -J, TCP vm->pod, 1 stream
//	lossy-TAG-MODE-ping.txt       ping -q vm->pod
//	lossy-TAG-MODE-wanemu-before.json, lossy-TAG-MODE-wanemu-after.json
//	                              the emulator's counters just before and
//	                              after the flow
//	lossy-TAG-wanemu.json         the emulator's counters after the
//	                              condition (runs from before the above)
//	meta.env                      lossy.duration_s, lossy.seed, lossy.CC.kcp_na (why kcp
//	                              was not measured, if so), lossy.fec (the
//	                              kcp-fec MODE's DATA:PARITY; empty: no
//	                              such mode)
//
// A missing or unreadable measurement is reported as n/a (null in JSON) and
// listed under errors; it is never fatal. It is not a pass/fail test.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gtun/gtun/internal/wanstats"
)

// Test is one iperf3 measurement, run once direct and once through the tunnel.
type Test struct {
	Name string // file name part
	Desc string
	UDP  bool
}

// Tests in report order.
var Tests = []Test{
	{"tcp-up-1", "TCP vm->pod, 1 stream", false},
	{"tcp-down-1", "TCP pod->vm, 1 stream", false},
	{"tcp-up-4", "TCP vm->pod, 4 streams", false},
	{"tcp-down-4", "TCP pod->vm, 4 streams", false},
	{"udp64-up", "UDP 64 B vm->pod", true},
	{"udp64-down", "UDP 64 B pod->vm", true},
}

// Daemons whose CPU and memory are measured.
var Daemons = []string{"gtun", "gtund"}

// Report is the JSON written to -out.
type Report struct {
	Timestamp string  `json:"timestamp"`
	Transport string  `json:"transport"`
	DurationS float64 `json:"duration_s,omitempty"`
	Kernel    string  `json:"kernel,omitempty"`
	Commit    string  `json:"commit,omitempty"`
	CPUs      int     `json:"cpus,omitempty"`
	// Rounds is how many times the direct and tunnel sections ran, one
	// after the other; each figure is the median of the rounds (sums for
	// bytes, retransmits and CPU seconds, the largest for peak RSS).
	Rounds int         `json:"rounds"`
	TCP    []TCPResult `json:"tcp"`
	UDP64  []UDPResult `json:"udp64"`
	RTT    RTT         `json:"rtt_ms"`
	// RTTOneCPU is the same ping with the pinger and both daemons pinned
	// to CPU 0: a diagnostic that leaves out the wake-up of an idle
	// second vCPU (see scripts/bench.sh).
	RTTOneCPU RTT                 `json:"rtt_one_cpu_ms"`
	CPUPerGB  map[string]*float64 `json:"cpu_s_per_gb"` // over all tunnel TCP tests
	PeakRSSKB map[string]*float64 `json:"peak_rss_kb"`
	Topology  string              `json:"topology,omitempty"` // of the direct and tunnel tests
	Lossy     []*Lossy            `json:"lossy,omitempty"`    // one per TCP congestion control
	// Others are the same tests through the tunnel with other transports,
	// in the same rounds (bench.sh TRANSPORTS), each against the same
	// direct runs; Compare sets each of them beside this report's.
	Others  []*Report    `json:"other_transports,omitempty"`
	Compare []Comparison `json:"compare,omitempty"`
	Errors  []string     `json:"errors"`
}

// Comparison is one TCP test through two transports of the same run.
type Comparison struct {
	Test     string              `json:"test"`
	Base     string              `json:"base"` // transport
	Other    string              `json:"other"`
	BaseMbps *float64            `json:"base_mbps"`
	Mbps     *float64            `json:"other_mbps"`
	Ratio    *float64            `json:"other_over_base"`
	BaseCPU  map[string]*float64 `json:"base_cpu_s_per_gb"`
	CPU      map[string]*float64 `json:"other_cpu_s_per_gb"`
}

// compare sets each other transport's TCP tests beside r's.
func compare(r *Report) {
	for _, o := range r.Others {
		for i, c := range r.TCP {
			if i >= len(o.TCP) {
				break
			}
			oc := o.TCP[i]
			r.Compare = append(r.Compare, Comparison{Test: c.Desc, Base: r.Transport, Other: o.Transport, BaseMbps: c.TunnelMbps,
				Mbps: oc.TunnelMbps, Ratio: div(oc.TunnelMbps, c.TunnelMbps), BaseCPU: c.CPUPerGB, CPU: oc.CPUPerGB})
		}
	}
}

// Lossy is the lossy-link section: TCP goodput through the tunnel with each
// transport, and without the tunnel, over an emulated distant, lossy link.
type Lossy struct {
	DurationS float64 `json:"duration_s,omitempty"`
	// Rounds: each figure is the median of this many flows, no tunnel
	// and the transports taking turns.
	Rounds int    `json:"rounds"`
	KCPNA  string `json:"kcp_na,omitempty"` // why kcp was not measured
	// TCP congestion control in the namespaces: of transport tcp's own
	// connection and of the measured TCP flow.
	CC string `json:"tcp_congestion_control,omitempty"`
	// FEC of the kcp-fec column (DATA:PARITY); empty: not measured.
	FEC string `json:"kcp_fec,omitempty"`
	// UDP: the udp transport's column was measured (meta
	// lossy.transports names it).
	UDP bool `json:"udp,omitempty"`
	// Seed of the emulator's loss draws (meta lossy.seed): the flows of a
	// round are dealt the same draws, from this seed plus the round's
	// number over the section. Empty: each flow had its own (older runs).
	Seed string `json:"loss_seed,omitempty"`
	// Direct TCP vm->pod through the emulator at 0 ms 0% against the
	// same test on the plain topology (the emulator's own cost).
	EmulatorDirectMbps *float64   `json:"emulator_0_0_direct_mbps"`
	PlainDirectMbps    *float64   `json:"plain_direct_mbps"`
	EmulatorRatio      *float64   `json:"emulator_0_0_ratio"`
	Rows               []LossyRow `json:"rows"`
}

// LossyRow is one link condition.
type LossyRow struct {
	DelayMs    float64  `json:"delay_ms_each_way"`
	RTTAddedMs float64  `json:"rtt_added_ms"`
	LossPct    float64  `json:"loss_pct_each_way"`
	TCPMbps    *float64 `json:"tcp_mbps"`
	// the udp transport, and its goodput against no tunnel on the same link
	UDPMbps    *float64 `json:"udp_mbps,omitempty"`
	UDPOverDir *float64 `json:"udp_over_direct,omitempty"`
	// UDPOverDirMin and UDPOverDirMax are the lowest and highest udp/no
	// tunnel ratio of one round (when more than one round ran): a single
	// flow through the emulator moves a lot, and the spread says how far
	// the median can be trusted.
	UDPOverDirMin *float64 `json:"udp_over_direct_min,omitempty"`
	UDPOverDirMax *float64 `json:"udp_over_direct_max,omitempty"`
	UDPRTTMs      *float64 `json:"udp_rtt_ms,omitempty"`
	KCPMbps       *float64 `json:"kcp_mbps"`
	KCPOverTCP    *float64 `json:"kcp_over_tcp"`
	// kcp with forward error correction (Lossy.FEC)
	KCPFECMbps    *float64 `json:"kcp_fec_mbps,omitempty"`
	KCPFECOverTCP *float64 `json:"kcp_fec_over_tcp,omitempty"`
	KCPFECRTTMs   *float64 `json:"kcp_fec_rtt_ms,omitempty"`
	DirectMbps    *float64 `json:"direct_mbps"`
	TCPRTTMs      *float64 `json:"tcp_rtt_ms"`
	KCPRTTMs      *float64 `json:"kcp_rtt_ms"`
	DirectRTTMs   *float64 `json:"direct_rtt_ms"`
	// Measured by the emulator over the whole condition: percent of the
	// frames it dropped at random, each direction (vm->gw, gw->vm), and
	// frames it dropped for a full queue or could not read in time.
	EmulatedLossPct []*float64 `json:"emulated_loss_pct"`
	EmulatorDrops   *float64   `json:"emulator_overflow_drops"`
	// PerFlow is the same for each kind of flow of the condition ("direct",
	// "tcp", "udp", "kcp", "kcp-fec"), from the emulator's counters just
	// before and just after each of its flows (runs from before bench.sh
	// took them have none).
	PerFlow map[string]*FlowEmulation `json:"emulator_per_flow,omitempty"`
}

// FlowEmulation is what the emulator did to one kind of flow of a
// condition, summed over the rounds whose counters were taken.
type FlowEmulation struct {
	LossPct    []*float64 `json:"loss_pct"`    // dropped at random, percent of the frames, each direction
	Frames     []uint64   `json:"frames"`      // frames the emulator read, each direction
	Lost       []uint64   `json:"lost"`        // of them, dropped at random
	QueueDrops float64    `json:"queue_drops"` // dropped for a full queue or read too late
	Rounds     int        `json:"rounds"`
}

// fits reports whether counters of n directions may be added to fe.
func (fe *FlowEmulation) fits(n int) bool { return fe.Frames == nil || len(fe.Frames) == n }

// add sums d, one flow's counters (or a whole condition's), into fe,
// which fits them.
func (fe *FlowEmulation) add(d []wanstats.Direction) {
	if fe.Frames == nil {
		fe.Frames, fe.Lost = make([]uint64, len(d)), make([]uint64, len(d))
	}
	for i, x := range d {
		fe.Frames[i] += x.Rx
		fe.Lost[i] += x.Lost
		fe.QueueDrops += float64(x.QueueFull + x.KernelDrops)
	}
	fe.Rounds++
}

// lossPct is each direction's random loss in percent of its frames.
func (fe *FlowEmulation) lossPct() []*float64 {
	pct := []*float64{}
	for i, n := range fe.Frames {
		if n == 0 {
			pct = append(pct, nil)
			continue
		}
		pct = append(pct, ptr(100*float64(fe.Lost[i])/float64(n)))
	}
	return pct
}

type TCPResult struct {
	Test       string   `json:"test"`
	Desc       string   `json:"desc"`
	DirectMbps *float64 `json:"direct_mbps"`
	TunnelMbps *float64 `json:"tunnel_mbps"`
	Ratio      *float64 `json:"ratio"` // of the medians
	// RatioMin and RatioMax are the lowest and highest tunnel/direct ratio
	// of one round (when more than one round ran).
	RatioMin          *float64            `json:"ratio_min,omitempty"`
	RatioMax          *float64            `json:"ratio_max,omitempty"`
	DirectRetransmits *float64            `json:"direct_retransmits"`
	TunnelRetransmits *float64            `json:"tunnel_retransmits"`
	TunnelBytes       *float64            `json:"tunnel_bytes"`
	CPUSeconds        map[string]*float64 `json:"tunnel_cpu_s"`
	CPUPerGB          map[string]*float64 `json:"tunnel_cpu_s_per_gb"`
}

type UDPResult struct {
	Test          string   `json:"test"`
	Desc          string   `json:"desc"`
	DirectPPS     *float64 `json:"direct_rx_pps"`
	TunnelPPS     *float64 `json:"tunnel_rx_pps"`
	Ratio         *float64 `json:"ratio"`
	DirectLossPct *float64 `json:"direct_loss_pct"`
	TunnelLossPct *float64 `json:"tunnel_loss_pct"`
	DirectSentPPS *float64 `json:"direct_tx_pps"`
	TunnelSentPPS *float64 `json:"tunnel_tx_pps"`
}

type RTT struct {
	DirectAvg *float64 `json:"direct_avg"`
	TunnelAvg *float64 `json:"tunnel_avg"`
	Added     *float64 `json:"added"`
	DirectMax *float64 `json:"direct_max"`
	TunnelMax *float64 `json:"tunnel_max"`
}

func main() {
	dir := flag.String("dir", "", "directory with the raw measurements")
	out := flag.String("out", "", "write the JSON report here (optional)")
	var also []string
	flag.Func("also", "a directory with the tunnel measurements of another transport in the same rounds (repeatable)", func(d string) error {
		also = append(also, d)
		return nil
	})
	flag.Parse()
	if *dir == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: benchreport -dir RAWDIR [-also RAWDIR2]... [-out FILE.json]")
		os.Exit(2)
	}
	r := Build(*dir)
	for _, d := range also {
		r.Others = append(r.Others, Build(d))
	}
	compare(r)
	PrintTable(os.Stdout, r)
	if *out != "" {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(1)
		}
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(1)
		}
		fmt.Printf("\nreport written to %s\n", *out)
	}
}

// Build reads dir and computes the report.
func Build(dir string) *Report {
	r := &Report{CPUPerGB: map[string]*float64{}, PeakRSSKB: map[string]*float64{}, TCP: []TCPResult{}, UDP64: []UDPResult{}, Errors: []string{}}
	meta, err := readMeta(filepath.Join(dir, "meta.env"))
	if err != nil {
		r.Errors = append(r.Errors, err.Error())
	}
	r.Timestamp = meta["timestamp"]
	r.Transport = meta["transport"]
	r.Kernel = meta["kernel"]
	r.Commit = meta["commit"]
	r.DurationS, _ = strconv.ParseFloat(meta["duration_s"], 64)
	r.CPUs, _ = strconv.Atoi(meta["cpus"])
	clk, _ := strconv.ParseFloat(meta["clk_tck"], 64)
	if clk <= 0 {
		clk = 100
	}
	var errKeys []string
	for k := range meta {
		if strings.HasPrefix(k, "err.") {
			errKeys = append(errKeys, k)
		}
	}
	sort.Strings(errKeys)
	for _, k := range errKeys {
		r.Errors = append(r.Errors, strings.TrimPrefix(k, "err.")+": "+meta[k])
	}

	fail := func(err error) {
		if err != nil {
			r.Errors = append(r.Errors, err.Error())
		}
	}
	rounds, _ := strconv.Atoi(meta["rounds"])
	if rounds < 1 {
		rounds = 1
	}
	r.Rounds = rounds
	totalBytes := 0.0
	totalCPU := map[string]float64{}
	cpuComplete := map[string]bool{"gtun": true, "gtund": true}
	for _, t := range Tests {
		if t.UDP {
			u := UDPResult{Test: t.Name, Desc: t.Desc}
			var dPPS, dLoss, dSent, tPPS, tLoss, tSent []float64
			for k := 1; k <= rounds; k++ {
				direct, err := readIperf(filepath.Join(dir, "direct-"+t.Name+RoundSuffix(k)+".json"))
				fail(err)
				tunnel, err := readIperf(filepath.Join(dir, "tunnel-"+t.Name+RoundSuffix(k)+".json"))
				fail(err)
				if direct != nil {
					dPPS, dLoss, dSent = appendUDP(direct, dPPS, dLoss, dSent)
				}
				if tunnel != nil {
					tPPS, tLoss, tSent = appendUDP(tunnel, tPPS, tLoss, tSent)
				}
			}
			u.DirectPPS, u.DirectLossPct, u.DirectSentPPS = median(dPPS), median(dLoss), median(dSent)
			u.TunnelPPS, u.TunnelLossPct, u.TunnelSentPPS = median(tPPS), median(tLoss), median(tSent)
			u.Ratio = div(u.TunnelPPS, u.DirectPPS)
			r.UDP64 = append(r.UDP64, u)
			continue
		}
		c := TCPResult{Test: t.Name, Desc: t.Desc, CPUSeconds: map[string]*float64{}, CPUPerGB: map[string]*float64{}}
		var dMbps, tMbps, ratios []float64
		// CPU seconds of the daemons over all rounds; a figure only when
		// every round has its tunnel run and its ticks (a partial sum over
		// all the bytes would understate the cost).
		cpu := map[string]float64{}
		cpuOK := map[string]bool{"gtun": true, "gtund": true}
		for k := 1; k <= rounds; k++ {
			direct, err := readIperf(filepath.Join(dir, "direct-"+t.Name+RoundSuffix(k)+".json"))
			fail(err)
			tunnel, err := readIperf(filepath.Join(dir, "tunnel-"+t.Name+RoundSuffix(k)+".json"))
			fail(err)
			var dm, tm *float64
			if direct != nil {
				var retr *float64
				dm, retr, _ = direct.tcp()
				dMbps = append(dMbps, *dm)
				c.DirectRetransmits = sum(c.DirectRetransmits, retr)
			}
			if tunnel != nil {
				var retr, bytes *float64
				tm, retr, bytes = tunnel.tcp()
				tMbps = append(tMbps, *tm)
				c.TunnelRetransmits = sum(c.TunnelRetransmits, retr)
				c.TunnelBytes = sum(c.TunnelBytes, bytes)
			}
			for _, d := range Daemons {
				ticks, err := strconv.ParseFloat(meta["cpu."+t.Name+RoundSuffix(k)+"."+d], 64)
				if err != nil || tunnel == nil {
					cpuOK[d] = false
					continue
				}
				cpu[d] += ticks / clk
			}
			if v := div(tm, dm); v != nil {
				ratios = append(ratios, *v)
			}
		}
		c.DirectMbps, c.TunnelMbps = median(dMbps), median(tMbps)
		c.Ratio = div(c.TunnelMbps, c.DirectMbps)
		if len(ratios) > 1 {
			c.RatioMin, c.RatioMax = ptr(slices.Min(ratios)), ptr(slices.Max(ratios))
		}
		for _, d := range Daemons {
			if !cpuOK[d] {
				cpuComplete[d] = false
				continue
			}
			c.CPUSeconds[d] = ptr(cpu[d])
			c.CPUPerGB[d] = div(ptr(cpu[d]), ptr(*c.TunnelBytes/1e9))
			totalCPU[d] += cpu[d]
		}
		if c.TunnelBytes != nil {
			totalBytes += *c.TunnelBytes
		}
		r.TCP = append(r.TCP, c)
	}
	for _, d := range Daemons {
		if cpuComplete[d] && totalBytes > 0 {
			r.CPUPerGB[d] = ptr(totalCPU[d] / (totalBytes / 1e9))
		} else {
			r.CPUPerGB[d] = nil
		}
		r.PeakRSSKB[d] = nil
		for k := 1; k <= rounds; k++ {
			if v, err := strconv.ParseFloat(meta["rss"+RoundSuffix(k)+"."+d+"_kb"], 64); err == nil {
				if r.PeakRSSKB[d] == nil || v > *r.PeakRSSKB[d] {
					r.PeakRSSKB[d] = ptr(v)
				}
			}
		}
	}

	r.Topology = meta["topology"]
	if conds := strings.Fields(meta["lossy.conditions"]); len(conds) > 0 {
		var plain *float64
		if len(r.TCP) > 0 {
			plain = r.TCP[0].DirectMbps // tcp-up-1
		}
		for _, cc := range strings.Fields(meta["lossy.ccs"]) {
			l := buildLossy(dir, meta, cc, conds, fail)
			l.PlainDirectMbps = plain
			l.EmulatorRatio = div(l.EmulatorDirectMbps, plain)
			r.Lossy = append(r.Lossy, l)
		}
	}

	r.RTT = readPings(dir, "ping", rounds, fail)
	r.RTTOneCPU = readPings(dir, "ping-1cpu", rounds, fail)
	return r
}

// RoundSuffix is the file name part of round k of the direct and tunnel
// measurements: none for the first round (the layout of a one-round run),
// ".rK" for the others.
func RoundSuffix(k int) string {
	if k <= 1 {
		return ""
	}
	return ".r" + strconv.Itoa(k)
}

// readPings reads {direct,tunnel}-NAME[.rK].txt of every round: the median
// of the rounds' averages, the largest maximum.
func readPings(dir, name string, rounds int, fail func(error)) RTT {
	var rtt RTT
	for _, mode := range []string{"direct", "tunnel"} {
		var avgs []float64
		var mx *float64
		for k := 1; k <= rounds; k++ {
			avg, m, err := readPing(filepath.Join(dir, mode+"-"+name+RoundSuffix(k)+".txt"))
			fail(err)
			if avg != nil {
				avgs = append(avgs, *avg)
			}
			if m != nil && (mx == nil || *m > *mx) {
				mx = m
			}
		}
		if mode == "direct" {
			rtt.DirectAvg, rtt.DirectMax = median(avgs), mx
		} else {
			rtt.TunnelAvg, rtt.TunnelMax = median(avgs), mx
		}
	}
	if rtt.DirectAvg != nil && rtt.TunnelAvg != nil {
		rtt.Added = ptr(*rtt.TunnelAvg - *rtt.DirectAvg)
	}
	return rtt
}

func appendUDP(ip *iperf, pps, loss, sent []float64) ([]float64, []float64, []float64) {
	p, l, s := ip.udp()
	if p == nil {
		return pps, loss, sent
	}
	return append(pps, *p), append(loss, *l), append(sent, *s)
}

// median of vs (the mean of the middle two for an even count); nil when empty.
func median(vs []float64) *float64 {
	if len(vs) == 0 {
		return nil
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return ptr((s[n/2-1] + s[n/2]) / 2)
	}
	return ptr(s[len(s)/2])
}

// sum adds b to a; nil counts as nothing, and nil + nil is nil.
func sum(a, b *float64) *float64 {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return ptr(*a + *b)
}

// LossyTag is the file name part of a lossy-link condition measured with TCP
// congestion control cc.
func LossyTag(cc, delayMs, lossPct string) string { return cc + "-d" + delayMs + "-l" + lossPct }

func buildLossy(dir string, meta map[string]string, cc string, conds []string, fail func(error)) *Lossy {
	l := &Lossy{KCPNA: meta["lossy."+cc+".kcp_na"], CC: cc, FEC: meta["lossy.fec"], Seed: meta["lossy.seed"], Rows: []LossyRow{},
		UDP: slices.Contains(strings.Fields(meta["lossy.transports"]), "udp")}
	l.DurationS, _ = strconv.ParseFloat(meta["lossy.duration_s"], 64)
	if l.Rounds, _ = strconv.Atoi(meta["lossy.rounds"]); l.Rounds < 1 {
		l.Rounds = 1 // a run from before rounds: one flow each
	}
	for _, c := range conds {
		ds, ls, ok := strings.Cut(c, ":")
		delay, err1 := strconv.ParseFloat(ds, 64)
		loss, err2 := strconv.ParseFloat(ls, 64)
		if !ok || err1 != nil || err2 != nil {
			fail(fmt.Errorf("lossy.conditions: bad condition %q (want DELAY_MS:LOSS_PCT)", c))
			continue
		}
		tag := LossyTag(cc, ds, ls)
		row := LossyRow{DelayMs: delay, RTTAddedMs: 2 * delay, LossPct: loss, EmulatedLossPct: []*float64{}}
		// measure gives the medians of the rounds (bench.sh LOSSY_ROUNDS:
		// no tunnel and each transport take turns on the same link), and
		// each round's rate (nil where it is missing).
		perRound := map[string][]*float64{}
		// all sums every flow's emulator counters: the condition's figures
		// (the emulator restarts for each flow, with the round's seed: see
		// bench.sh).
		all := &FlowEmulation{}
		measure := func(mode string) (mbps, rtt *float64) {
			if strings.HasPrefix(mode, "kcp") && l.KCPNA != "" {
				return nil, nil
			}
			if fe := flowEmulation(dir, "lossy-"+tag+"-"+mode, l.Rounds, all, fail); fe != nil {
				if row.PerFlow == nil {
					row.PerFlow = map[string]*FlowEmulation{}
				}
				row.PerFlow[mode] = fe
			}
			var rates, rtts []float64
			perRound[mode] = make([]*float64, l.Rounds)
			for k := 1; k <= l.Rounds; k++ {
				ip, err := readIperf(filepath.Join(dir, "lossy-"+tag+"-"+mode+"-tcp-up-1"+RoundSuffix(k)+".json"))
				fail(err)
				if ip != nil {
					if m, _, _ := ip.tcp(); m != nil {
						rates = append(rates, *m)
						perRound[mode][k-1] = m
					}
				}
				avg, _, err := readPing(filepath.Join(dir, "lossy-"+tag+"-"+mode+"-ping"+RoundSuffix(k)+".txt"))
				fail(err)
				if avg != nil {
					rtts = append(rtts, *avg)
				}
			}
			return median(rates), median(rtts)
		}
		row.DirectMbps, row.DirectRTTMs = measure("direct")
		row.TCPMbps, row.TCPRTTMs = measure("tcp")
		if l.UDP {
			row.UDPMbps, row.UDPRTTMs = measure("udp")
			row.UDPOverDir = div(row.UDPMbps, row.DirectMbps)
			row.UDPOverDirMin, row.UDPOverDirMax = roundRange(perRound["udp"], perRound["direct"])
		}
		row.KCPMbps, row.KCPRTTMs = measure("kcp")
		row.KCPOverTCP = div(row.KCPMbps, row.TCPMbps)
		if l.FEC != "" {
			row.KCPFECMbps, row.KCPFECRTTMs = measure("kcp-fec")
			row.KCPFECOverTCP = div(row.KCPFECMbps, row.TCPMbps)
		}
		if all.Rounds == 0 {
			// A run from before the per-flow counters: the emulator's
			// counters at the end of the condition.
			if st, err := readWanemu(filepath.Join(dir, "lossy-"+tag+"-wanemu.json")); err != nil {
				fail(err)
			} else {
				all.add(st.Directions)
			}
		}
		if all.Rounds > 0 {
			row.EmulatedLossPct, row.EmulatorDrops = all.lossPct(), &all.QueueDrops
		}
		if delay == 0 && loss == 0 {
			l.EmulatorDirectMbps = row.DirectMbps
		}
		l.Rows = append(l.Rows, row)
	}
	return l
}

// roundRange is the lowest and highest a[k]/b[k] over the rounds that have
// both; nil, nil with fewer than two such rounds.
func roundRange(a, b []*float64) (lo, hi *float64) {
	var ratios []float64
	for k := range min(len(a), len(b)) {
		if r := div(a[k], b[k]); r != nil {
			ratios = append(ratios, *r)
		}
	}
	if len(ratios) < 2 {
		return nil, nil
	}
	return ptr(slices.Min(ratios)), ptr(slices.Max(ratios))
}

// flowEmulation sums the emulator's counters over the flows of prefix
// (lossy-TAG-MODE), each the difference of its -wanemu-before and
// -wanemu-after snapshots, and adds each flow's to all too. nil when no
// round has them (a run from before they were taken); a round with one of
// the two, or whose counters do not add up, is an error and left out.
func flowEmulation(dir, prefix string, rounds int, all *FlowEmulation, fail func(error)) *FlowEmulation {
	fe := &FlowEmulation{}
	for k := 1; k <= rounds; k++ {
		name := func(when string) string { return filepath.Join(dir, prefix+"-wanemu-"+when+RoundSuffix(k)+".json") }
		if !exists(name("before")) && !exists(name("after")) {
			continue
		}
		before, err := readWanemu(name("before"))
		if err != nil {
			fail(err)
			continue
		}
		after, err := readWanemu(name("after"))
		if err != nil {
			fail(err)
			continue
		}
		if n := len(after.Directions); len(before.Directions) != n || !fe.fits(n) || !all.fits(n) {
			fail(fmt.Errorf("%s: the emulator's directions changed during the flow", filepath.Base(name("after"))))
			continue
		}
		d, err := wanDelta(before, after)
		if err != nil {
			fail(fmt.Errorf("%s: %v", filepath.Base(name("after")), err))
			continue
		}
		fe.add(d)
		all.add(d)
	}
	if fe.Rounds == 0 {
		return nil
	}
	fe.LossPct = fe.lossPct()
	return fe
}

// wanDelta is each direction's counters of after less those of before
// (the same emulator: counters only grow).
func wanDelta(before, after *wanstats.Stats) ([]wanstats.Direction, error) {
	d := make([]wanstats.Direction, len(after.Directions))
	for i, a := range after.Directions {
		b := before.Directions[i]
		if a.Rx < b.Rx || a.Lost < b.Lost || a.QueueFull < b.QueueFull || a.KernelDrops < b.KernelDrops {
			return nil, errors.New("the emulator's counters went back (restarted during the flow?)")
		}
		d[i] = wanstats.Direction{Name: a.Name, Rx: a.Rx - b.Rx, Lost: a.Lost - b.Lost,
			QueueFull: a.QueueFull - b.QueueFull, KernelDrops: a.KernelDrops - b.KernelDrops}
	}
	return d, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func readWanemu(path string) (*wanstats.Stats, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", filepath.Base(path), errNotExist(err))
	}
	var w wanstats.Stats
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%s: not wanemu stats: %v", filepath.Base(path), err)
	}
	return &w, nil
}

// iperf is the part of iperf3's -J output we use.
type iperf struct {
	Error string `json:"error"`
	Start struct {
		TestStart struct {
			Protocol string  `json:"protocol"`
			Blksize  float64 `json:"blksize"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		SumSent     *iperfSum `json:"sum_sent"`
		SumReceived *iperfSum `json:"sum_received"`
		Sum         *iperfSum `json:"sum"` // UDP: receiver's view of packets and loss
	} `json:"end"`
}

type iperfSum struct {
	Seconds       float64  `json:"seconds"`
	Bytes         float64  `json:"bytes"`
	BitsPerSecond float64  `json:"bits_per_second"`
	Retransmits   *float64 `json:"retransmits"`
	Packets       float64  `json:"packets"`
	LostPackets   float64  `json:"lost_packets"`
	LostPercent   float64  `json:"lost_percent"`
}

func readIperf(path string) (*iperf, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", filepath.Base(path), errNotExist(err))
	}
	var ip iperf
	if err := json.Unmarshal(b, &ip); err != nil {
		return nil, fmt.Errorf("%s: not iperf3 JSON: %v", filepath.Base(path), err)
	}
	if ip.Error != "" {
		return nil, fmt.Errorf("%s: iperf3: %s", filepath.Base(path), ip.Error)
	}
	if ip.End.SumReceived == nil || ip.End.SumReceived.Seconds == 0 {
		return nil, fmt.Errorf("%s: no end.sum_received", filepath.Base(path))
	}
	return &ip, nil
}

func errNotExist(err error) error {
	if os.IsNotExist(err) {
		return fmt.Errorf("missing (the measurement did not run)")
	}
	return err
}

// tcp returns receiver throughput in Mbit/s, sender retransmits, bytes received.
func (ip *iperf) tcp() (mbps, retrans, bytes *float64) {
	rx := ip.End.SumReceived
	mbps = ptr(rx.BitsPerSecond / 1e6)
	bytes = ptr(rx.Bytes)
	if ip.End.SumSent != nil && ip.End.SumSent.Retransmits != nil {
		retrans = ptr(*ip.End.SumSent.Retransmits)
	}
	return
}

// udp returns packets/s received, loss in percent, packets/s sent.
func (ip *iperf) udp() (rxPPS, lossPct, txPPS *float64) {
	s := ip.End.Sum
	if s == nil {
		s = ip.End.SumReceived
	}
	if s.Seconds <= 0 {
		return nil, nil, nil
	}
	rx := s.Packets - s.LostPackets
	if rx < 0 {
		rx = 0
	}
	rxPPS = ptr(rx / s.Seconds)
	txPPS = ptr(s.Packets / s.Seconds)
	lossPct = ptr(s.LostPercent)
	return
}

var pingRTT = regexp.MustCompile(`(?m)^(?:rtt|round-trip) min/avg/max/(?:mdev|stddev) = ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) ms`)

func readPing(path string) (avg, max *float64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", filepath.Base(path), errNotExist(err))
	}
	m := pingRTT.FindSubmatch(b)
	if m == nil {
		return nil, nil, fmt.Errorf("%s: no rtt summary line", filepath.Base(path))
	}
	a, _ := strconv.ParseFloat(string(m[2]), 64)
	x, _ := strconv.ParseFloat(string(m[3]), 64)
	return &a, &x, nil
}

func readMeta(path string) (map[string]string, error) {
	m := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return m, fmt.Errorf("meta.env: %v", errNotExist(err))
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m, sc.Err()
}

func ptr(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func div(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 {
		return nil
	}
	return ptr(*a / *b)
}

func f(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

func pct(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", *v*100)
}

// roles names the two measured processes of a transport's runs: gtun and
// gtund, or the client and server of a tunnel measured beside gtun for
// reference (bench's WIREGUARD_GO), whose figures the report keeps under
// the same keys.
func roles(transport string) (client, server string) {
	switch transport {
	case "", "tcp", "udp", "kcp":
		return "gtun", "gtund"
	}
	return transport + " client", transport + " server"
}

// PrintTable writes the human-readable report.
func PrintTable(w io.Writer, r *Report) {
	rounds := ""
	if r.Rounds > 1 {
		rounds = fmt.Sprintf(", %d rounds (medians; ratio range: lowest and highest round)", r.Rounds)
	}
	fmt.Fprintf(w, "gtun bench  %s  transport=%s  kernel=%s  commit=%s  %gs per test%s\n\n",
		r.Timestamp, r.Transport, r.Kernel, r.Commit, r.DurationS, rounds)
	head := []string{"test", "direct Mbit/s", "tunnel Mbit/s", "ratio"}
	if r.Rounds > 1 {
		head = append(head, "ratio range")
	}
	client, server := roles(r.Transport)
	tw := newTable(append(head, "tunnel retr", client+" CPU s/GB", server+" CPU s/GB")...)
	for _, c := range r.TCP {
		cells := []string{c.Desc, f(c.DirectMbps, "%.0f"), f(c.TunnelMbps, "%.0f"), pct(c.Ratio)}
		if r.Rounds > 1 {
			cells = append(cells, pct(c.RatioMin)+"-"+pct(c.RatioMax))
		}
		tw.row(append(cells, f(c.TunnelRetransmits, "%.0f"), f(c.CPUPerGB["gtun"], "%.2f"), f(c.CPUPerGB["gtund"], "%.2f"))...)
	}
	tw.print(w)
	fmt.Fprintln(w)
	tu := newTable("test", "direct rx pkt/s", "tunnel rx pkt/s", "ratio", "direct loss", "tunnel loss")
	for _, u := range r.UDP64 {
		tu.row(u.Desc, f(u.DirectPPS, "%.0f"), f(u.TunnelPPS, "%.0f"), pct(u.Ratio), f(u.DirectLossPct, "%.1f%%"), f(u.TunnelLossPct, "%.1f%%"))
	}
	tu.print(w)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "RTT avg (ping vm->pod): direct %s ms, tunnel %s ms, added %s ms (max: direct %s, tunnel %s)\n",
		f(r.RTT.DirectAvg, "%.3f"), f(r.RTT.TunnelAvg, "%.3f"), f(r.RTT.Added, "%.3f"), f(r.RTT.DirectMax, "%.3f"), f(r.RTT.TunnelMax, "%.3f"))
	fmt.Fprintf(w, "RTT avg, ping and daemons on CPU 0 (no idle-vCPU wake-ups): direct %s ms, tunnel %s ms, added %s ms\n",
		f(r.RTTOneCPU.DirectAvg, "%.3f"), f(r.RTTOneCPU.TunnelAvg, "%.3f"), f(r.RTTOneCPU.Added, "%.3f"))
	fmt.Fprintf(w, "CPU per GB through the tunnel (all TCP tests): %s %s s, %s %s s\n",
		client, f(r.CPUPerGB["gtun"], "%.2f"), server, f(r.CPUPerGB["gtund"], "%.2f"))
	fmt.Fprintf(w, "peak RSS (VmHWM): %s %s MiB, %s %s MiB\n",
		client, f(scale(r.PeakRSSKB["gtun"], 1.0/1024), "%.1f"), server, f(scale(r.PeakRSSKB["gtund"], 1.0/1024), "%.1f"))
	if r.Topology != "" {
		fmt.Fprintf(w, "topology of the tests above: %s\n", r.Topology)
	}
	for _, o := range r.Others {
		fmt.Fprintf(w, "\n---- the same rounds, transport %s ----\n", o.Transport)
		PrintTable(w, o)
	}
	if len(r.Compare) > 0 {
		fmt.Fprintln(w, "\ntransports side by side (same run, rounds interleaved; CPU s/GB of both ends' daemons):")
		t := newTable("test", "transport", "Mbit/s", "transport", "Mbit/s", "ratio", "CPU s/GB", "CPU s/GB")
		for _, c := range r.Compare {
			t.row(c.Test, c.Base, f(c.BaseMbps, "%.0f"), c.Other, f(c.Mbps, "%.0f"), pct(c.Ratio),
				f(sum(c.BaseCPU["gtun"], c.BaseCPU["gtund"]), "%.2f"), f(sum(c.CPU["gtun"], c.CPU["gtund"]), "%.2f"))
		}
		t.print(w)
	}
	for _, l := range r.Lossy {
		printLossy(w, l)
	}
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "\nmeasurements that failed:")
		for _, e := range r.Errors {
			fmt.Fprintln(w, "  -", e)
		}
	}
}

func printLossy(w io.Writer, l *Lossy) {
	cc := ""
	if l.CC != "" {
		cc = ", TCP congestion control " + l.CC
	}
	rounds := ""
	if l.Rounds > 1 {
		rounds = fmt.Sprintf(", medians of %d rounds (no tunnel and the transports taking turns)", l.Rounds)
	}
	fmt.Fprintf(w, "\nlossy link: WAN emulator (tools/wanemu) between vm and gw; iperf3 TCP vm->pod, 1 stream, %gs%s%s; RTT: idle ping vm->pod\n", l.DurationS, cc, rounds)
	head := []string{"RTT added", "loss each way", "tcp Mbit/s"}
	if l.UDP {
		head = append(head, "udp Mbit/s", "udp/direct")
	}
	head = append(head, "kcp Mbit/s", "kcp/tcp")
	if l.FEC != "" {
		head = append(head, "kcp+fec Mbit/s", "kcp+fec/tcp")
	}
	head = append(head, "tcp RTT ms")
	if l.UDP {
		head = append(head, "udp RTT ms")
	}
	head = append(head, "kcp RTT ms")
	if l.FEC != "" {
		head = append(head, "kcp+fec RTT ms")
	}
	t := newTable(append(head, "direct Mbit/s", "direct RTT ms", "emulated loss")...)
	ratio := func(v *float64) string {
		if v == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", *v)
	}
	for _, r := range l.Rows {
		emu := emulatedCell(r.EmulatedLossPct, r.EmulatorDrops)
		cells := []string{fmt.Sprintf("%g ms", r.RTTAddedMs), fmt.Sprintf("%g%%", r.LossPct), f(r.TCPMbps, "%.1f")}
		if l.UDP {
			udp := ratio(r.UDPOverDir)
			if r.UDPOverDirMin != nil && r.UDPOverDirMax != nil {
				udp += fmt.Sprintf(" (%.2f-%.2f)", *r.UDPOverDirMin, *r.UDPOverDirMax)
			}
			cells = append(cells, f(r.UDPMbps, "%.1f"), udp)
		}
		cells = append(cells, f(r.KCPMbps, "%.1f"), ratio(r.KCPOverTCP))
		if l.FEC != "" {
			cells = append(cells, f(r.KCPFECMbps, "%.1f"), ratio(r.KCPFECOverTCP))
		}
		cells = append(cells, f(r.TCPRTTMs, "%.1f"))
		if l.UDP {
			cells = append(cells, f(r.UDPRTTMs, "%.1f"))
		}
		cells = append(cells, f(r.KCPRTTMs, "%.1f"))
		if l.FEC != "" {
			cells = append(cells, f(r.KCPFECRTTMs, "%.1f"))
		}
		t.row(append(cells, f(r.DirectMbps, "%.1f"), f(r.DirectRTTMs, "%.1f"), emu)...)
	}
	t.print(w)
	if l.KCPNA != "" {
		fmt.Fprintf(w, "kcp: n/a (%s)\n", l.KCPNA)
	}
	if l.FEC != "" {
		fmt.Fprintf(w, "kcp+fec: kcp with fec_data:fec_parity = %s on both sides\n", l.FEC)
	}
	if l.Seed != "" {
		fmt.Fprintf(w, "loss draws: the same for every flow of a round (seed %s plus the round's number over the section)\n", l.Seed)
	}
	if l.UDP && l.Rounds > 1 {
		fmt.Fprintln(w, "udp/direct: the ratio of the medians, then (lowest-highest) of one round's udp flow against that round's flow with no tunnel")
	}
	if l.EmulatorDirectMbps != nil {
		fmt.Fprintf(w, "emulator cost at 0 ms 0%%: direct TCP %s Mbit/s through it, %s Mbit/s on the plain topology (%s)\n",
			f(l.EmulatorDirectMbps, "%.0f"), f(l.PlainDirectMbps, "%.0f"), pct(l.EmulatorRatio))
	}
	printPerFlow(w, l)
}

// printPerFlow prints, for each condition, the loss the emulator dealt
// each kind of flow and what it dropped for a full queue under it: whether
// every flow of a row met the same link.
func printPerFlow(w io.Writer, l *Lossy) {
	modes := []string{"direct", "tcp"}
	if l.UDP {
		modes = append(modes, "udp")
	}
	modes = append(modes, "kcp")
	if l.FEC != "" {
		modes = append(modes, "kcp-fec")
	}
	var t *table
	for _, r := range l.Rows {
		if r.PerFlow == nil {
			continue
		}
		if t == nil {
			head := []string{"RTT added", "loss each way"}
			for _, m := range modes {
				head = append(head, strings.Replace(m, "-", "+", 1)) // kcp+fec, as in the table above
			}
			t = newTable(head...)
		}
		cells := []string{fmt.Sprintf("%g ms", r.RTTAddedMs), fmt.Sprintf("%g%%", r.LossPct)}
		for _, m := range modes {
			fe := r.PerFlow[m]
			if fe == nil {
				cells = append(cells, "n/a")
				continue
			}
			cells = append(cells, emulatedCell(fe.LossPct, &fe.QueueDrops))
		}
		t.row(cells...)
	}
	if t == nil {
		return
	}
	fmt.Fprintln(w, "emulated loss per flow, vm->gw / gw->vm (+ frames dropped for a full queue), over the rounds:")
	t.print(w)
}

// emulatedCell is the emulator's random loss each direction, and its
// overflow drops when there were any.
func emulatedCell(lossPct []*float64, drops *float64) string {
	var b strings.Builder
	for i, v := range lossPct {
		if i > 0 {
			b.WriteString(" / ")
		}
		b.WriteString(f(v, "%.2f%%"))
	}
	if drops != nil && *drops > 0 {
		fmt.Fprintf(&b, " (+%.0f overflow)", *drops)
	}
	return b.String()
}

func scale(v *float64, k float64) *float64 {
	if v == nil {
		return nil
	}
	return ptr(*v * k)
}

type table struct{ rows [][]string }

func newTable(head ...string) *table { return &table{rows: [][]string{head}} }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) print(w io.Writer) {
	width := make([]int, len(t.rows[0]))
	for _, r := range t.rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	line := func(r []string) {
		var b strings.Builder
		for i, c := range r {
			if i > 0 {
				b.WriteString(" | ")
			}
			if i == 0 {
				fmt.Fprintf(&b, "%-*s", width[i], c)
			} else {
				fmt.Fprintf(&b, "%*s", width[i], c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(t.rows[0])
	sep := make([]string, len(width))
	for i, n := range width {
		sep[i] = strings.Repeat("-", n)
	}
	fmt.Fprintln(w, strings.Join(sep, "-|-"))
	for _, r := range t.rows[1:] {
		line(r)
	}
}
