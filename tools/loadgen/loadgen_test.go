package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/transport"
)

// checksumOK reports whether b (with its checksum field filled in) sums to
// 0xffff, optionally with a starting accumulator (the pseudo-header).
func checksumOK(b []byte, acc uint32) bool { return packet.Fold(packet.Sum(b, acc)) == 0xffff }

func TestBuildUDPFrame(t *testing.T) {
	src := netip.MustParseAddr("100.64.0.7")
	dst := netip.MustParseAddr("10.244.1.20")
	for _, payload := range [][]byte{nil, []byte("x"), []byte("gtun loadgen 12 345"), bytes.Repeat([]byte{0xff}, 1200)} {
		t.Run(fmt.Sprint(len(payload)), func(t *testing.T) {
			b := packet.Get()
			defer packet.Put(b)
			for i := range b.B[:64] {
				b.B[i] = 0xaa // stale bytes must not leak into the header
			}
			n := buildUDPFrame(b.B, src, dst, 40001, trafficPort, payload)
			if want := packet.VnetHdrLen + 28 + len(payload); n != want {
				t.Fatalf("length %d, want %d", n, want)
			}
			b.N = n
			frame := b.Bytes()
			if !bytes.Equal(frame[:packet.VnetHdrLen], make([]byte, packet.VnetHdrLen)) {
				t.Fatalf("virtio-net header not zero: % x", frame[:packet.VnetHdrLen])
			}
			h := packet.DecodeVnetHdr(frame)
			if !h.Plain() {
				t.Fatalf("header %+v is not plain", h)
			}
			ip := b.IP()
			if err := h.Validate(ip); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			s, d, err := packet.Addrs(ip)
			if err != nil || s != src || d != dst {
				t.Fatalf("Addrs = %v %v %v", s, d, err)
			}
			if tl, err := packet.TotalLen(ip); err != nil || tl != len(ip) {
				t.Fatalf("TotalLen = %d %v, want %d", tl, err, len(ip))
			}
			if ip[0] != 0x45 || ip[8] != 64 || ip[9] != 17 {
				t.Fatalf("version/ihl %#x ttl %d proto %d", ip[0], ip[8], ip[9])
			}
			if !checksumOK(ip[:20], 0) {
				t.Fatal("bad IPv4 header checksum")
			}
			u := ip[20:]
			if sp, dp := binary.BigEndian.Uint16(u), binary.BigEndian.Uint16(u[2:]); sp != 40001 || dp != 9 {
				t.Fatalf("ports %d -> %d", sp, dp)
			}
			if ul := int(binary.BigEndian.Uint16(u[4:])); ul != 8+len(payload) {
				t.Fatalf("UDP length %d", ul)
			}
			if binary.BigEndian.Uint16(u[6:]) == 0 {
				t.Fatal("UDP checksum left zero")
			}
			pseudo := packet.Sum(ip[12:20], 0) + 17 + uint32(len(u))
			if !checksumOK(u, pseudo) {
				t.Fatal("bad UDP checksum")
			}
			if !bytes.Equal(u[8:], payload) {
				t.Fatal("payload differs")
			}
		})
	}
}

func TestBuildUDPFrameRefuses(t *testing.T) {
	v4 := netip.MustParseAddr("100.64.0.7")
	v6 := netip.MustParseAddr("fd00::1")
	if n := buildUDPFrame(make([]byte, 100), v6, v4, 1, 9, nil); n != 0 {
		t.Errorf("IPv6 source: %d, want 0", n)
	}
	if n := buildUDPFrame(make([]byte, 100), v4, v6, 1, 9, nil); n != 0 {
		t.Errorf("IPv6 destination: %d, want 0", n)
	}
	if n := buildUDPFrame(make([]byte, 40), v4, v4, 1, 9, make([]byte, 10)); n != 0 {
		t.Errorf("short buffer: %d, want 0", n)
	}
}

// The checksum arithmetic against a published IPv4 header whose checksum
// is 0xb861.
func TestChecksumKnownHeader(t *testing.T) {
	// 45 00 00 73 00 00 40 00 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7 (Wikipedia example)
	h := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := ^packet.Fold(packet.Sum(h, 0)); got != 0xb861 {
		t.Fatalf("checksum %#04x, want 0xb861", got)
	}
	if got := packet.Fold(packet.Sum([]byte{0xff}, 0)); got != 0xff00 {
		t.Fatalf("odd length: %#04x", got)
	}
}

func TestParseKeys(t *testing.T) {
	var keys []secure.PrivateKey
	for range 3 {
		k, err := secure.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	src := "# load keys\n" + keys[0].Encode() + "\n\n  " + keys[1].Encode() + "  \r\n" + keys[2].Encode() // no final newline
	got, err := parseKeys(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d keys, want 3", len(got))
	}
	for i := range keys {
		if got[i] != keys[i] {
			t.Errorf("key %d differs", i)
		}
	}

	_, err = parseKeys(strings.NewReader(keys[0].Encode() + "\n\nnot-a-key\n"))
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("bad key: err %v, want one naming line 3", err)
	}
	if got, err := parseKeys(strings.NewReader("")); err != nil || len(got) != 0 {
		t.Fatalf("empty file: %v %v", got, err)
	}
}

// genkeys writes keys that parse back, and [[peer]] tables gtund's config
// loader accepts with the matching public keys.
func TestGenkeysRoundTrip(t *testing.T) {
	dir := t.TempDir()
	priv, peers := filepath.Join(dir, "keys.txt"), filepath.Join(dir, "peers.toml")
	var stderr bytes.Buffer
	if rc := genkeysMain([]string{"-n", "25", "-priv", priv, "-peers", peers}, &stderr); rc != 0 {
		t.Fatalf("genkeys exit %d: %s", rc, stderr.String())
	}
	st, err := os.Stat(priv)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("private key file mode %v, want 0600", st.Mode().Perm())
	}
	keys, err := loadKeys(priv)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 25 {
		t.Fatalf("%d keys, want 25", len(keys))
	}

	serverKey, _ := secure.GeneratePrivateKey()
	skPath := filepath.Join(dir, "server.key")
	if err := os.WriteFile(skPath, []byte(serverKey.Encode()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	snippet, err := os.ReadFile(peers)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "gtund.toml")
	cfg := fmt.Sprintf("[server]\nprivate_key_file = %q\npool = \"100.64.0.0/20\"\nroutes = [\"10.244.0.0/16\"]\nstate_dir = %q\n\n%s",
		skPath, filepath.Join(dir, "state"), snippet)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.LoadServer(cfgPath)
	if err != nil {
		t.Fatalf("gtund rejects the generated peers: %v", err)
	}
	if len(c.Peers) != 25 {
		t.Fatalf("%d peers, want 25", len(c.Peers))
	}
	for i, p := range c.Peers {
		if p.Name != peerName(i) || p.PublicKey != keys[i].Public() {
			t.Errorf("peer %d: %s %s, want %s %s", i, p.Name, p.PublicKey, peerName(i), keys[i].Public())
		}
	}
}

func TestGenkeysUsage(t *testing.T) {
	if rc := genkeysMain([]string{"-n", "0", "-priv", "a", "-peers", "b"}, io.Discard); rc != 2 {
		t.Errorf("-n 0: exit %d, want 2", rc)
	}
	if rc := genkeysMain([]string{"-n", "3"}, io.Discard); rc != 2 {
		t.Errorf("no files: exit %d, want 2", rc)
	}
}

func TestLatencyPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := latency(ds)
	if l.Min != 1 || l.P50 != 50 || l.P90 != 90 || l.P99 != 99 || l.Max != 100 {
		t.Fatalf("%+v", l)
	}
	if ds[0] != 100*time.Millisecond {
		t.Fatal("latency sorted its input in place")
	}
	if (latency(nil) != Latency{}) {
		t.Fatal("empty input")
	}
}

func TestParseStatus(t *testing.T) {
	m := parseStatus("Name:\tgtund\nVmHWM:\t   20480 kB\nVmRSS:\t   18000 kB\nThreads:\t7\n")
	if m.RSSKiB != 18000 || m.HWMKiB != 20480 || m.Threads != 7 {
		t.Fatalf("%+v", m)
	}
}

// fakeServer is a minimal gtund: handshake, config with a tunnel address,
// then it runs the session and counts packets from the right source.
type fakeServer struct {
	ln      net.Listener
	key     secure.PrivateKey
	peers   map[secure.PublicKey]int
	good    atomic.Int64 // packets whose source was the session's address
	bad     atomic.Int64
	closeAt int // close the session of this key index right after setup (-1: never)
	wg      sync.WaitGroup
}

func (f *fakeServer) serve(ctx context.Context) {
	for {
		raw, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			sc, pub, err := secure.Server(raw, secure.ServerConfig{Private: f.key, Authorize: func(k secure.PublicKey, _ uint64) error {
				if _, ok := f.peers[k]; !ok {
					return secure.ErrUnknownPeer
				}
				return nil
			}})
			if err != nil {
				raw.Close()
				return
			}
			sess, _, err := session.Accept(sc, 0, nil)
			if err != nil {
				return
			}
			idx := f.peers[pub]
			addr := netip.AddrFrom4([4]byte{100, 64, byte((idx + 2) >> 8), byte(idx + 2)})
			// Keepalives flow every 200 ms, but a session is dead only
			// after 5 s of silence, longer than any hold here: on a loaded
			// machine (make test runs packages side by side) 600 ms
			// without a record ended sessions the tests expect alive.
			sess.SetKeepalive(200*time.Millisecond, 25)
			if err := sess.SendControl(&session.Msg{Type: session.TypeConfig, Version: secure.ProtocolVersion,
				Address: netip.PrefixFrom(addr, 20).String(), KeepaliveMS: 200, DeadAfter: 25}); err != nil {
				sess.Close()
				return
			}
			if idx == f.closeAt {
				go func() { time.Sleep(100 * time.Millisecond); sess.Close() }()
			}
			_ = sess.Run(ctx, session.Handlers{Packet: func(frame []byte) {
				if src, _, err := packet.Addrs(frame[packet.VnetHdrLen:]); err == nil && src == addr {
					f.good.Add(1)
				} else {
					f.bad.Add(1)
				}
			}})
		}()
	}
}

func startFake(t *testing.T, keys []secure.PrivateKey, closeAt int) *fakeServer {
	t.Helper()
	ln, err := transport.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sk, _ := secure.GeneratePrivateKey()
	f := &fakeServer{ln: ln, key: sk, peers: map[secure.PublicKey]int{}, closeAt: closeAt}
	for i, k := range keys {
		f.peers[k.Public()] = i
	}
	ctx, cancel := context.WithCancel(context.Background())
	go f.serve(ctx)
	t.Cleanup(func() {
		ln.Close()
		cancel()
		f.wg.Wait()
	})
	return f
}

func genKeys(t *testing.T, n int) []secure.PrivateKey {
	keys := make([]secure.PrivateKey, n)
	for i := range keys {
		k, err := secure.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	return keys
}

// run against an in-process server: every session set up, kept up, and
// sending its packets with its own tunnel address as source.
func TestRunInProcess(t *testing.T) {
	keys := genKeys(t, 12)
	f := startFake(t, keys[:10], -1) // the last two keys are unknown to the server
	o := options{server: f.ln.Addr().String(), serverKey: f.key.Public(), keys: keys, n: 10, concurrency: 4,
		idleFirst: 300 * time.Millisecond, hold: 2500 * time.Millisecond,
		trafficDst: netip.MustParseAddr("10.244.1.20"), watchPID: os.Getpid(), dialTimeout: 5 * time.Second}
	res := run(o, io.Discard)
	if res.Established != 10 || res.Failed != 0 || !res.AllStayedUp || res.SessionsAliveAtEnd != 10 {
		t.Fatalf("%+v", res)
	}
	if res.HandshakesPerS <= 0 || res.SetupMS.P50 <= 0 || res.SetupMS.P99 < res.SetupMS.P50 {
		t.Fatalf("setup figures: %+v %+v", res.HandshakesPerS, res.SetupMS)
	}
	// 3 ticks in 2.5 s (at 0, 1 and 2 s) for 10 sessions
	if res.PacketsSent != 30 {
		t.Errorf("packets sent %d, want 30", res.PacketsSent)
	}
	deadline := time.Now().Add(2 * time.Second)
	for f.good.Load() < int64(res.PacketsSent) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.good.Load() != int64(res.PacketsSent) || f.bad.Load() != 0 {
		t.Errorf("server got %d good, %d bad packets; sent %d", f.good.Load(), f.bad.Load(), res.PacketsSent)
	}
	for _, phase := range []string{"before", "established", "idle", "end"} {
		if res.WatchRSS[phase].RSSKiB == 0 {
			t.Errorf("no RSS sample at %s: %+v", phase, res.WatchRSS)
		}
	}

	// Keys the server does not know fail the handshake and are reported.
	o.keys, o.n = keys[8:], 4
	o.idleFirst, o.hold, o.trafficDst = 0, 0, netip.Addr{}
	res = run(o, io.Discard)
	if res.Established != 2 || res.Failed != 2 || res.AllStayedUp || len(res.FailedErrors) == 0 {
		t.Fatalf("unknown keys: %+v", res)
	}
	if !strings.Contains(res.FailedErrors[0], "handshake") {
		t.Errorf("failed errors %q", res.FailedErrors)
	}
}

// A session the server drops during the hold is counted as ended.
func TestRunDetectsEndedSession(t *testing.T) {
	keys := genKeys(t, 5)
	f := startFake(t, keys, 3)
	o := options{server: f.ln.Addr().String(), serverKey: f.key.Public(), keys: keys, n: 5, concurrency: 5,
		hold: 1200 * time.Millisecond, dialTimeout: 5 * time.Second}
	res := run(o, io.Discard)
	if res.Established != 5 || res.SessionsEnded != 1 || res.SessionsAliveAtEnd != 4 || res.AllStayedUp {
		t.Fatalf("%+v", res)
	}
	if len(res.EndedErrors) != 1 || !strings.HasPrefix(res.EndedErrors[0], peerName(3)+": ") {
		t.Errorf("ended errors %q", res.EndedErrors)
	}
}
