package integration

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/guard"
	"github.com/gtun/gtun/pkg/secure"
)

// attacker is the flood's source: a second address on vm's wan link, so
// that the legitimate gtun on vm (198.51.100.1) is another source.
const attacker = "198.51.100.9"

// hsTimeout is the handshake_timeout of the hostile tests' gtund.
const hsTimeout = 2 * time.Second

// hostileEnv is a topology whose gtund listens on tcp and kcp with a short
// handshake timeout and the default admission limits, with one known
// client key (for the legitimate gtun) and the attacker's address on vm.
type hostileEnv struct {
	*env
	srv        *testnet.Proc
	clientKey  string
	clientPriv string
}

func newHostileEnv(t *testing.T) *hostileEnv { return newHostileEnvWith(t, "", nil) }

// newHostileEnvWith is newHostileEnv with more [server] keys (TOML lines)
// and the peers more makes.
func newHostileEnvWith(t *testing.T, serverKeys string, more func(e *env) []peer) *hostileEnv {
	t.Helper()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	peers := []peer{{name: "vm", pub: cpub}}
	if more != nil {
		peers = append(peers, more(e)...)
	}
	cfg := e.serverConfig(t, peers...)
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(b), `transports = ["tcp"]`, `transports = ["tcp", "kcp"]`, 1)
	src = strings.Replace(src, "keepalive = \"1s\"\n", fmt.Sprintf("keepalive = \"1s\"\nhandshake_timeout = %q\n%s", hsTimeout, serverKeys), 1)
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	e.tp.MustExec(t, "vm", "ip", "addr", "add", attacker+"/24", "dev", "wan0")
	priv, err := os.ReadFile(ckey)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileEnv{env: e, clientKey: ckey, clientPriv: strings.TrimSpace(string(priv))}
	h.srv = e.startServer(t, cfg)
	return h
}

// inVM runs f on a thread in vm's network namespace: sockets f creates
// live there.
func inVM(t *testing.T, e *env, f func()) {
	t.Helper()
	inNS(t, e.tp.NS("vm"), f)
}

var attackerDialer = net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attacker)}, Timeout: 3 * time.Second}

// memory is gtund's resident set now and at its peak, in KiB.
func memory(t *testing.T, p *testnet.Proc) (rss, hwm int) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		t.Fatalf("gtund gone? %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

// maxRSS bounds gtund's peak resident memory under every hostile test
// (it idles at ~15 MiB; generous for a loaded machine and the race detector's absence).
const maxRSS = 100 << 10 // KiB

// waitNoPending waits until gtund has no handshake in progress: every
// unauthenticated connection closed or refused.
func (h *hostileEnv) waitNoPending(t *testing.T, within time.Duration) {
	t.Helper()
	testnet.Eventually(t, within, func() error {
		if st := gtundStatus(t, h.env); st.Handshakes.Pending != 0 {
			return fmt.Errorf("%d handshakes still pending", st.Handshakes.Pending)
		}
		return nil
	})
}

func (h *hostileEnv) checkAlive(t *testing.T, what string) {
	t.Helper()
	if h.srv.Exited() {
		t.Fatalf("gtund died under %s:\n%s", what, h.srv.LogTail(30))
	}
	rss, hwm := memory(t, h.srv)
	t.Logf("after %s: gtund VmRSS %d KiB, VmHWM %d KiB", what, rss, hwm)
	if hwm > maxRSS {
		t.Errorf("gtund peaked at %d KiB under %s, bound %d KiB", hwm, what, maxRSS)
	}
}

// connectLegit starts the legitimate gtun and returns how long it took from
// its start until gtund's session was up, failing after within.
func (h *hostileEnv) connectLegit(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	cli := h.startClient(t, "vm", "vm", h.clientConfig(t, "vm", h.clientKey, h.serverPub))
	var took time.Duration
	testnet.Eventually(t, within, func() error {
		if cli.Exited() {
			t.Fatalf("gtun exited:\n%s", cli.LogTail(20))
		}
		var st client.Status
		if err := tryStatus(bins.gtun, h.clientSocket("vm"), &st); err != nil {
			return err
		}
		if s := st.Servers[0]; s.State != "connected" {
			return fmt.Errorf("gtun %s", s.State)
		} else {
			took = s.Since.Sub(start)
		}
		return nil
	})
	return took
}

// noKeysLogged checks that no private key, and no full public key of a
// client, appears in either daemon's log.
func (h *hostileEnv) noKeysLogged(t *testing.T) {
	t.Helper()
	spriv, err := os.ReadFile(h.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := filepath.Glob(filepath.Join(h.dir, "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		for name, secret := range map[string]string{"server private key": strings.TrimSpace(string(spriv)), "client private key": h.clientPriv} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s appears in %s", name, l)
			}
		}
	}
}

// Random bytes and impossible length prefixes on the TCP port, random
// datagrams on the kcp (UDP) port: every TCP connection gets silence (no
// byte back, closed at the handshake timeout, as a connection that says
// nothing is), every datagram is dropped unopened and counted, gtund keeps
// its memory and its handshake slots, and a legitimate client connects
// afterwards.
func TestHostileGarbage(t *testing.T) {
	h := newHostileEnv(t)
	addr := gwWAN + ":" + port
	type probe struct {
		name string
		data []byte
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	probes := []probe{
		{"length 0xffff", []byte{0xff, 0xff, 1, 2, 3}},
		{"length 0", []byte{0, 0}},
		{"length 513", append([]byte{2, 1}, random(513)...)},
		{"length 4 GiB as a record", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"random 96 bytes behind a valid length", append([]byte{0, 96}, random(96)...)},
	}
	for i := range 20 {
		probes = append(probes, probe{fmt.Sprintf("random %d", i), random(1 + i*3000)})
	}
	var conns []net.Conn
	var opened []time.Time
	inVM(t, h.env, func() {
		for _, p := range probes {
			c, err := attackerDialer.Dial("tcp", addr)
			if err != nil {
				t.Errorf("%s: dial: %v", p.name, err)
				continue
			}
			conns = append(conns, c)
			opened = append(opened, time.Now())
		}
	})
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			if _, err := c.Write(probes[i].data); err != nil { // gtund reads all it is sent
				t.Errorf("%s: write: %v", probes[i].name, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(hsTimeout + 5*time.Second))
			n, err := io.Copy(io.Discard, c)
			took := time.Since(opened[i])
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				t.Errorf("%s: still open after %v", probes[i].name, took)
			case err != nil:
				t.Errorf("%s: %v (a reset, not the close a silent connection gets)", probes[i].name, err)
			case took < hsTimeout-100*time.Millisecond:
				t.Errorf("%s: closed after %v, before the handshake timeout (%v): a refusal told apart from silence", probes[i].name, took, hsTimeout)
			}
			if n > 0 {
				t.Errorf("%s: gtund answered %d bytes", probes[i].name, n)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d garbage TCP connections: no byte back, all closed by gtund at the handshake timeout (%v), the last %v after they opened", len(conns), hsTimeout, time.Since(start).Round(time.Millisecond))

	// UDP: 20,000 random datagrams to kcp's port from 500 source ports.
	// None is a datagram gtund takes: no state, no reply.
	kernelDrops := udpReceiveErrors(t, h.env)
	var sent int
	inVM(t, h.env, func() {
		for range 500 {
			c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(attacker)}, &net.UDPAddr{IP: net.ParseIP(gwWAN), Port: 9623})
			if err != nil {
				t.Errorf("udp: %v", err)
				return
			}
			for i := range 40 {
				if _, err := c.Write(random(1 + (i*37)%1400)); err == nil {
					sent++
				}
			}
			c.Close()
		}
	})
	t.Logf("sent %d random UDP datagrams", sent)
	h.waitNoPending(t, hsTimeout+10*time.Second)
	st := gtundStatus(t, h.env)
	t.Logf("handshake failures: %v", st.HandshakeFailures)
	if st.HandshakeFailures["malformed"] < 3 {
		t.Errorf("malformed handshakes counted: %v", st.HandshakeFailures)
	}
	var dropped uint64
	for _, n := range st.Datagrams.Dropped {
		dropped += n
	}
	kernelDrops = udpReceiveErrors(t, h.env) - kernelDrops // a full socket buffer, before gtund saw them
	t.Logf("datagrams: %+v; dropped by gw's kernel: %d", st.Datagrams, kernelDrops)
	if dropped+kernelDrops != uint64(sent) || st.Datagrams.Sessions != 0 {
		t.Errorf("%d random datagrams sent, %d counted as dropped by gtund and %d by the kernel, %d datagram sessions", sent, dropped, kernelDrops, st.Datagrams.Sessions)
	}
	h.checkAlive(t, "garbage")
	took := h.connectLegit(t, 15*time.Second)
	t.Logf("legitimate gtun connected %v after its start", took.Round(time.Millisecond))
	h.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
	h.noKeysLogged(t)
}

// 200 connections from one source that send one byte and wait (slowloris):
// only max_handshakes_per_source of them get a handshake slot, the rest
// are closed at once, the held ones are closed by the handshake timeout,
// and a client from another address connects meanwhile.
func TestSlowlorisHalfOpen(t *testing.T) {
	h := newHostileEnv(t)
	const n = 200
	conns := make([]net.Conn, 0, n)
	inVM(t, h.env, func() {
		for range n {
			c, err := attackerDialer.Dial("tcp", gwWAN+":"+port)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			conns = append(conns, c)
		}
	})
	opened := time.Now()
	for _, c := range conns {
		_, _ = c.Write([]byte{0}) // half a length prefix, then silence
	}
	testnet.Eventually(t, 5*time.Second, func() error {
		st := gtundStatus(t, h.env)
		if st.Handshakes.Pending > guard.DefaultMaxPendingPerSource {
			t.Fatalf("%d handshakes pending from one source, cap %d", st.Handshakes.Pending, guard.DefaultMaxPendingPerSource)
		}
		if got := st.HandshakeFailures[guard.TooManyPendingSource]; got < n-guard.DefaultMaxPendingPerSource {
			return fmt.Errorf("%d refused for too many pending from the source, want >= %d", got, n-guard.DefaultMaxPendingPerSource)
		}
		return nil
	})
	took := h.connectLegit(t, 15*time.Second)
	t.Logf("legitimate gtun connected %v after its start, with %d half-open connections", took.Round(time.Millisecond), n)

	var wg sync.WaitGroup
	var closedLast atomic.Int64
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetReadDeadline(opened.Add(hsTimeout + 5*time.Second))
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("a half-open connection was still open %v after it opened (handshake_timeout %v)", time.Since(opened), hsTimeout)
				return
			}
			if d := int64(time.Since(opened)); d > closedLast.Load() {
				closedLast.Store(d)
			}
		}()
	}
	wg.Wait()
	t.Logf("all %d half-open connections closed by gtund, the last %v after opening (handshake_timeout %v)", n, time.Duration(closedLast.Load()).Round(time.Millisecond), hsTimeout)
	h.waitNoPending(t, 5*time.Second)
	if got := gtundStatus(t, h.env).HandshakeFailures["timeout"]; got < 1 {
		t.Errorf("no handshake timeouts counted")
	}
	h.checkAlive(t, "slowloris")
	h.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
}

// A handshake flood: 1,000 attempts a second from one source, each a
// well-formed Noise first message from a key gtund does not know. The
// per-source rate limit refuses most before any crypto; gtund stays small
// and alive, logs a few lines with counts instead of one per attempt, and a
// legitimate client from another address connects during the flood.
func TestHandshakeFlood(t *testing.T) {
	h := newHostileEnv(t)
	serverPub, err := secure.ParsePublicKey(h.serverPub)
	if err != nil {
		t.Fatal(err)
	}
	var inits [][]byte
	for range 16 {
		inits = append(inits, noiseInit(t, serverPub))
	}
	var dialFails atomic.Int64
	fl := startFlood(t, h, 8, 1000, func(w, i int) bool {
		c, err := attackerDialer.Dial("tcp", gwWAN+":"+port)
		if err != nil {
			dialFails.Add(1)
			return true // an attempt all the same
		}
		_, _ = c.Write(inits[(w+i)%len(inits)])
		c.Close()
		return true
	})
	time.Sleep(2 * time.Second)
	h.checkAlive(t, "2 s of handshake flood")
	took := h.connectLegit(t, 15*time.Second)
	t.Logf("legitimate gtun connected %v after its start, during the flood", took.Round(time.Millisecond))
	attempts, elapsed := fl.stopAfter(8 * time.Second)
	t.Logf("flood: %d attempts in %v (%.0f/s), %d dials failed", attempts, elapsed.Round(time.Millisecond),
		float64(attempts)/elapsed.Seconds(), dialFails.Load())
	h.checkAlive(t, "handshake flood")

	st := gtundStatus(t, h.env)
	t.Logf("handshake failures: %v", st.HandshakeFailures)
	limited := st.HandshakeFailures[guard.RateLimited]
	admitted := st.HandshakeFailures["unknown_peer"] + st.HandshakeFailures["duplicate"] + st.HandshakeFailures["io"] + st.HandshakeFailures["timeout"]
	if limited < uint64(attempts/2) {
		t.Errorf("only %d of %d attempts rate limited", limited, attempts)
	}
	// At most the burst plus the rate over the flood (plus slack) got as far as Noise.
	if bound := uint64(guard.DefaultBurst + guard.DefaultRate*int(elapsed.Seconds()+2)); admitted > bound {
		t.Errorf("%d flood handshakes got past admission, bound %d", admitted, bound)
	}
	// The log: a line per reason per 10 s with a count, not a line per attempt.
	log := h.srv.Log()
	lines := strings.Count(log, "\n")
	refusedLines := strings.Count(log, "handshake refused")
	t.Logf("gtund log: %d lines, %d about refused handshakes, for %d attempts", lines, refusedLines, attempts)
	if refusedLines > 10 {
		t.Errorf("%d log lines about refused handshakes: not rate limited", refusedLines)
	}
	// Once the flood has stopped for the log interval, the totals are logged.
	testnet.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(h.srv.Log(), "suppressed=") {
			return errors.New("no suppressed count logged after the flood")
		}
		return nil
	})
	var refused []string
	for _, l := range strings.Split(h.srv.Log(), "\n") {
		if strings.Contains(l, "handshake refused") {
			refused = append(refused, l)
		}
	}
	t.Logf("gtund's log lines about refused handshakes, flood and summary:\n%s", strings.Join(refused, "\n"))
	if len(refused) > 10 {
		t.Errorf("%d log lines about refused handshakes after the summary", len(refused))
	}
	h.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
	h.noKeysLogged(t)
}

// flood is a running attack from vm's attacker address: workers goroutines
// together calling send perSec times a second.
type flood struct {
	start    time.Time
	stop     chan struct{}
	wg       sync.WaitGroup
	attempts atomic.Int64
}

// startFlood starts it; send(worker, i) makes one attempt and says whether
// it counts.
func startFlood(t *testing.T, h *hostileEnv, workers, perSec int, send func(w, i int) bool) *flood {
	f := &flood{start: time.Now(), stop: make(chan struct{})}
	for w := range workers {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			inVM(t, h.env, func() {
				tick := time.NewTicker(time.Second * time.Duration(workers) / time.Duration(perSec))
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-f.stop:
						return
					case <-tick.C:
					}
					if send(w, i) {
						f.attempts.Add(1)
					}
				}
			})
		}()
	}
	t.Cleanup(func() { f.stopAfter(0) })
	return f
}

// stopAfter lets the flood run until d after its start, stops it and
// returns its attempts and how long it ran.
func (f *flood) stopAfter(d time.Duration) (int64, time.Duration) {
	if rest := d - time.Since(f.start); rest > 0 {
		time.Sleep(rest)
	}
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	f.wg.Wait()
	return f.attempts.Load(), time.Since(f.start)
}

// noiseInit is a length-prefixed first handshake message (Noise IK and
// mac1), well formed, from a fresh key gtund does not know: what a sender
// who knows the server's public key can make, each costing gtund a DH.
func noiseInit(t *testing.T, server secure.PublicKey) []byte {
	t.Helper()
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, msg1, err := secure.Initiate(secure.ClientConfig{Private: k, ServerKey: server, Ciphers: secure.ChaCha20Poly1305})
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(msg1))), msg1...)
}

// kcpPush is one KCP segment (conversation conv, sequence 0) carrying
// data, as a new kcp client's first datagram looked before kcp rode inside
// authenticated datagrams: kcp-go on gtund made a session for its source
// address and port before any handshake.
func kcpPush(conv uint32, data []byte) []byte {
	b := make([]byte, 24+len(data))
	binary.LittleEndian.PutUint32(b[0:], conv)
	b[4] = 81                                  // IKCP_CMD_PUSH; frg 0 (stream mode)
	binary.LittleEndian.PutUint16(b[6:], 4096) // window
	binary.LittleEndian.PutUint32(b[20:], uint32(len(data)))
	copy(b[24:], data)
	return b
}

// The old kcp handshake flood: 1,000 new kcp "clients" a second from one
// address, each a fresh UDP source port whose first datagram is a kcp
// segment carrying a Noise message. kcp-go used to make a session for
// every one and the guard closed them; now none of them is a datagram
// gtund takes: all are dropped unopened and counted, without a session, a
// handshake slot, a guard entry or a DH, gtund stays small, and a
// legitimate gtun over kcp from another address connects meanwhile.
func TestKCPHandshakeFlood(t *testing.T) {
	h := newHostileEnv(t)
	serverPub, err := secure.ParsePublicKey(h.serverPub)
	if err != nil {
		t.Fatal(err)
	}
	var pushes [][]byte
	for i := range 16 {
		pushes = append(pushes, kcpPush(uint32(1000+i), noiseInit(t, serverPub)))
	}
	fl := startFlood(t, h, 4, 1000, func(w, i int) bool {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(attacker)}, &net.UDPAddr{IP: net.ParseIP(gwWAN), Port: 9623})
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = c.Write(pushes[(w+i)%len(pushes)])
		return err == nil
	})
	time.Sleep(2 * time.Second)

	// The legitimate client uses kcp too.
	cfg := h.clientConfig(t, "vm", h.clientKey, h.serverPub)
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), `transport = "tcp"`, `transport = "kcp"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cli := h.startClient(t, "vm", "vm", cfg)
	var took time.Duration
	testnet.Eventually(t, 15*time.Second, func() error {
		if cli.Exited() {
			t.Fatalf("gtun exited:\n%s", cli.LogTail(20))
		}
		var st client.Status
		if err := tryStatus(bins.gtun, h.clientSocket("vm"), &st); err != nil {
			return err
		}
		if s := st.Servers[0]; s.State != "connected" || s.Transport != "kcp" {
			return fmt.Errorf("gtun %s over %s", s.State, s.Transport)
		} else {
			took = s.Since.Sub(start)
		}
		return nil
	})
	t.Logf("legitimate gtun over kcp connected %v after its start, during the kcp flood", took.Round(time.Millisecond))
	attempts, elapsed := fl.stopAfter(8 * time.Second)
	t.Logf("kcp flood: %d new sessions in %v (%.0f/s)", attempts, elapsed.Round(time.Millisecond), float64(attempts)/elapsed.Seconds())
	h.checkAlive(t, "kcp handshake flood")
	st := gtundStatus(t, h.env)
	t.Logf("datagrams: %+v; handshakes: %+v", st.Datagrams, st.Handshakes)
	var dropped uint64
	for _, n := range st.Datagrams.Dropped {
		dropped += n
	}
	if dropped < uint64(attempts) {
		t.Errorf("%d of %d kcp datagrams counted as dropped", dropped, attempts)
	}
	if st.Datagrams.Sessions != 1 || st.Handshakes.Pending != 0 || st.Handshakes.Sources != 0 || st.Handshakes.DHForStrangers != 0 {
		t.Errorf("state after the flood: %d datagram sessions (want the legitimate one), %d handshakes pending, %d sources remembered, %d DH for strangers",
			st.Datagrams.Sessions, st.Handshakes.Pending, st.Handshakes.Sources, st.Handshakes.DHForStrangers)
	}
	h.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
}

// The admission limits apply on SIGHUP: tightened, a quiet source's
// connections beyond the new burst are refused at once; loosened again,
// they are not.
func TestHandshakeLimitsReload(t *testing.T) {
	h := newHostileEnv(t)
	cfg := filepath.Join(h.dir, "gtund.toml")
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	burst := func(n int) {
		t.Helper()
		inVM(t, h.env, func() {
			for range n {
				c, err := attackerDialer.Dial("tcp", gwWAN+":"+port)
				if err != nil {
					t.Errorf("dial: %v", err)
					return
				}
				c.Close()
			}
		})
	}
	refused := func() uint64 { return gtundStatus(t, h.env).HandshakeFailures[guard.RateLimited] }

	tight := strings.Replace(string(orig), "keepalive = \"1s\"\n", "keepalive = \"1s\"\nhandshake_rate = 1\nhandshake_burst = 5\n", 1)
	if err := os.WriteFile(cfg, []byte(tight), 0o600); err != nil {
		t.Fatal(err)
	}
	hup(t, "gtund", h.srv)
	testnet.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(h.srv.Log(), "config reloaded") {
			return errors.New("not reloaded yet")
		}
		return nil
	})
	burst(20)
	testnet.Eventually(t, 5*time.Second, func() error {
		if n := refused(); n < 10 {
			return fmt.Errorf("%d rate limited after 20 connections with burst 5, want >= 10", n)
		}
		return nil
	})

	if err := os.WriteFile(cfg, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	hup(t, "gtund", h.srv)
	testnet.Eventually(t, 10*time.Second, func() error {
		if n := strings.Count(h.srv.Log(), "config reloaded"); n < 2 {
			return errors.New("not reloaded yet")
		}
		return nil
	})
	// A source's bucket keeps its tokens across a reload and refills at
	// the new rate: 20/s fills the 64 of the default burst in 3.2 s.
	time.Sleep(4 * time.Second)
	before := refused()
	burst(20)
	time.Sleep(500 * time.Millisecond)
	if n := refused(); n != before {
		t.Errorf("%d more rate limited with the default burst of %d", n-before, guard.DefaultBurst)
	}
}
