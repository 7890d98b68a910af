package integration

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/dgram"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/server"
)

// The attacks on the datagram layer kcp rides in, sent for real from vm's
// namespace with forged source addresses (raw sockets), against the real
// gtund. Each logs what the closing note reports: gtund's CPU time and
// memory during the attack, the DH operations it did for strangers, and
// how long a known client took to connect.

var gwKCP = netip.MustParseAddrPort(gwWAN + ":" + port)

// forgedSources are n (address, port) pairs in ranges no host of the
// topology has: replies to them (cookies) go nowhere.
func forgedSources(n int) []netip.AddrPort {
	bases := []string{"203.0.113.", "192.0.2.", "198.18.0.", "198.19.0."}
	var out []netip.AddrPort
	for i := 0; len(out) < n; i++ {
		a := netip.MustParseAddr(bases[i/250%len(bases)] + strconv.Itoa(1+i%250))
		out = append(out, netip.AddrPortFrom(a, uint16(40000+i)))
	}
	return out
}

// cpuTicks is the CPU time a process used so far (user + system).
func cpuTicks(t *testing.T, p *testnet.Proc) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		t.Fatalf("gtund gone? %v", err)
	}
	// The fields after the command name (in parentheses, which may hold spaces).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// attackMeter measures gtund over an attack.
type attackMeter struct {
	h     *hostileEnv
	start time.Time
	cpu0  time.Duration
}

func (h *hostileEnv) meter(t *testing.T) *attackMeter {
	return &attackMeter{h: h, start: time.Now(), cpu0: cpuTicks(t, h.srv)}
}

// report logs the attack's figures and returns gtund's status.
func (m *attackMeter) report(t *testing.T, what string, sent int64, connect time.Duration) server.Status {
	t.Helper()
	elapsed := time.Since(m.start)
	cpu := cpuTicks(t, m.h.srv) - m.cpu0
	m.h.checkAlive(t, what)
	rss, hwm := memory(t, m.h.srv)
	st := gtundStatus(t, m.h.env)
	t.Logf("ATTACK %s: %d datagrams in %v (%.0f/s); gtund CPU %v (%.0f%% of one core), VmRSS %d KiB, VmHWM %d KiB; DH for strangers %d (all DH %v); known client connected in %v",
		what, sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), cpu, 100*cpu.Seconds()/elapsed.Seconds(),
		rss, hwm, st.Handshakes.DHForStrangers, st.Handshakes.DH, connect.Round(time.Millisecond))
	if st.Datagrams != nil {
		t.Logf("ATTACK %s: datagram listener: %d sessions, %d cookies sent, dropped %v", what, st.Datagrams.Sessions, st.Datagrams.CookiesSent, st.Datagrams.Dropped)
	}
	return st
}

// udpReceiveErrors is gw's count of UDP datagrams its kernel dropped
// before a socket read them (Udp RcvbufErrors in /proc/net/snmp).
func udpReceiveErrors(t *testing.T, e *env) uint64 {
	t.Helper()
	out := e.tp.MustExec(t, "gw", "cat", "/proc/net/snmp")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	t.Fatalf("no Udp RcvbufErrors in gw's /proc/net/snmp:\n%s", out)
	return 0
}

// kcpClientConfig is the legitimate gtun's config, over kcp.
func (h *hostileEnv) kcpClientConfig(t *testing.T) string {
	t.Helper()
	cfg := h.clientConfig(t, "vm", h.clientKey, h.serverPub)
	rewrite(t, cfg, `transport = "tcp"`, `transport = "kcp"`)
	return cfg
}

// connectKCP starts the legitimate gtun over kcp and returns how long it
// took to connect, failing after within.
func (h *hostileEnv) connectKCP(t *testing.T, within time.Duration) (time.Duration, *testnet.Proc) {
	t.Helper()
	start := time.Now()
	cli := h.startClient(t, "vm", "vm", h.kcpClientConfig(t))
	var last error
	for time.Since(start) < within {
		if cli.Exited() {
			t.Fatalf("gtun exited:\n%s", cli.LogTail(20))
		}
		var st client.Status
		last = tryStatus(bins.gtun, h.clientSocket("vm"), &st)
		if last == nil {
			s := st.Servers[0]
			if s.State == "connected" && s.Transport == "kcp" {
				return s.Since.Sub(start), cli
			}
			last = fmt.Errorf("gtun %s over %s (%s)", s.State, s.Transport, s.LastError)
		}
		time.Sleep(20 * time.Millisecond)
	}
	snmp, _ := h.tp.Exec("gw", "sh", "-c", "grep Udp: /proc/net/snmp")
	t.Fatalf("the known client did not connect within %v: %v\ngtund: %+v\n%+v\ngw's UDP counters:\n%s\ngtund's log:\n%s",
		within, last, gtundStatus(t, h.env).Handshakes, gtundStatus(t, h.env).Datagrams, snmp, h.srv.LogTail(30))
	return 0, nil
}

func (h *hostileEnv) clientStatus(t *testing.T) client.ServerStatus {
	t.Helper()
	var st client.Status
	status(t, bins.gtun, h.clientSocket("vm"), &st)
	return st.Servers[0]
}

// pace calls send(i) n times a second until stop is closed, spreading the
// calls evenly (in 1 ms steps), and returns how many it made.
func pace(perSec int, stop <-chan struct{}, send func(i int)) int64 {
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var done int64
	for {
		select {
		case <-stop:
			return done
		case <-tick.C:
		}
		due := int64(time.Since(start).Seconds() * float64(perSec))
		for ; done < due; done++ {
			send(int(done))
		}
	}
}

// Forged kcp datagrams from 500 sources, 4 a second each: the attack
// that used to make kcp-go sessions (and cost handshake slots) for forged
// sources. Now none of it is a datagram gtund takes: every one is dropped
// unopened and counted, gtund keeps no state for any source (no guard
// entry, no session, no handshake in progress), does no DH, and a known
// client over kcp connects and moves data meanwhile.
func TestForgedKCPFrom500Sources(t *testing.T) {
	h := newHostileEnv(t)
	serverPub, err := secure.ParsePublicKey(h.serverPub)
	if err != nil {
		t.Fatal(err)
	}
	sources := forgedSources(500)
	// What a new kcp client's datagrams look like (a push with a Noise
	// first message), other conversations' acks and pushes, and random
	// bytes: kcp-go would have taken each from a new source as a session.
	var payloads [][]byte
	for i := range 8 {
		payloads = append(payloads, kcpPush(uint32(1000+i), noiseInit(t, serverPub)))
		payloads = append(payloads, kcpPush(randUint32(), randBytes(200)))
		payloads = append(payloads, randBytes(24+i*100))
	}
	raw := openRawUDP(t, h.env, "vm")
	before := gtundStatus(t, h.env)
	m := h.meter(t)
	stop := make(chan struct{})
	var sent atomic.Int64
	var sendErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sent.Store(pace(4*len(sources), stop, func(i int) {
			if err := raw.send(sources[i%len(sources)], gwKCP, payloads[i%len(payloads)]); err != nil {
				sendErr.Store(err)
			}
		}))
	}()
	stopAttack := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopAttack) // before the socket closes, should the test end early
	time.Sleep(2 * time.Second)
	took, _ := h.connectKCP(t, 15*time.Second)
	out, err := h.tp.Exec("vm", "curl", "-fsS", "--max-time", "20", "-o", "/dev/null", "-w", "%{size_download}", "http://"+podIP+":8080/bytes?n=4000000")
	if err != nil || out != "4000000" {
		t.Fatalf("download over kcp during the attack: %v %q", err, out)
	}
	time.Sleep(time.Until(m.start.Add(10 * time.Second)))
	stopAttack()
	if err, _ := sendErr.Load().(error); err != nil {
		t.Fatalf("raw send: %v", err)
	}
	st := m.report(t, "forged kcp datagrams from 500 sources at 4/s", sent.Load(), took)

	if st.Handshakes.DHForStrangers != before.Handshakes.DHForStrangers {
		t.Errorf("DH for strangers: %d", st.Handshakes.DHForStrangers)
	}
	var dropped uint64
	for _, n := range st.Datagrams.Dropped {
		dropped += n
	}
	if dropped < uint64(sent.Load()) {
		t.Errorf("%d forged datagrams sent, %d dropped", sent.Load(), dropped)
	}
	if st.Datagrams.Sessions != 1 || st.Handshakes.Pending != 0 || st.Handshakes.Sources != 0 {
		t.Errorf("state after the attack: %d datagram sessions (want the known client's 1), %d handshakes pending, %d sources remembered",
			st.Datagrams.Sessions, st.Handshakes.Pending, st.Handshakes.Sources)
	}
	if s := h.clientStatus(t); s.Reconnects != 0 {
		t.Errorf("the known client reconnected %d times during the attack", s.Reconnects)
	}
}

// floodFrom runs workers goroutines, each with a raw socket of its own in
// vm, calling send as fast as they can (perSec 0) or perSec times a second
// together, until the returned stop is called; stop returns how many sends
// succeeded. The test's cleanup stops it too, before the sockets close (a
// worker left running would write into a socket number the next test
// reuses).
func floodFrom(t *testing.T, h *hostileEnv, workers, perSec int, send func(raw *rawUDP, i int) error) (stop func() int64) {
	t.Helper()
	halt := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	raws := make([]*rawUDP, workers)
	for w := range workers {
		raws[w] = openRawUDP(t, h.env, "vm")
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if perSec > 0 {
				pace(perSec/workers, halt, func(i int) {
					if send(raws[w], i*workers+w) == nil {
						sent.Add(1)
					}
				})
				return
			}
			for i := w; ; i += workers {
				select {
				case <-halt:
					return
				default:
				}
				if send(raws[w], i) == nil {
					sent.Add(1)
				}
			}
		}()
	}
	var once sync.Once
	stop = func() int64 {
		once.Do(func() { close(halt); wg.Wait() })
		return sent.Load()
	}
	t.Cleanup(func() { stop() })
	return stop
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func randUint32() uint32 { return binary.LittleEndian.Uint32(randBytes(4)) }

// One forged datagram from the client's own address and port used to end
// its kcp session (kcp-go closed the old one for a new conversation id).
// Here, while a download runs over kcp, an attacker who sees the wire
// sends from the client's address and port: kcp segments with other
// conversation ids, replays of the client's captured datagrams and of its
// captured initiation, captured datagrams with a new counter (their tags
// do not open), and garbage of every type. The session is not disturbed:
// no reconnect, the download arrives intact, and every forged datagram is
// dropped and counted.
func TestForgedDatagramsFromClientAddress(t *testing.T) {
	h := newHostileEnv(t)
	fromVM := func(c capturedUDP) bool {
		return c.dst == gwKCP && c.src.Addr().String() == testnet.VMWan && len(c.payload) > 0 &&
			(c.payload[0] == dgram.TypeInitiation || c.payload[0] == dgram.TypeData)
	}
	sn := startSniffer(t, h.env, "vm", "wan0", fromVM)
	took, _ := h.connectKCP(t, 15*time.Second)
	before := h.clientStatus(t)

	// The download: 200 MB of the pod's pattern, hashed on vm.
	const size = 200_000_000
	want := patternSHA256(size)
	dl := make(chan error, 1)
	dlStart := time.Now()
	go func() {
		out, err := h.tp.Exec("vm", "sh", "-c", fmt.Sprintf("curl -fsS --max-time 120 http://%s:8080/bytes?n=%d | sha256sum", podIP, size))
		if err == nil && !strings.HasPrefix(out, want) {
			err = fmt.Errorf("sha256 %q, want %s", out, want)
		}
		dl <- err
	}()
	var caps []capturedUDP
	testnet.Eventually(t, 10*time.Second, func() error {
		caps = sn.captured()
		n := 0
		for _, c := range caps {
			if c.payload[0] == dgram.TypeData {
				n++
			}
		}
		if n < 300 {
			return fmt.Errorf("%d data datagrams captured", n)
		}
		return nil
	})
	sn.close()
	var initiation []byte
	var data [][]byte
	clientAt := caps[len(caps)-1].src
	for _, c := range caps {
		if c.src != clientAt {
			continue // an earlier attempt's socket
		}
		switch c.payload[0] {
		case dgram.TypeInitiation:
			initiation = c.payload
		case dgram.TypeData:
			data = append(data, c.payload)
		}
	}
	if initiation == nil {
		t.Fatal("the client's initiation was not captured")
	}
	t.Logf("captured the client's initiation and %d of its data datagrams from %v", len(data), clientAt)

	raw := openRawUDP(t, h.env, "vm")
	m := h.meter(t)
	var sent, replays, newCounter int64
	forge := func(p []byte) {
		if err := raw.send(clientAt, gwKCP, p); err != nil {
			t.Fatalf("raw send: %v", err)
		}
		sent++
	}
	rounds := 0
	var dlErr error
attack:
	for round := 0; ; round++ {
		select {
		case dlErr = <-dl:
			break attack
		default:
		}
		rounds++
		for i := range 200 {
			forge(kcpPush(randUint32(), randBytes(100))) // another conversation id
			d := data[(round*200+i)%len(data)]
			forge(d) // a replay
			replays++
			f := append([]byte(nil), d...)
			binary.LittleEndian.PutUint64(f[8:], 5_000_000+uint64(round*200+i)) // a counter never used: the tag cannot open
			forge(f)
			newCounter++
			forge(append([]byte{byte(1 + i%4), 0, 0, 0}, randBytes(40+i)...)) // garbage of each type
		}
		forge(initiation) // the client's own first message again
		time.Sleep(200 * time.Millisecond)
	}
	if dlErr != nil {
		t.Fatalf("download during the attack: %v", dlErr)
	}
	t.Logf("the 200 MB download took %v, under %d rounds of forgeries", time.Since(dlStart).Round(time.Millisecond), rounds)
	if rounds < 3 {
		t.Fatalf("the download ended after %d rounds of the attack: too fast to show anything", rounds)
	}
	st := m.report(t, "forged datagrams from the client's own address and port", sent, took)
	after := h.clientStatus(t)
	if after.Reconnects != 0 || !after.Since.Equal(before.Since) || after.State != "connected" {
		t.Errorf("the session was disturbed: before %+v, after %+v", before, after)
	}
	if p := st.Peers[0]; p.Sessions != 1 {
		t.Errorf("gtund counts %d sessions of the peer, want 1", p.Sessions)
	}
	d := st.Datagrams.Dropped
	if d[dgram.DropReplay.String()] < uint64(replays) || d[dgram.DropBadTag.String()] < uint64(newCounter) {
		t.Errorf("dropped %v: want >= %d replays and >= %d bad tags", d, replays, newCounter)
	}
	if st.Handshakes.DHForStrangers != 0 || st.Handshakes.RefusedBeforeDH["duplicate"] < uint64(rounds) {
		t.Errorf("the replayed initiation: DH for strangers %d, refused before DH %v", st.Handshakes.DHForStrangers, st.Handshakes.RefusedBeforeDH)
	}
}

// patternSHA256 is the hex SHA-256 of the first n bytes of podhttp's
// /bytes pattern.
func patternSHA256(n int) string {
	const marker = "GTUN-CLEARTEXT-MARKER-"
	h := sha256.New()
	chunk := []byte(strings.Repeat(marker, 64<<10/len(marker)+1))
	for n > 0 {
		k := min(n, len(chunk)-len(chunk)%len(marker))
		h.Write(chunk[:k])
		n -= k
	}
	return hex.EncodeToString(h.Sum(nil))
}

// A recorded first message of the known client, replayed from 1,000
// forged sources as fast as the attacker's machine sends: it costs gtund
// no DH (the replay filter drops it first, or under load a cookie reply
// does), and the known client connects during the flood.
func TestRecordedInitiationReplayedFrom1000Sources(t *testing.T) {
	h := newHostileEnv(t)
	sn := startSniffer(t, h.env, "vm", "wan0", func(c capturedUDP) bool {
		return c.dst == gwKCP && len(c.payload) > 0 && c.payload[0] == dgram.TypeInitiation
	})
	_, cli := h.connectKCP(t, 15*time.Second)
	stop(t, "gtun", cli)
	sn.close()
	caps := sn.captured()
	if len(caps) == 0 {
		t.Fatal("no initiation captured")
	}
	recorded := caps[len(caps)-1].payload
	before := gtundStatus(t, h.env)
	kernelBefore := udpReceiveErrors(t, h.env)

	sources := forgedSources(1000)
	m := h.meter(t)
	stopFlood := floodFrom(t, h, 4, 0, func(raw *rawUDP, i int) error { return raw.send(sources[i%len(sources)], gwKCP, recorded) })
	time.Sleep(2 * time.Second)
	// Within a generous bound: what must hold is that the known client
	// connects while the flood goes on (a loaded machine makes its lost
	// datagrams take more retries), not how fast.
	took, _ := h.connectKCP(t, time.Minute)
	h.reach(t, "vm", "http://"+podIP+":8080/", 30*time.Second)
	time.Sleep(time.Until(m.start.Add(10 * time.Second)))
	sent := stopFlood()
	st := m.report(t, "recorded initiation replayed from 1,000 forged sources, as fast as possible", sent, took)
	if n := st.Handshakes.DHForStrangers - before.Handshakes.DHForStrangers; n != 0 {
		t.Errorf("%d DH for strangers during the replay flood", n)
	}
	// Every replay gtund read was refused before any DH (the rest the
	// kernel dropped from the full socket buffer: the flood outruns gtund
	// on this machine, which it shares with the flood's sender).
	kernelDrops := udpReceiveErrors(t, h.env) - kernelBefore
	refused := st.Datagrams.Dropped[dgram.DropDuplicate.String()] + st.Datagrams.Dropped[dgram.DropCookieRequired.String()] + st.Datagrams.Dropped[dgram.DropHandshakeFull.String()]
	t.Logf("of %d replays sent: %d refused by gtund before any DH, about %d dropped by gw's kernel (socket buffer full; its count includes the known client's datagrams lost so)",
		sent, refused, kernelDrops)
	if refused == 0 {
		t.Errorf("no replay refused: %v", st.Datagrams.Dropped)
	}
	if st.Datagrams.Established-before.Datagrams.Established > 3 {
		t.Errorf("%d sessions made during the flood (only the known client's should be)", st.Datagrams.Established-before.Datagrams.Established)
	}
}

// A flood of first messages that pass mac1 (anyone who has the server's
// public key can make them) but are fresh each time, so the replay filter
// does not know them: random bytes with a valid mac1, each of which would
// cost gtund a DH. From forged sources, 25,000 a second (more than its
// handshake worker does in DH; as fast as the flood's own goroutines go,
// they take most of this 2-core machine from gtund, whose known client
// then loses most of its datagrams in the kernel too): the queue fills,
// gtund asks for cookies, which forged sources never see, so the DH it
// does for strangers stay a small fraction of the flood, and the known
// client (whose address is real) answers its cookie, connects and works.
func TestFreshInitiationFloodGetsCookies(t *testing.T) {
	h := newHostileEnv(t)
	serverPub, err := secure.ParsePublicKey(h.serverPub)
	if err != nil {
		t.Fatal(err)
	}
	mac1Key := blake2s.Sum256(append([]byte("mac1----"), serverPub[:]...))
	sources := forgedSources(1000)
	const workers, rate = 2, 25000
	var macs [workers]hash.Hash
	var bufs [workers][]byte
	for w := range workers {
		macs[w], _ = blake2s.New128(mac1Key[:])
		bufs[w] = make([]byte, dgram.InitiationOverhead+111+secure.MAC1Size)
	}
	m := h.meter(t)
	stopFlood := floodFrom(t, h, workers, rate, func(raw *rawUDP, i int) error {
		d, mac := bufs[i%workers], macs[i%workers]
		d[0] = dgram.TypeInitiation
		rand.Read(d[4 : len(d)-2*secure.MAC1Size]) // sender index and a Noise message that is not one
		first := d[8 : len(d)-secure.MAC1Size]
		mac.Reset()
		mac.Write(first[:len(first)-secure.MAC1Size])
		mac.Sum(first[len(first)-secure.MAC1Size:][:0])
		return raw.send(sources[i%len(sources)], gwKCP, d)
	})
	// The known client starts once gtund is asking for cookies (the
	// replies to forged sources go nowhere: only the known client's count
	// as sent), so what follows shows it connecting through one.
	// Conditions, not clocks: on a loaded machine the flood takes longer
	// to fill the queue and the client's datagrams, lost in gw's full
	// socket buffer, take more retries; what must hold is that it connects
	// while the flood goes on.
	for wait := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st := gtundStatus(t, h.env)
		if st.Datagrams != nil && st.Datagrams.Dropped[dgram.DropCookieRequired.String()] > 0 {
			break
		}
		if time.Now().After(wait) {
			t.Fatalf("gtund asked for no cookie 30 s into a DH flood: %+v", st.Datagrams)
		}
	}
	took, _ := h.connectKCP(t, time.Minute)
	h.reach(t, "vm", "http://"+podIP+":8080/", 30*time.Second)
	// At least 10 s of flood, so the figures compare between runs.
	time.Sleep(time.Until(m.start.Add(10 * time.Second)))
	sent := stopFlood()
	st := m.report(t, "fresh initiations with a valid mac1 from 1,000 forged sources, 25,000/s", sent, took)
	if st.Datagrams.CookiesSent == 0 {
		t.Error("no cookie sent to the known client under a DH flood")
	}
	if n := st.Handshakes.DHForStrangers; n > uint64(sent)/10 {
		t.Errorf("%d DH for strangers out of %d fresh initiations: the cookie did not hold", n, sent)
	}
}
