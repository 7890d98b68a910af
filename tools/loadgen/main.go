// Command loadgen opens many concurrent authenticated gtun sessions to one
// gtund, built from the protocol packages (no TUN on the client side), and
// reports how fast they are set up and whether they all stay up.
//
//	loadgen genkeys -n 1000 -priv keys.txt -peers peers.toml
//	loadgen -server 198.51.100.2:9623 -server-key B64 -keys keys.txt \
//	        -n 1000 -concurrency 50 -idle-first 10s -hold 60s \
//	        -traffic-dst 10.244.1.20 -watch-pid PID -out results.json
//
// Phases: dial (bounded concurrency; every session runs as soon as it is
// set up, so keepalives flow), idle (no traffic: the server's memory per
// idle session is sampled at its end when -watch-pid is given), hold (each
// session sends one small UDP packet per second to -traffic-dst:9). Every
// session must still be running at the end of the hold.
//
// Exit status: 0 when all N sessions were set up and stayed up, 1 otherwise
// (the JSON is written either way), 2 for bad usage.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/transport"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "genkeys":
			os.Exit(genkeysMain(os.Args[2:], os.Stderr))
		case "report":
			os.Exit(reportMain(os.Args[2:], os.Stdout, os.Stderr))
		case "memserver":
			os.Exit(memserverMain(os.Args[2:], os.Stdout, os.Stderr))
		case "profgtund":
			os.Exit(profgtundMain(os.Args[2:], os.Stderr))
		}
	}
	os.Exit(runMain(os.Args[1:], os.Stderr))
}

// ---- genkeys -------------------------------------------------------------

func genkeysMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen genkeys", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 1000, "number of key pairs")
	privPath := fs.String("priv", "", "write the private keys here (base64, one per line, mode 0600)")
	peersPath := fs.String("peers", "", "write gtund [[peer]] tables here (TOML)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *n <= 0 || *privPath == "" || *peersPath == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: loadgen genkeys -n N -priv FILE -peers FILE.toml")
		return 2
	}
	keys := make([]secure.PrivateKey, *n)
	for i := range keys {
		k, err := secure.GeneratePrivateKey()
		if err != nil {
			fmt.Fprintf(stderr, "loadgen genkeys: %v\n", err)
			return 1
		}
		keys[i] = k
	}
	if err := writeFile(*privPath, 0o600, func(w io.Writer) error { return writeKeys(w, keys) }); err != nil {
		fmt.Fprintf(stderr, "loadgen genkeys: %v\n", err)
		return 1
	}
	if err := writeFile(*peersPath, 0o644, func(w io.Writer) error { return writePeers(w, keys) }); err != nil {
		fmt.Fprintf(stderr, "loadgen genkeys: %v\n", err)
		return 1
	}
	return 0
}

func writeFile(path string, mode os.FileMode, fill func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	err = fill(bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeKeys writes one base64 private key per line.
func writeKeys(w io.Writer, keys []secure.PrivateKey) error {
	for _, k := range keys {
		if _, err := fmt.Fprintln(w, k.Encode()); err != nil {
			return err
		}
	}
	return nil
}

// peerName is the [[peer]] name of the i-th key (0-based).
func peerName(i int) string { return fmt.Sprintf("load-%04d", i) }

// writePeers writes a [[peer]] table per key, in key file order.
func writePeers(w io.Writer, keys []secure.PrivateKey) error {
	for i, k := range keys {
		if _, err := fmt.Fprintf(w, "[[peer]]\nname = %q\npublic_key = %q\n\n", peerName(i), k.Public().String()); err != nil {
			return err
		}
	}
	return nil
}

// parseKeys reads private keys, one base64 key per line; blank lines and
// lines starting with # are skipped. Errors name the line.
func parseKeys(r io.Reader) ([]secure.PrivateKey, error) {
	var keys []secure.PrivateKey
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, err := secure.ParsePrivateKey(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return keys, nil
}

func loadKeys(path string) ([]secure.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	keys, err := parseKeys(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// ---- frames --------------------------------------------------------------

const (
	ipv4HeaderLen = 20
	udpHeaderLen  = 8
	// trafficPort is the destination port of the traffic: discard (RFC 863).
	trafficPort = 9
	// sendGroup sessions send back to back before the pacing sleeps.
	sendGroup = 25
)

// buildUDPFrame writes a tunnel frame into b: a zero virtio-net header
// (a plain packet, checksums complete) and an IPv4/UDP packet from src:sport
// to dst:dport carrying payload, with correct IP and UDP checksums. It
// returns the frame length, or 0 if b is too small or an address is not IPv4.
func buildUDPFrame(b []byte, src, dst netip.Addr, sport, dport uint16, payload []byte) int {
	if !src.Is4() || !dst.Is4() {
		return 0
	}
	ipLen := ipv4HeaderLen + udpHeaderLen + len(payload)
	n := packet.VnetHdrLen + ipLen
	if n > len(b) || ipLen > packet.MaxIP {
		return 0
	}
	clear(b[:packet.VnetHdrLen])
	p := b[packet.VnetHdrLen:n]
	p[0] = 0x45 // IPv4, 5-word header
	p[1] = 0
	binary.BigEndian.PutUint16(p[2:], uint16(ipLen))
	binary.BigEndian.PutUint16(p[4:], 0)      // id
	binary.BigEndian.PutUint16(p[6:], 0x4000) // don't fragment
	p[8] = 64                                 // TTL
	p[9] = 17                                 // UDP
	binary.BigEndian.PutUint16(p[10:], 0)
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[10:], ^packet.Fold(packet.Sum(p[:ipv4HeaderLen], 0)))

	u := p[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(udpHeaderLen+len(payload)))
	binary.BigEndian.PutUint16(u[6:], 0)
	copy(u[udpHeaderLen:], payload)
	// pseudo-header: addresses, protocol, UDP length
	acc := packet.Sum(p[12:20], 0) + 17 + uint32(udpHeaderLen+len(payload))
	c := ^packet.Fold(packet.Sum(u, acc))
	if c == 0 {
		c = 0xffff // 0 means "no checksum" in UDP over IPv4
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return n
}

// ---- load run ------------------------------------------------------------

type options struct {
	server      string
	serverKey   secure.PublicKey
	keys        []secure.PrivateKey
	n           int
	concurrency int
	idleFirst   time.Duration
	hold        time.Duration
	trafficDst  netip.Addr // invalid: no traffic
	watchPID    int
	dialTimeout time.Duration
	atIdle      string // shell command run at the end of the idle phase
	atEnd       string // shell command run at the end of the hold, sessions still up
}

// conn is one load session.
type conn struct {
	idx   int
	sess  *session.Session
	addr  netip.Addr
	rx    atomic.Uint64
	ended chan struct{} // closed when Run returned
	err   error         // Run's result, valid once ended is closed
}

// Result is the JSON report.
type Result struct {
	Server             string         `json:"server"`
	N                  int            `json:"n"`
	Concurrency        int            `json:"concurrency"`
	Established        int            `json:"established"`
	Failed             int            `json:"failed"`
	FailedErrors       []string       `json:"failed_errors,omitempty"`
	DialPhaseS         float64        `json:"dial_phase_s"`
	HandshakesPerS     float64        `json:"handshakes_per_s"`
	SetupMS            Latency        `json:"setup_ms"`
	IdleS              float64        `json:"idle_s"`
	HoldS              float64        `json:"hold_s"`
	SessionsEnded      int            `json:"sessions_ended"`
	EndedErrors        []string       `json:"ended_errors,omitempty"`
	SessionsAliveAtEnd int            `json:"sessions_alive_at_end"`
	AllStayedUp        bool           `json:"all_stayed_up"`
	TrafficDst         string         `json:"traffic_dst,omitempty"`
	PacketsSent        uint64         `json:"packets_sent"`
	PacketsDropped     uint64         `json:"packets_dropped"`
	PacketsReceived    uint64         `json:"packets_received"`
	DurationS          float64        `json:"duration_s"`
	WatchPID           int            `json:"watch_pid,omitempty"`
	WatchRSS           map[string]Mem `json:"watch_rss,omitempty"` // the watched process at each phase
	SelfRSSKiB         uint64         `json:"self_rss_kib"`        // loadgen itself at the end of the idle phase
	HookErrors         []string       `json:"hook_errors,omitempty"`
}

// Latency summarises setup times in milliseconds.
type Latency struct {
	Min float64 `json:"min"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Mem is a /proc/PID/status snapshot.
type Mem struct {
	RSSKiB  uint64 `json:"rss_kib"`
	HWMKiB  uint64 `json:"hwm_kib"`
	Threads int    `json:"threads"`
}

func runMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "", "gtund address HOST:PORT (tcp)")
	serverKey := fs.String("server-key", "", "gtund's public key (base64)")
	keysPath := fs.String("keys", "", "file of client private keys, one per line (loadgen genkeys)")
	n := fs.Int("n", 1000, "sessions to open (the first N keys of -keys)")
	conc := fs.Int("concurrency", 50, "handshakes in flight at once")
	idle := fs.Duration("idle-first", 0, "after setup, keep the sessions idle (no traffic) this long before the hold")
	hold := fs.Duration("hold", 60*time.Second, "keep all sessions up, sending traffic, this long")
	dst := fs.String("traffic-dst", "", "send one UDP packet per second per session to this IPv4 address, port 9 (empty: no traffic)")
	out := fs.String("out", "", "write the JSON report here (default stdout)")
	watch := fs.Int("watch-pid", 0, "sample this process's VmRSS/VmHWM at each phase (gtund)")
	dialTimeout := fs.Duration("dial-timeout", 20*time.Second, "bound on one session's setup")
	atIdle := fs.String("at-idle", "", "shell command to run at the end of the idle phase (before any traffic)")
	atEnd := fs.String("at-end", "", "shell command to run at the end of the hold, before the sessions are closed")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "loadgen: %s\nusage: loadgen -server HOST:PORT -server-key B64 -keys FILE [-n N] [-concurrency C] [-idle-first D] [-hold D] [-traffic-dst IP] [-watch-pid PID] [-out FILE]\n       loadgen genkeys -n N -priv FILE -peers FILE.toml\n", msg)
		return 2
	}
	if fs.NArg() != 0 {
		return usage("unexpected arguments")
	}
	if *server == "" || *serverKey == "" || *keysPath == "" {
		return usage("-server, -server-key and -keys are required")
	}
	if *n <= 0 || *conc <= 0 || *hold < 0 || *idle < 0 {
		return usage("-n and -concurrency must be positive, durations not negative")
	}
	o := options{server: *server, n: *n, concurrency: *conc, idleFirst: *idle, hold: *hold, watchPID: *watch, dialTimeout: *dialTimeout,
		atIdle: *atIdle, atEnd: *atEnd}
	var err error
	if o.serverKey, err = secure.ParsePublicKey(*serverKey); err != nil {
		return usage("-server-key: " + err.Error())
	}
	if *dst != "" {
		if o.trafficDst, err = netip.ParseAddr(*dst); err != nil || !o.trafficDst.Is4() {
			return usage("-traffic-dst must be an IPv4 address")
		}
	}
	if o.keys, err = loadKeys(*keysPath); err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 2
	}
	if len(o.keys) < o.n {
		return usage(fmt.Sprintf("%s holds %d keys, -n is %d", *keysPath, len(o.keys), o.n))
	}
	res := run(o, stderr)
	b, _ := json.MarshalIndent(res, "", "  ")
	b = append(b, '\n')
	if *out == "" {
		os.Stdout.Write(b)
	} else if err := os.WriteFile(*out, b, 0o644); err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
	if res.Established != res.N || !res.AllStayedUp {
		return 1
	}
	return 0
}

// errorSet keeps the first few distinct error texts and counts all.
type errorSet struct {
	mu    sync.Mutex
	first []string
	count map[string]int
}

const maxErrors = 10

func (e *errorSet) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.count == nil {
		e.count = map[string]int{}
	}
	s := err.Error()
	if _, seen := e.count[s]; !seen && len(e.first) < maxErrors {
		e.first = append(e.first, s)
	}
	e.count[s]++
}

func (e *errorSet) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, len(e.first))
	for i, s := range e.first {
		out[i] = fmt.Sprintf("%s (x%d)", s, e.count[s])
	}
	return out
}

func run(o options, logw io.Writer) *Result {
	logf := func(format string, args ...any) {
		fmt.Fprintf(logw, "loadgen: "+format+"\n", args...)
	}
	res := &Result{Server: o.server, N: o.n, Concurrency: o.concurrency, WatchPID: o.watchPID}
	if o.trafficDst.IsValid() {
		res.TrafficDst = o.trafficDst.String()
	}
	if o.watchPID > 0 {
		res.WatchRSS = map[string]Mem{}
	}
	sample := func(phase string) {
		if o.watchPID <= 0 {
			return
		}
		m, err := readMem(o.watchPID)
		if err != nil {
			logf("watch pid %d: %v", o.watchPID, err)
			return
		}
		res.WatchRSS[phase] = m
		logf("pid %d at %s: VmRSS %d KiB, VmHWM %d KiB, %d threads", o.watchPID, phase, m.RSSKiB, m.HWMKiB, m.Threads)
	}
	hook := func(name, cmd string) {
		if cmd == "" {
			return
		}
		if err := runHook(cmd, logw); err != nil {
			logf("%s hook: %v", name, err)
			res.HookErrors = append(res.HookErrors, name+": "+err.Error())
		}
	}
	start := time.Now()
	sample("before")

	runCtx, stopRuns := context.WithCancel(context.Background())
	defer stopRuns()
	var runs sync.WaitGroup
	var dialErrs, endErrs errorSet
	conns := make([]*conn, o.n)
	lat := make([]time.Duration, o.n)
	var established, failed atomic.Int64

	// Dial phase: workers take session indexes in order.
	logf("dialing %d sessions to %s, %d at a time", o.n, o.server, o.concurrency)
	next := make(chan int)
	var workers sync.WaitGroup
	for w := 0; w < min(o.concurrency, o.n); w++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for i := range next {
				t0 := time.Now()
				c, err := dialOne(o, i)
				if err != nil {
					failed.Add(1)
					dialErrs.add(err)
					continue
				}
				lat[i] = time.Since(t0)
				conns[i] = c
				established.Add(1)
				runs.Add(1)
				go func() {
					defer runs.Done()
					err := c.sess.Run(runCtx, session.Handlers{Packet: func([]byte) { c.rx.Add(1) }})
					if err == nil && runCtx.Err() == nil {
						err = errors.New("session ended without an error")
					}
					c.err = err
					close(c.ended)
				}()
			}
		}()
	}
	progress := time.NewTicker(2 * time.Second)
	dialStart := time.Now()
feed:
	for i := 0; i < o.n; i++ {
		for {
			select {
			case next <- i:
				continue feed
			case <-progress.C:
				logf("  %d established, %d failed", established.Load(), failed.Load())
			}
		}
	}
	close(next)
	workers.Wait()
	progress.Stop()
	dialPhase := time.Since(dialStart)
	res.Established, res.Failed = int(established.Load()), int(failed.Load())
	res.FailedErrors = dialErrs.list()
	res.DialPhaseS = round(dialPhase.Seconds(), 3)
	if dialPhase > 0 {
		res.HandshakesPerS = round(float64(res.Established)/dialPhase.Seconds(), 1)
	}
	var ok []time.Duration
	for i, c := range conns {
		if c != nil {
			ok = append(ok, lat[i])
		}
	}
	res.SetupMS = latency(ok)
	logf("dial phase: %d established, %d failed in %.2fs (%.1f/s); setup p50 %.1f ms, p99 %.1f ms",
		res.Established, res.Failed, dialPhase.Seconds(), res.HandshakesPerS, res.SetupMS.P50, res.SetupMS.P99)
	for _, e := range res.FailedErrors {
		logf("  dial error: %s", e)
	}
	sample("established")

	live := make([]*conn, 0, res.Established)
	for _, c := range conns {
		if c != nil {
			live = append(live, c)
		}
	}
	countEnded := func() int {
		n := 0
		for _, c := range live {
			select {
			case <-c.ended:
				n++
			default:
			}
		}
		return n
	}

	// Idle phase: nothing but keepalives.
	if o.idleFirst > 0 {
		logf("idle for %s (keepalives only)", o.idleFirst)
		t0 := time.Now()
		time.Sleep(o.idleFirst)
		res.IdleS = round(time.Since(t0).Seconds(), 3)
		sample("idle")
		if m, err := readMem(os.Getpid()); err == nil {
			res.SelfRSSKiB = m.RSSKiB
		}
		logf("after idle: %d of %d sessions ended", countEnded(), len(live))
	}
	hook("at-idle", o.atIdle)

	// Hold phase: one packet per session per second.
	logf("hold for %s, traffic to %v", o.hold, res.TrafficDst)
	holdStart := time.Now()
	deadline := holdStart.Add(o.hold)
	var sent, dropped uint64
	payload := make([]byte, 0, 64)
	tick := time.NewTicker(time.Second)
	lastLog := holdStart
	for now := time.Now(); now.Before(deadline); now = <-tick.C {
		if o.trafficDst.IsValid() {
			// Spread the second's packets over ~half a second rather than one
			// burst: groups of sendGroup sessions, paced against the clock.
			groups := (len(live) + sendGroup - 1) / sendGroup
			for i, c := range live {
				if i%sendGroup == 0 && i > 0 {
					if d := time.Until(now.Add(time.Duration(i/sendGroup) * 500 * time.Millisecond / time.Duration(groups))); d > 0 {
						time.Sleep(d)
					}
				}
				select {
				case <-c.ended:
					continue
				default:
				}
				b := packet.Get()
				payload = fmt.Appendf(payload[:0], "gtun loadgen %d %d", c.idx, sent)
				b.N = buildUDPFrame(b.B, c.addr, o.trafficDst, uint16(40000+c.idx%20000), trafficPort, payload)
				if c.sess.Enqueue(b) == nil {
					sent++
				} else {
					dropped++
				}
			}
		}
		if now.Sub(lastLog) >= 10*time.Second {
			lastLog = now
			logf("  hold %2.0fs: %d of %d sessions ended, %d packets sent", now.Sub(holdStart).Seconds(), countEnded(), len(live), sent)
		}
	}
	tick.Stop()
	res.HoldS = round(time.Since(holdStart).Seconds(), 3)
	res.PacketsSent, res.PacketsDropped = sent, dropped

	// Verdict before anything is closed.
	ended := 0
	for _, c := range live {
		select {
		case <-c.ended:
			ended++
			endErrs.add(fmt.Errorf("%s: %w", peerName(c.idx), c.err))
		default:
		}
	}
	res.SessionsEnded = ended
	res.EndedErrors = endErrs.list()
	res.SessionsAliveAtEnd = len(live) - ended
	res.AllStayedUp = res.Established == o.n && ended == 0
	sample("end")
	hook("at-end", o.atEnd)
	for _, c := range live {
		res.PacketsReceived += c.rx.Load()
	}
	logf("end: %d of %d sessions alive, %d packets sent (%d dropped), %d received", res.SessionsAliveAtEnd, o.n, sent, dropped, res.PacketsReceived)

	stopRuns()
	runs.Wait()
	res.DurationS = round(time.Since(start).Seconds(), 3)
	return res
}

// runHook runs cmd with sh -c, its output going to w, for at most 30 s.
func runHook(cmd string, w io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "sh", "-c", cmd)
	c.Stdout, c.Stderr = w, w
	return c.Run()
}

// dialOne sets up session i: transport, Noise handshake, hello/config.
func dialOne(o options, i int) (*conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.dialTimeout)
	defer cancel()
	raw, err := transport.DialTCP(ctx, o.server)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	sc, err := secure.Client(raw, secure.ClientConfig{Private: o.keys[i], ServerKey: o.serverKey})
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	hello := &session.Msg{Type: session.TypeHello, Version: secure.ProtocolVersion, Name: peerName(i)}
	sess, cfg, err := session.Dial(ctx, sc, hello, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	p, err := netip.ParsePrefix(cfg.Address)
	if err != nil || !p.Addr().Is4() {
		sess.Close()
		return nil, fmt.Errorf("config: tunnel address %q is not an IPv4 prefix", cfg.Address)
	}
	return &conn{idx: i, sess: sess, addr: p.Addr(), ended: make(chan struct{})}, nil
}

func latency(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return round(float64(d)/1e6, 2) }
	return Latency{Min: ms(s[0]), P50: ms(percentile(s, 50)), P90: ms(percentile(s, 90)), P99: ms(percentile(s, 99)), Max: ms(s[len(s)-1])}
}

// percentile of sorted s by the nearest-rank method.
func percentile(s []time.Duration, p float64) time.Duration {
	r := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(r, 1), len(s))-1]
}

func round(v float64, digits int) float64 {
	m := math.Pow(10, float64(digits))
	return math.Round(v*m) / m
}

// readMem reads VmRSS, VmHWM and Threads of a process.
func readMem(pid int) (Mem, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Mem{}, err
	}
	return parseStatus(string(b)), nil
}

func parseStatus(s string) Mem {
	var m Mem
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseUint(f[0], 10, 64)
		switch k {
		case "VmRSS":
			m.RSSKiB = n
		case "VmHWM":
			m.HWMKiB = n
		case "Threads":
			m.Threads = int(n)
		}
	}
	return m
}
