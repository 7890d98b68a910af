package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const tcpJSON = `{"start":{"test_start":{"protocol":"TCP","blksize":131072}},
"end":{"sum_sent":{"seconds":5,"bytes":5000000000,"bits_per_second":8e9,"retransmits":7,"sender":true},
"sum_received":{"seconds":5,"bytes":5000000000,"bits_per_second":8e9,"sender":true}}}`

const tcpDirectJSON = `{"end":{"sum_sent":{"seconds":5,"bytes":1,"bits_per_second":32e9,"retransmits":0},
"sum_received":{"seconds":5,"bytes":1,"bits_per_second":32e9}}}`

const udpJSON = `{"start":{"test_start":{"protocol":"UDP","blksize":64}},
"end":{"sum":{"seconds":2,"bytes":1,"packets":1000,"lost_packets":200,"lost_percent":20},
"sum_sent":{"seconds":2,"bytes":1,"packets":1000},
"sum_received":{"seconds":2,"bytes":1,"packets":1000,"lost_packets":200,"lost_percent":20}}}`

const pingTxt = `PING 10.244.1.20 (10.244.1.20) 56(84) bytes of data.

--- 10.244.1.20 ping statistics ---
20 packets transmitted, 20 received, 0% packet loss, time 965ms
rtt min/avg/max/mdev = 0.050/0.100/0.200/0.010 ms
`

func write(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "meta.env", "timestamp=T\ntransport=tcp\nclk_tck=100\ncpu.tcp-up-1.gtun=250\ncpu.tcp-up-1.gtund=100\nrss.gtun_kb=20480\nrss.gtund_kb=10240\nerr.tunnel-x=boom\n")
	write(t, dir, "direct-tcp-up-1.json", tcpDirectJSON)
	write(t, dir, "tunnel-tcp-up-1.json", tcpJSON)
	write(t, dir, "direct-udp64-up.json", udpJSON)
	write(t, dir, "tunnel-udp64-up.json", `{"error":"unable to connect to server"}`)
	write(t, dir, "direct-ping.txt", pingTxt)
	write(t, dir, "tunnel-ping.txt", strings.Replace(pingTxt, "0.050/0.100/0.200", "0.100/0.250/0.400", 1))
	write(t, dir, "direct-ping-1cpu.txt", pingTxt)
	// tunnel-ping-1cpu.txt missing: reported, the rest still built

	r := Build(dir)
	c := r.TCP[0]
	if *c.DirectMbps != 32000 || *c.TunnelMbps != 8000 || *c.Ratio != 0.25 || *c.TunnelRetransmits != 7 {
		t.Errorf("tcp-up-1 = %+v", c)
	}
	// 2.5 s of gtun CPU for 5 GB
	if got := *c.CPUPerGB["gtun"]; got != 0.5 {
		t.Errorf("gtun s/GB = %v", got)
	}
	if r.CPUPerGB["gtun"] != nil {
		t.Errorf("aggregate CPU/GB must be n/a when some TCP tests are missing, got %v", *r.CPUPerGB["gtun"])
	}
	if r.TCP[1].DirectMbps != nil || r.TCP[1].Ratio != nil {
		t.Errorf("missing test has values: %+v", r.TCP[1])
	}
	u := r.UDP64[0]
	if *u.DirectPPS != 400 || *u.DirectSentPPS != 500 || *u.DirectLossPct != 20 || u.TunnelPPS != nil {
		t.Errorf("udp64-up = %+v", u)
	}
	if *r.RTT.DirectAvg != 0.1 || *r.RTT.TunnelAvg != 0.25 || *r.RTT.Added < 0.1499 || *r.RTT.Added > 0.1501 {
		t.Errorf("rtt = %+v", r.RTT)
	}
	if *r.RTTOneCPU.DirectAvg != 0.1 || r.RTTOneCPU.TunnelAvg != nil || r.RTTOneCPU.Added != nil {
		t.Errorf("rtt on one cpu = %+v", r.RTTOneCPU)
	}
	if *r.PeakRSSKB["gtun"] != 20480 {
		t.Errorf("rss = %v", r.PeakRSSKB)
	}
	errs := strings.Join(r.Errors, "\n")
	for _, want := range []string{"tunnel-x: boom", "unable to connect to server", "tunnel-tcp-down-1.json: missing", "tunnel-ping-1cpu.txt: missing"} {
		if !strings.Contains(errs, want) {
			t.Errorf("errors lack %q:\n%s", want, errs)
		}
	}
	var buf bytes.Buffer
	PrintTable(&buf, r)
	for _, want := range []string{"TCP vm->pod, 1 stream", "25.0%", "added 0.150 ms", "CPU 0 (no idle-vCPU wake-ups): direct 0.100 ms, tunnel n/a", "gtun 20.0 MiB"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestLossy(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "meta.env", "timestamp=T\ntopology=plain\nlossy.conditions=0:0 25:1\nlossy.duration_s=10\nlossy.ccs=cubic bbr\nlossy.fec=10:3\n")
	write(t, dir, "direct-tcp-up-1.json", tcpDirectJSON) // 32 Gbit/s
	mbps := func(v string) string { return strings.ReplaceAll(tcpJSON, "8e9", v) }
	write(t, dir, "lossy-cubic-d0-l0-direct-tcp-up-1.json", mbps("1.6e9"))
	write(t, dir, "lossy-cubic-d0-l0-tcp-tcp-up-1.json", mbps("1e9"))
	write(t, dir, "lossy-cubic-d0-l0-kcp-tcp-up-1.json", mbps("2e8"))
	write(t, dir, "lossy-cubic-d25-l1-direct-tcp-up-1.json", mbps("2e7"))
	write(t, dir, "lossy-cubic-d25-l1-tcp-tcp-up-1.json", mbps("1e7"))
	write(t, dir, "lossy-cubic-d25-l1-kcp-tcp-up-1.json", mbps("4e7"))
	write(t, dir, "lossy-cubic-d25-l1-kcp-fec-tcp-up-1.json", mbps("8e7"))
	write(t, dir, "lossy-bbr-d25-l1-tcp-tcp-up-1.json", mbps("3e7"))
	for _, tag := range []string{"cubic-d0-l0", "cubic-d25-l1"} {
		for _, m := range []string{"direct", "tcp", "kcp"} {
			write(t, dir, "lossy-"+tag+"-"+m+"-ping.txt", strings.Replace(pingTxt, "0.050/0.100/0.200", "50.0/51.5/60.0", 1))
		}
	}
	write(t, dir, "lossy-cubic-d25-l1-wanemu.json", `{"directions":[{"rx":1000,"lost":10},{"rx":400,"lost":4,"queue_full":2}]}`)

	r := Build(dir)
	if len(r.Lossy) != 2 || r.Lossy[0].CC != "cubic" || r.Lossy[1].CC != "bbr" || len(r.Lossy[0].Rows) != 2 {
		t.Fatalf("lossy = %+v", r.Lossy)
	}
	if got := r.Lossy[1].Rows[1].TCPMbps; got == nil || *got != 30 {
		t.Errorf("bbr 25:1 tcp = %v, want 30", got)
	}
	row := r.Lossy[0].Rows[1]
	if row.DelayMs != 25 || row.RTTAddedMs != 50 || row.LossPct != 1 || *row.TCPMbps != 10 || *row.KCPMbps != 40 ||
		*row.KCPOverTCP != 4 || *row.DirectMbps != 20 || *row.TCPRTTMs != 51.5 {
		t.Errorf("row = %+v", row)
	}
	if row.KCPFECMbps == nil || *row.KCPFECMbps != 80 || *row.KCPFECOverTCP != 8 {
		t.Errorf("kcp+fec = %v / %v, want 80 Mbit/s, 8x", row.KCPFECMbps, row.KCPFECOverTCP)
	}
	if len(row.EmulatedLossPct) != 2 || *row.EmulatedLossPct[0] != 1 || *row.EmulatedLossPct[1] != 1 || *row.EmulatorDrops != 2 {
		t.Errorf("emulated = %v, drops %v", row.EmulatedLossPct, row.EmulatorDrops)
	}
	if *r.Lossy[0].EmulatorDirectMbps != 1600 || *r.Lossy[0].EmulatorRatio != 0.05 {
		t.Errorf("emulator overhead = %v %v", *r.Lossy[0].EmulatorDirectMbps, *r.Lossy[0].EmulatorRatio)
	}
	if !strings.Contains(strings.Join(r.Errors, "\n"), "lossy-cubic-d0-l0-wanemu.json: missing") {
		t.Errorf("errors = %v", r.Errors)
	}
	var buf bytes.Buffer
	PrintTable(&buf, r)
	for _, want := range []string{"50 ms     |            1% |       10.0 |       40.0 |   4.00x", "1.00% / 1.00% (+2 overflow)", "(5.0%)", "topology of the tests above: plain", "10s, TCP congestion control cubic;", "10s, TCP congestion control bbr;", "8.00x", "fec_data:fec_parity = 10:3"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}

	// kcp not available: n/a, not an error
	write(t, dir, "meta.env", "lossy.conditions=25:1\nlossy.ccs=cubic\nlossy.cubic.kcp_na=gtund refuses kcp\n")
	r = Build(dir)
	if r.Lossy[0].Rows[0].KCPMbps != nil || r.Lossy[0].Rows[0].KCPOverTCP != nil || strings.Contains(strings.Join(r.Errors, "\n"), "kcp") {
		t.Errorf("kcp n/a: row %+v errors %v", r.Lossy[0].Rows[0], r.Errors)
	}
	buf.Reset()
	PrintTable(&buf, r)
	if !strings.Contains(buf.String(), "kcp: n/a (gtund refuses kcp)") {
		t.Errorf("table:\n%s", buf.String())
	}
}

// With LOSSY_ROUNDS, a lossy figure is the median of its rounds' flows
// (and RTTs); a missing round is an error, not a smaller median.
func TestLossyRounds(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "meta.env", "timestamp=T\nlossy.conditions=0:0\nlossy.duration_s=10\nlossy.rounds=3\nlossy.ccs=cubic\nlossy.fec=\nlossy.transports=tcp udp kcp\n")
	mbps := func(v float64) string {
		return strings.ReplaceAll(tcpJSON, "8e9", strconv.FormatFloat(v*1e6, 'g', -1, 64))
	}
	flows := map[string][3]float64{"direct": {1600, 1000, 1400}, "tcp": {900, 1300, 1200}, "udp": {1100, 1250, 800}, "kcp": {300, 200, 250}}
	for mode, rates := range flows {
		for k, v := range rates {
			write(t, dir, "lossy-cubic-d0-l0-"+mode+"-tcp-up-1"+RoundSuffix(k+1)+".json", mbps(v))
			write(t, dir, "lossy-cubic-d0-l0-"+mode+"-ping"+RoundSuffix(k+1)+".txt", strings.Replace(pingTxt, "0.050/0.100/0.200", fmt.Sprintf("0.1/0.%d/0.9", 3+k), 1))
		}
	}
	write(t, dir, "lossy-cubic-d0-l0-wanemu.json", `{"directions":[{"rx":1000},{"rx":400}]}`)
	r := Build(dir)
	if strings.Contains(strings.Join(r.Errors, "\n"), "lossy") { // the clean section has no files here
		t.Fatalf("errors: %v", r.Errors)
	}
	l := r.Lossy[0]
	row := l.Rows[0]
	if l.Rounds != 3 || *row.DirectMbps != 1400 || *row.TCPMbps != 1200 || *row.UDPMbps != 1100 || *row.KCPMbps != 250 {
		t.Fatalf("rounds %d, row %+v", l.Rounds, row)
	}
	if *row.UDPOverDir != 1100.0/1400 || *row.TCPRTTMs != 0.4 {
		t.Errorf("udp/direct %v, tcp RTT %v: want the ratio of the medians, the median RTT", *row.UDPOverDir, *row.TCPRTTMs)
	}
	// Round by round: 1100/1600, 1250/1000, 800/1400.
	if row.UDPOverDirMin == nil || row.UDPOverDirMax == nil || *row.UDPOverDirMin != 800.0/1400 || *row.UDPOverDirMax != 1250.0/1000 {
		t.Errorf("udp/direct range %v-%v, want %v-%v", row.UDPOverDirMin, row.UDPOverDirMax, 800.0/1400, 1250.0/1000)
	}
	var buf bytes.Buffer
	PrintTable(&buf, r)
	if !strings.Contains(buf.String(), "medians of 3 rounds") || !strings.Contains(buf.String(), "0.79x (0.57-1.25)") {
		t.Errorf("table:\n%s", buf.String())
	}
	os.Remove(filepath.Join(dir, "lossy-cubic-d0-l0-udp-tcp-up-1.r3.json"))
	if r = Build(dir); !strings.Contains(strings.Join(r.Errors, "\n"), "lossy-cubic-d0-l0-udp-tcp-up-1.r3.json") {
		t.Errorf("a missing round: errors %v", r.Errors)
	}
}

// TestLossyPerFlow: the emulator's counters before and after each flow
// give each kind of flow its own loss and overflow drops, summed over the
// rounds; a round with one snapshot of the two, or with counters that went
// back, is an error and left out; a run without snapshots has none.
func TestLossyPerFlow(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "meta.env", "timestamp=T\nlossy.conditions=25:1\nlossy.duration_s=10\nlossy.rounds=2\nlossy.ccs=cubic\nlossy.fec=\nlossy.transports=tcp udp kcp\nlossy.seed=4242\n")
	for _, mode := range []string{"direct", "tcp", "udp", "kcp"} {
		for k := 1; k <= 2; k++ {
			write(t, dir, "lossy-cubic-d25-l1-"+mode+"-tcp-up-1"+RoundSuffix(k)+".json", tcpJSON)
			write(t, dir, "lossy-cubic-d25-l1-"+mode+"-ping"+RoundSuffix(k)+".txt", pingTxt)
		}
	}
	write(t, dir, "lossy-cubic-d25-l1-wanemu.json", `{"directions":[{"rx":9000,"lost":90},{"rx":4000,"lost":40,"queue_full":500}]}`)
	snap := func(mode string, k int, when, json string) {
		write(t, dir, "lossy-cubic-d25-l1-"+mode+"-wanemu-"+when+RoundSuffix(k)+".json", json)
	}
	// udp: 1000 frames with 10 lost vm->gw and 500 with 5 gw->vm in round
	// 1, 1000/30 and 500/5 in round 2 (the counters are cumulative).
	snap("udp", 1, "before", `{"directions":[{"rx":100,"lost":1},{"rx":50,"lost":1}]}`)
	snap("udp", 1, "after", `{"directions":[{"rx":1100,"lost":11},{"rx":550,"lost":6}]}`)
	snap("udp", 2, "before", `{"directions":[{"rx":5000,"lost":50},{"rx":2000,"lost":20}]}`)
	snap("udp", 2, "after", `{"directions":[{"rx":6000,"lost":80},{"rx":2500,"lost":25}]}`)
	// kcp filled the queue: 300 and 200 overflow drops.
	snap("kcp", 1, "before", `{"directions":[{"rx":0},{"rx":0}]}`)
	snap("kcp", 1, "after", `{"directions":[{"rx":1000,"lost":10,"queue_full":300},{"rx":1000,"lost":10,"kernel_drops":200}]}`)
	// direct: round 1 lost its after snapshot, round 2 went back.
	snap("direct", 1, "before", `{"directions":[{"rx":0},{"rx":0}]}`)
	snap("direct", 2, "before", `{"directions":[{"rx":900},{"rx":900}]}`)
	snap("direct", 2, "after", `{"directions":[{"rx":10},{"rx":10}]}`)

	r := Build(dir)
	row := r.Lossy[0].Rows[0]
	udp, kcp := row.PerFlow["udp"], row.PerFlow["kcp"]
	if udp == nil || udp.Rounds != 2 || len(udp.LossPct) != 2 || *udp.LossPct[0] != 2 || *udp.LossPct[1] != 1 || udp.QueueDrops != 0 {
		t.Errorf("udp per flow = %+v, want 2%% / 1%% over 2 rounds, no drops", udp)
	}
	if kcp == nil || kcp.Rounds != 1 || *kcp.LossPct[0] != 1 || kcp.QueueDrops != 500 {
		t.Errorf("kcp per flow = %+v, want 1%%, 500 drops", kcp)
	}
	if !slices.Equal(udp.Frames, []uint64{2000, 1000}) || !slices.Equal(udp.Lost, []uint64{40, 10}) {
		t.Errorf("udp frames %v, lost %v: want [2000 1000], [40 10]", udp.Frames, udp.Lost)
	}
	// The condition's figures are the sum of its flows' (udp's and kcp's
	// here), not the emulator's counters at its end.
	if len(row.EmulatedLossPct) != 2 || *row.EmulatedLossPct[0] != 50.0/30 || *row.EmulatedLossPct[1] != 1 || *row.EmulatorDrops != 500 {
		t.Errorf("condition: loss %v, drops %v; want %v%% / 1%%, 500", row.EmulatedLossPct, *row.EmulatorDrops, 50.0/30)
	}
	if _, ok := row.PerFlow["tcp"]; ok {
		t.Errorf("tcp had no snapshots, got %+v", row.PerFlow["tcp"])
	}
	if _, ok := row.PerFlow["direct"]; ok {
		t.Errorf("direct had no good round, got %+v", row.PerFlow["direct"])
	}
	errs := strings.Join(r.Errors, "\n")
	for _, want := range []string{"lossy-cubic-d25-l1-direct-wanemu-after.json: missing", "lossy-cubic-d25-l1-direct-wanemu-after.r2.json: the emulator's counters went back"} {
		if !strings.Contains(errs, want) {
			t.Errorf("errors %q: want %q", errs, want)
		}
	}
	var buf bytes.Buffer
	PrintTable(&buf, r)
	out := buf.String()
	if !strings.Contains(out, "emulated loss per flow") || !strings.Contains(out, "2.00% / 1.00%") ||
		!strings.Contains(out, "1.00% / 1.00% (+500 overflow)") || !strings.Contains(out, "seed 4242") || r.Lossy[0].Seed != "4242" {
		t.Errorf("table:\n%s", out)
	}

	// A run from before the snapshots: no per-flow table, no error.
	for _, name := range []string{"udp-wanemu-before", "udp-wanemu-after", "udp-wanemu-before.r2", "udp-wanemu-after.r2", "kcp-wanemu-before", "kcp-wanemu-after",
		"direct-wanemu-before", "direct-wanemu-before.r2", "direct-wanemu-after.r2"} {
		if err := os.Remove(filepath.Join(dir, "lossy-cubic-d25-l1-"+name+".json")); err != nil {
			t.Fatal(err)
		}
	}
	r = Build(dir)
	buf.Reset()
	PrintTable(&buf, r)
	if r.Lossy[0].Rows[0].PerFlow != nil || strings.Contains(buf.String(), "per flow") || strings.Contains(strings.Join(r.Errors, "\n"), "wanemu") {
		t.Errorf("without snapshots: per flow %v, errors %v, table:\n%s", r.Lossy[0].Rows[0].PerFlow, r.Errors, buf.String())
	}
}

func tcpMbps(mbps, bytes float64) string {
	return strings.NewReplacer("8e9", strconv.FormatFloat(mbps*1e6, 'g', -1, 64), "5000000000", strconv.FormatFloat(bytes, 'g', -1, 64)).Replace(tcpJSON)
}

func TestRounds(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "meta.env", "timestamp=T\nrounds=3\nclk_tck=100\n"+
		"cpu.tcp-up-1.gtun=100\ncpu.tcp-up-1.gtund=100\ncpu.tcp-up-1.r2.gtun=100\ncpu.tcp-up-1.r2.gtund=100\ncpu.tcp-up-1.r3.gtun=100\ncpu.tcp-up-1.r3.gtund=100\n"+
		"rss.gtun_kb=1000\nrss.r2.gtun_kb=3000\nrss.r3.gtun_kb=2000\n")
	for k, m := range map[int][2]float64{1: {32000, 8000}, 2: {30000, 9000}, 3: {40000, 10000}} {
		write(t, dir, "direct-tcp-up-1"+RoundSuffix(k)+".json", strings.Replace(tcpDirectJSON, "32e9", strconv.FormatFloat(m[0]*1e6, 'g', -1, 64), 2))
		write(t, dir, "tunnel-tcp-up-1"+RoundSuffix(k)+".json", tcpMbps(m[1], 1e9))
		write(t, dir, "direct-ping"+RoundSuffix(k)+".txt", pingTxt)
		write(t, dir, "tunnel-ping"+RoundSuffix(k)+".txt", strings.Replace(pingTxt, "0.050/0.100/0.200", fmt.Sprintf("0.1/0.%d/0.%d", k+2, k+5), 1))
	}
	r := Build(dir)
	c := r.TCP[0]
	if r.Rounds != 3 || *c.DirectMbps != 32000 || *c.TunnelMbps != 9000 || *c.Ratio != 9000.0/32000 {
		t.Fatalf("rounds %d, tcp-up-1 = %+v", r.Rounds, c)
	}
	if *c.RatioMin != 0.25 || *c.RatioMax != 0.3 {
		t.Errorf("ratio range %v-%v, want 0.25-0.3", *c.RatioMin, *c.RatioMax)
	}
	// 3 s of CPU each for 3 GB in all
	if *c.TunnelBytes != 3e9 || *c.CPUPerGB["gtun"] != 1 || *c.CPUSeconds["gtund"] != 3 {
		t.Errorf("bytes %v, CPU %v s, %v s/GB", *c.TunnelBytes, *c.CPUSeconds["gtund"], *c.CPUPerGB["gtun"])
	}
	if *r.PeakRSSKB["gtun"] != 3000 || r.PeakRSSKB["gtund"] != nil {
		t.Errorf("peak rss = %v, %v", *r.PeakRSSKB["gtun"], r.PeakRSSKB["gtund"])
	}
	if *r.RTT.TunnelAvg != 0.4 || *r.RTT.TunnelMax != 0.8 || *r.RTT.DirectAvg != 0.1 {
		t.Errorf("rtt = %+v", r.RTT)
	}
	var buf bytes.Buffer
	PrintTable(&buf, r)
	for _, want := range []string{"3 rounds (medians", "28.1%", "25.0%-30.0%"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}

	// One round without gtund's ticks: no CPU figure for gtund rather
	// than two rounds' CPU over three rounds' bytes.
	write(t, dir, "meta.env", "timestamp=T\nrounds=3\nclk_tck=100\n"+
		"cpu.tcp-up-1.gtun=100\ncpu.tcp-up-1.gtund=100\ncpu.tcp-up-1.r2.gtun=100\ncpu.tcp-up-1.r2.gtund=100\ncpu.tcp-up-1.r3.gtun=100\n")
	r = Build(dir)
	if c := r.TCP[0]; c.CPUPerGB["gtund"] != nil || c.CPUSeconds["gtund"] != nil || *c.CPUPerGB["gtun"] != 1 {
		t.Errorf("with gtund's round-3 ticks missing: CPU %v, per GB %v", c.CPUSeconds, c.CPUPerGB)
	}
}

// A tunnel measured beside gtun for reference (wireguard-go) is labelled
// by its own name, client and server, not as gtun and gtund.
func TestReferenceTunnelLabels(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "meta.env", "timestamp=T\ntransport=wireguard-go\nclk_tck=100\ncpu.tcp-up-1.gtun=250\ncpu.tcp-up-1.gtund=100\nrss.gtun_kb=20480\nrss.gtund_kb=10240\n")
	write(t, dir, "direct-tcp-up-1.json", tcpDirectJSON)
	write(t, dir, "tunnel-tcp-up-1.json", tcpJSON)
	var buf bytes.Buffer
	PrintTable(&buf, Build(dir))
	for _, want := range []string{"wireguard-go client CPU s/GB", "wireguard-go server CPU s/GB", "peak RSS (VmHWM): wireguard-go client 20.0 MiB, wireguard-go server 10.0 MiB"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	if strings.Contains(buf.String(), "gtund") {
		t.Errorf("table names gtund for wireguard-go:\n%s", buf.String())
	}
}

// A round missing either flow is left out of the range; with fewer than
// two rounds left there is no range.
func TestRoundRange(t *testing.T) {
	v := func(x float64) *float64 { return &x }
	lo, hi := roundRange([]*float64{v(1), nil, v(3)}, []*float64{v(2), v(2), v(2)})
	if lo == nil || hi == nil || *lo != 0.5 || *hi != 1.5 {
		t.Errorf("range %v-%v, want 0.5-1.5", lo, hi)
	}
	if lo, hi := roundRange([]*float64{v(1), nil}, []*float64{v(2), v(2)}); lo != nil || hi != nil {
		t.Errorf("one round: range %v-%v, want none", lo, hi)
	}
	if lo, hi := roundRange([]*float64{v(1), v(1)}, []*float64{v(2), v(0)}); lo != nil || hi != nil {
		t.Errorf("a zero flow with no tunnel: range %v-%v, want none", lo, hi)
	}
}
