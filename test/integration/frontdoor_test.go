package integration

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/guard"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
)

// cpuTime is p's user plus system CPU time so far (/proc/PID/stat counts
// in USER_HZ, which Linux fixes at 100 for this interface).
func cpuTime(t *testing.T, p *testnet.Proc) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		t.Fatalf("gtund gone? %v", err)
	}
	// The fields after the command name (which may hold spaces): state is
	// field 3, utime 14, stime 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// attack measures gtund while an attack runs: its CPU time, its memory,
// and the DH work it did for strangers.
type attack struct {
	h     *hostileEnv
	name  string
	cpu0  time.Duration
	start time.Time
	dh0   uint64
}

func (h *hostileEnv) beginAttack(t *testing.T, name string) *attack {
	return &attack{h: h, name: name, cpu0: cpuTime(t, h.srv), start: time.Now(), dh0: gtundStatus(t, h.env).Handshakes.DHForStrangers}
}

// end logs the figures of the attack so far and returns the DH gtund did
// for strangers during it.
func (a *attack) end(t *testing.T, connect time.Duration) uint64 {
	t.Helper()
	cpu, wall := cpuTime(t, a.h.srv)-a.cpu0, time.Since(a.start)
	rss, hwm := memory(t, a.h.srv)
	st := gtundStatus(t, a.h.env)
	dh := st.Handshakes.DHForStrangers - a.dh0
	t.Logf("ATTACK %s: %v; gtund CPU %v (%.0f%% of one core), VmRSS %d KiB, VmHWM %d KiB; DH for strangers %d; known client connected in %v",
		a.name, wall.Round(time.Millisecond), cpu, 100*cpu.Seconds()/wall.Seconds(), rss, hwm, dh, connect.Round(time.Millisecond))
	t.Logf("gtund handshakes: %+v; refused: %v", st.Handshakes, st.HandshakeFailures)
	a.h.checkAlive(t, a.name)
	return dh
}

// addSources gives vm's wan link n more addresses, 198.51.100.first..,
// each a source of its own to gtund.
func (h *hostileEnv) addSources(t *testing.T, first, n int) []string {
	var srcs []string
	for i := range n {
		a := fmt.Sprintf("198.51.100.%d", first+i)
		h.tp.MustExec(t, "vm", "ip", "addr", "add", a+"/24", "dev", "wan0")
		srcs = append(srcs, a)
	}
	return srcs
}

// dialFrom connects to gtund from src on vm.
func (h *hostileEnv) dialFrom(t *testing.T, src string) (c net.Conn, err error) {
	inVM(t, h.env, func() {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 3 * time.Second}
		c, err = d.Dial("tcp", gwWAN+":"+port)
	})
	return c, err
}

// connectRaw runs the handshake and session setup of the peer with the key
// in keyPath from src (in process, the protocol packages gtun uses), and
// returns how long they took.
func (h *hostileEnv) connectRaw(t *testing.T, src, keyPath string) (time.Duration, error) {
	key, serverPub := h.handshakeKeys(t, keyPath)
	start := time.Now()
	conn, err := h.dialFrom(t, src)
	if err != nil {
		return 0, err
	}
	sc, err := secure.Client(conn, secure.ClientConfig{Private: key, ServerKey: serverPub})
	if err != nil {
		conn.Close()
		return 0, err
	}
	sess, _, err := session.Dial(context.Background(), sc, &session.Msg{Type: session.TypeHello, Version: secure.ProtocolVersion, Name: "raw"}, 0, nil)
	if err != nil {
		conn.Close()
		return 0, err
	}
	took := time.Since(start)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.Run(ctx, session.Handlers{})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return took, nil
}

// A stranger gets silence on TCP, whatever it sends: a first message from
// a key gtund does not know (made with the server's public key, so past
// mac1), one made for another server's key, random bytes behind a valid
// length, a stream of garbage. Each connection gets no byte back and is
// closed when a connection that says nothing is (at the handshake
// timeout), with a FIN, not a reset. Only the stranger who knew the
// server's public key cost a DH.
func TestStrangersGetSilence(t *testing.T) {
	testnet.Require(t, "tcpdump")
	h := newHostileEnv(t)
	serverPub, err := secure.ParsePublicKey(h.serverPub)
	if err != nil {
		t.Fatal(err)
	}
	strangerKey, _ := secure.GeneratePrivateKey()
	otherServer, _ := secure.GeneratePrivateKey()
	_, wrongServer, err := secure.Initiate(secure.ClientConfig{Private: strangerKey, ServerKey: otherServer.Public()})
	if err != nil {
		t.Fatal(err)
	}
	frame := func(m []byte) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(m))), m...) }
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	probes := []struct {
		name string
		data []byte
	}{
		{"silent (the baseline)", nil},
		{"unknown key, knows the server's public key", noiseInit(t, serverPub)},
		{"first message for another server's key", frame(wrongServer)},
		{"random bytes behind a valid length", frame(random(127))},
		{"64 KiB of garbage", random(64 << 10)},
	}
	before := gtundStatus(t, h.env).Handshakes
	// The times are the kernel's, from a capture on the attacker's link:
	// gtund's SYN-ACK to its FIN on each connection. Measured by this
	// process instead, a loaded machine's late wake-ups told the probes
	// apart by more than gtund did.
	sniff := h.tp.Start(t, "vm", "", "timeout", "30", "tcpdump", "-tt", "-n", "-l", "-i", "wan0",
		fmt.Sprintf("tcp and src host %s and src port %s and dst host %s and tcp[tcpflags] & (tcp-syn|tcp-fin) != 0", gwWAN, port, attacker))
	testnet.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(sniff.Log(), "listening on") {
			return fmt.Errorf("tcpdump not ready: %s", sniff.Log())
		}
		return nil
	})
	type result struct {
		port int
		n    int64
		err  error
	}
	results := make([]result, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		c, err := h.dialFrom(t, attacker)
		if err != nil {
			t.Fatal(err)
		}
		results[i].port = c.LocalAddr().(*net.TCPAddr).Port
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			if _, err := c.Write(p.data); err != nil {
				results[i].err = err
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(hsTimeout + 10*time.Second))
			results[i].n, results[i].err = io.Copy(io.Discard, c)
		}()
	}
	wg.Wait()
	var took []time.Duration
	testnet.Eventually(t, 10*time.Second, func() error {
		var err error
		took, err = synToFin(sniff.Log(), results[0].port, results[1].port, results[2].port, results[3].port, results[4].port)
		return err
	})
	silent := took[0]
	for i, r := range results {
		t.Logf("%-45s %d bytes back, closed after %v (SYN-ACK to FIN), %v", probes[i].name, r.n, took[i].Round(time.Millisecond), r.err)
		if r.n != 0 || r.err != nil {
			t.Errorf("%s: %d bytes back, %v; want none, then a clean close", probes[i].name, r.n, r.err)
		}
		if d := took[i] - silent; d < -300*time.Millisecond || d > 300*time.Millisecond || took[i] < hsTimeout-10*time.Millisecond {
			t.Errorf("%s: closed after %v, a silent connection after %v (handshake timeout %v): told apart", probes[i].name, took[i], silent, hsTimeout)
		}
	}
	h.waitNoPending(t, 5*time.Second)
	after := gtundStatus(t, h.env).Handshakes
	if dh := after.DHForStrangers - before.DHForStrangers; dh != 1 {
		t.Errorf("DH for strangers: %d, want 1 (the one that knew the server's public key): %+v", dh, after)
	}
	if n := after.RefusedBeforeDH["bad_mac1"] - before.RefusedBeforeDH["bad_mac1"]; n < 2 {
		t.Errorf("refused before DH for bad mac1: %d, want >= 2 (%v)", n, after.RefusedBeforeDH)
	}
	h.checkAlive(t, "strangers")
	h.connectLegit(t, 10*time.Second)
}

// Known peers first: 8 source addresses each keep 40 silent TCP
// connections open (redialling as gtund closes them), more than
// max_handshakes holds. A peer that connected before from its address gets
// in from the known sources' reserve; a peer that never connected, from a
// new address, gets in too (gtund closes a waiting connection of the
// source holding the most). Silent connections cost no DH.
func TestSilentConnectionsKeepNoKnownPeerOut(t *testing.T) {
	var nkey string
	h := newHostileEnvWith(t, "", func(e *env) []peer {
		var npub string
		nkey, npub = e.key(t, "newcomer")
		return []peer{{name: "newcomer", pub: npub}}
	})
	// The known peer connects once from its address: that makes the source known.
	if _, err := h.connectRaw(t, "198.51.100.1", h.clientKey); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	srcs := h.addSources(t, 10, 8)
	newSrc := h.addSources(t, 30, 1)[0]

	hold := h.holdSilent(t, srcs, 40)
	testnet.Eventually(t, 10*time.Second, func() error {
		if st := gtundStatus(t, h.env).Handshakes; st.Pending < guard.DefaultMaxPending {
			return fmt.Errorf("%d handshakes in progress, want max_handshakes (%d)", st.Pending, guard.DefaultMaxPending)
		}
		return nil
	})
	time.Sleep(hsTimeout) // a full round of the attackers' connections timed out and redialled
	a := h.beginAttack(t, "8 sources x 40 silent TCP connections")
	t.Logf("attackers hold %d connections open (%d dials so far)", hold.open.Load(), hold.dials.Load())

	took := h.connectLegit(t, 10*time.Second)
	if took > 3*time.Second {
		t.Errorf("known peer took %v to connect", took)
	}
	newTook, err := h.connectRaw(t, newSrc, nkey)
	if err != nil {
		t.Errorf("a new peer from a new address could not connect during the attack: %v", err)
	}
	t.Logf("new peer (never connected before, from %s) connected in %v", newSrc, newTook.Round(time.Millisecond))
	time.Sleep(3 * time.Second) // the attack goes on, measured
	if dh := a.end(t, took); dh != 0 {
		t.Errorf("silent connections cost %d DH", dh)
	}
	st := gtundStatus(t, h.env)
	if st.Handshakes.KnownSources < 1 || st.HandshakeFailures[guard.TooManyPendingSource] == 0 {
		t.Errorf("the attack did not run as meant: %+v %v", st.Handshakes, st.HandshakeFailures)
	}
	hold.stop()
	h.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
}

// silentHold is an attack: connections that say nothing, kept open.
type silentHold struct {
	open, dials atomic.Int64
	done        chan struct{}
	wg          sync.WaitGroup
}

// holdSilent keeps perSource silent TCP connections to gtund open from
// each of srcs, dialling again (after 100 ms) each one gtund closes.
func (h *hostileEnv) holdSilent(t *testing.T, srcs []string, perSource int) *silentHold {
	a := &silentHold{done: make(chan struct{})}
	for _, src := range srcs {
		for range perSource {
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				for {
					select {
					case <-a.done:
						return
					default:
					}
					c, err := h.dialFrom(t, src)
					a.dials.Add(1)
					if err == nil {
						a.open.Add(1)
						closed := make(chan struct{})
						go func() {
							io.Copy(io.Discard, c) // silent: reads until gtund closes
							close(closed)
						}()
						select {
						case <-closed:
						case <-a.done:
						}
						c.Close()
						<-closed
						a.open.Add(-1)
					}
					select { // redial at once, but not in a busy loop
					case <-a.done:
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
			}()
		}
	}
	t.Cleanup(a.stop)
	return a
}

func (a *silentHold) stop() {
	select {
	case <-a.done:
	default:
		close(a.done)
	}
	a.wg.Wait()
}

// The reserve alone: more sources than max_handshakes (here 32), each
// holding one silent connection, so that no source holds more than
// another and closing one to make room would only move the imbalance. A
// peer that never connected, from a new address, is kept out while it
// lasts (the limit of fairness by source); the peer that connected before
// from its address gets in from max_handshakes_known.
func TestKnownPeerReserveAgainstManySources(t *testing.T) {
	var nkey string
	h := newHostileEnvWith(t, "max_handshakes = 32\n", func(e *env) []peer {
		var npub string
		nkey, npub = e.key(t, "newcomer")
		return []peer{{name: "newcomer", pub: npub}}
	})
	if _, err := h.connectRaw(t, "198.51.100.1", h.clientKey); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	hold := h.holdSilent(t, h.addSources(t, 100, 40), 1)
	newSrc := h.addSources(t, 30, 1)[0]
	testnet.Eventually(t, 10*time.Second, func() error {
		if st := gtundStatus(t, h.env); st.Handshakes.Pending < 32 || st.HandshakeFailures[guard.TooManyPending] == 0 {
			return fmt.Errorf("%d handshakes in progress, refused %v", st.Handshakes.Pending, st.HandshakeFailures)
		}
		return nil
	})
	a := h.beginAttack(t, "40 sources x 1 silent TCP connection, max_handshakes 32")
	if _, err := h.connectRaw(t, newSrc, nkey); err == nil {
		t.Log("the new peer got in (a slot was free for a moment)")
	} else {
		t.Logf("the new peer from a new address, as expected while this lasts: %v", err)
	}
	// Single attempts, no retry: each must find a slot at once.
	var worst time.Duration
	for i := range 5 {
		took, err := h.connectRaw(t, "198.51.100.1", h.clientKey)
		if err != nil {
			t.Fatalf("known peer, attempt %d: %v", i+1, err)
		}
		worst = max(worst, took)
	}
	t.Logf("known peer: 5 of 5 single attempts connected, the slowest in %v", worst.Round(time.Millisecond))
	took := h.connectLegit(t, 10*time.Second)
	if took > 3*time.Second {
		t.Errorf("known peer (gtun) took %v to connect", took)
	}
	time.Sleep(3 * time.Second) // the attack goes on, measured
	if dh := a.end(t, took); dh != 0 {
		t.Errorf("silent connections cost %d DH", dh)
	}
	hold.stop()
}

// A recorded first handshake message of a known peer, replayed over TCP
// from 8 source addresses as fast as they can: gtund refuses every replay
// before any DH (duplicate), so it does no DH for them, and the known
// client connects meanwhile.
func TestRecordedFirstMessageReplayedCostsNoDH(t *testing.T) {
	h := newHostileEnv(t)
	orig := dialRecorded(t, h.env, "vm", h.clientKey)
	if n := len(orig.init); n < 2 || int(binary.BigEndian.Uint16(orig.init))+2 != n {
		t.Fatalf("captured %d bytes, not one handshake message", n)
	}
	orig.sess.Close()
	<-orig.ended
	srcs := h.addSources(t, 10, 8)
	a := h.beginAttack(t, "recorded first message replayed over TCP from 8 sources")
	dh0 := gtundStatus(t, h.env).Handshakes.DH
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, src := range srcs {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				inVM(t, h.env, func() {
					d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 3 * time.Second}
					for {
						select {
						case <-stop:
							return
						default:
						}
						c, err := d.Dial("tcp", gwWAN+":"+port)
						if err != nil {
							continue
						}
						if _, err := c.Write(orig.init); err == nil {
							sent.Add(1)
						}
						c.Close()
					}
				})
			}()
		}
	}
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	})
	time.Sleep(2 * time.Second)
	took := h.connectLegit(t, 10*time.Second)
	time.Sleep(4 * time.Second)
	close(stop)
	wg.Wait()
	h.waitNoPending(t, hsTimeout+5*time.Second)
	st := gtundStatus(t, h.env)
	t.Logf("replays sent: %d; refused as duplicate before DH: %d, rate limited: %d", sent.Load(),
		st.HandshakeFailures["duplicate"], st.HandshakeFailures[guard.RateLimited])
	if dh := a.end(t, took); dh != 0 {
		t.Errorf("replays cost %d DH", dh)
	}
	if st.HandshakeFailures["duplicate"] < 100 {
		t.Errorf("only %d replays reached the responder: the attack did not run as meant", st.HandshakeFailures["duplicate"])
	}
	// The only DH gtund did in the attack was the known client's.
	if n := st.Handshakes.DH["authenticated"] - dh0["authenticated"]; n != 1 || len(st.Handshakes.DH) != 1 {
		t.Errorf("DH during the attack: %v, before it %v; want one, authenticated", st.Handshakes.DH, dh0)
	}
	h.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
}

// synToFin reads tcpdump -tt -n lines of a server's SYN-ACKs and FINs and
// returns, for each client port, the time from the first to the second.
func synToFin(capture string, ports ...int) ([]time.Duration, error) {
	synAck, fin := map[int]float64{}, map[int]float64{}
	for _, line := range strings.Split(capture, "\n") {
		// 1764590000.123456 IP 198.51.100.2.9623 > 198.51.100.9.41234: Flags [F.], ...
		f := strings.Fields(line)
		if len(f) < 7 || f[1] != "IP" || f[5] != "Flags" {
			continue
		}
		at, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		dst := strings.TrimSuffix(f[4], ":")
		p, err := strconv.Atoi(dst[strings.LastIndexByte(dst, '.')+1:])
		if err != nil {
			continue
		}
		switch flags := f[6]; {
		case strings.Contains(flags, "S"):
			if _, ok := synAck[p]; !ok {
				synAck[p] = at
			}
		case strings.Contains(flags, "F"):
			if _, ok := fin[p]; !ok {
				fin[p] = at
			}
		}
	}
	out := make([]time.Duration, len(ports))
	for i, p := range ports {
		s, ok1 := synAck[p]
		f, ok2 := fin[p]
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("no SYN-ACK and FIN for client port %d in the capture:\n%s", p, capture)
		}
		out[i] = time.Duration((f - s) * float64(time.Second))
	}
	return out, nil
}
