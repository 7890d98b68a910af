package dgram

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/secure"
)

type testServer struct {
	l       *Listener
	r       *secure.Responder
	pub     secure.PublicKey
	client  secure.PrivateKey
	mu      sync.Mutex
	refused []error
}

func mustKey(t testing.TB) secure.PrivateKey {
	t.Helper()
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// listen starts a listener on loopback whose responder knows one client key.
func listen(t *testing.T) *testServer {
	t.Helper()
	srvKey, cliKey := mustKey(t), mustKey(t)
	ts := &testServer{pub: srvKey.Public(), client: cliKey}
	known := cliKey.Public()
	var lastTS uint64
	var mu sync.Mutex
	ts.r = secure.NewResponder(secure.ServerConfig{Private: srvKey, Authorize: func(k secure.PublicKey, stamp uint64) error {
		mu.Lock()
		defer mu.Unlock()
		if k != known {
			return secure.ErrUnknownPeer
		}
		if stamp <= lastTS {
			return secure.ErrReplay
		}
		lastTS = stamp
		return nil
	}})
	l, err := Listen("127.0.0.1:0", ListenConfig{Responder: ts.r, Refused: func(err error, _ netip.AddrPort) {
		ts.mu.Lock()
		ts.refused = append(ts.refused, err)
		ts.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ts.l = l
	return ts
}

func (ts *testServer) dialConfig(key secure.PrivateKey) DialConfig {
	return DialConfig{Handshake: secure.ClientConfig{Private: key, ServerKey: ts.pub}, Retry: 200 * time.Millisecond, Timeout: 3 * time.Second}
}

func (ts *testServer) accept(t *testing.T) *Session {
	t.Helper()
	got := make(chan *Session, 1)
	go func() {
		s, err := ts.l.Accept()
		if err == nil {
			got <- s
		}
	}()
	select {
	case s := <-got:
		t.Cleanup(func() { s.Close() })
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no session accepted")
		return nil
	}
}

// readPayload reads one payload from a session's PacketConn, or fails.
func readPayload(t *testing.T, pc *PacketConn) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		b := make([]byte, MaxStreamPayload)
		n, _, err := pc.ReadFrom(b)
		if err == nil {
			got <- string(b[:n])
		}
	}()
	select {
	case s := <-got:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no payload")
		return ""
	}
}

// The whole way: handshake, then payloads both ways; the server knows the
// client's key and both sides derive the same stream keys.
func TestDialAndAccept(t *testing.T) {
	ts := listen(t)
	cli, err := Dial(context.Background(), ts.l.Addr().String(), ts.dialConfig(ts.client))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srv := ts.accept(t)
	if srv.Peer() != ts.client.Public() {
		t.Fatalf("server session's peer %v, want the client's key", srv.Peer())
	}
	ck, sk := cli.StreamKeys(), srv.StreamKeys()
	if ck.Send != sk.Recv || ck.Recv != sk.Send || ck.Send == ck.Recv || ck.Cipher != sk.Cipher {
		t.Fatal("stream keys do not pair up")
	}
	cpc, spc := cli.PacketConn(), srv.PacketConn()
	if _, err := cpc.WriteTo([]byte("ping"), nil); err != nil {
		t.Fatal(err)
	}
	if got := readPayload(t, spc); got != "ping" {
		t.Fatalf("server read %q", got)
	}
	if _, err := spc.WriteTo([]byte("pong"), nil); err != nil {
		t.Fatal(err)
	}
	if got := readPayload(t, cpc); got != "pong" {
		t.Fatalf("client read %q", got)
	}
	if c := ts.r.Counts(); c.DHForStrangers != 0 || c.DH["authenticated"] != 1 {
		t.Fatalf("responder counts %+v", c)
	}
	if n := ts.l.Stats().Sessions; n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	srv.Close()
	if n := ts.l.Stats().Sessions; n != 0 {
		t.Fatalf("%d sessions after close, want 0", n)
	}
}

// rawClient is a UDP socket that sends what the test wants to the listener
// and reports whether anything came back.
type rawClient struct {
	t *testing.T
	c *net.UDPConn
}

func newRawClient(t *testing.T, ts *testServer) *rawClient {
	c, err := net.DialUDP("udp", nil, ts.l.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c}
}

func (r *rawClient) send(b []byte) {
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// answer returns what came back within d, or nil.
func (r *rawClient) answer(d time.Duration) []byte {
	_ = r.c.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, 4096)
	n, err := r.c.Read(b)
	if err != nil {
		return nil
	}
	return b[:n]
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// Everything that is not authenticated is dropped, counted and answered
// with silence, and leaves no session behind: garbage of every type,
// initiations without a valid mac1 (a stranger who does not know the
// server's key), data for unknown indexes, responses and cookie replies.
func TestDemuxDropsWithoutStateOrReply(t *testing.T) {
	ts := listen(t)
	rc := newRawClient(t, ts)
	stranger := mustKey(t)
	_, first, err := secure.Initiate(secure.ClientConfig{Private: stranger, ServerKey: mustKey(t).Public()}) // another server's key: bad mac1
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 200)
	putHeader(data, TypeData)
	putIndex(data[headerLen:], 12345)
	cases := []struct {
		name   string
		d      []byte
		reason DropReason
	}{
		{"empty-ish", []byte{1}, DropMalformed},
		{"unknown type", append([]byte{9, 0, 0, 0}, random(100)...), DropMalformed},
		{"reserved bytes set", append([]byte{TypeInitiation, 1, 0, 0}, random(150)...), DropMalformed},
		{"initiation too short", []byte{TypeInitiation, 0, 0, 0, 1, 2, 3, 4, 5}, DropMalformed},
		{"initiation, random bytes", append([]byte{TypeInitiation, 0, 0, 0}, random(160)...), DropBadMAC1},
		{"initiation for another server's key", appendInitiation(nil, 7, first), DropBadMAC1},
		{"data, unknown index", data, DropUnknownIndex},
		{"data, too short", data[:DataOverhead-1], DropMalformed},
		{"response", append([]byte{TypeResponse, 0, 0, 0}, random(80)...), DropUnsolicited},
		{"cookie reply", append([]byte{TypeCookieReply, 0, 0, 0}, random(60)...), DropUnsolicited},
		{"too large", append([]byte{TypeData, 0, 0, 0}, random(MaxDatagram)...), DropMalformed},
	}
	want := map[string]uint64{}
	for _, c := range cases {
		rc.send(c.d)
		want[c.reason.String()]++
	}
	if b := rc.answer(300 * time.Millisecond); b != nil {
		t.Fatalf("the listener answered %d bytes", len(b))
	}
	waitFor(t, func() error {
		got := ts.l.Stats().Dropped
		for reason, n := range want {
			if got[reason] != n {
				return fmt.Errorf("dropped %v, want %v", got, want)
			}
		}
		return nil
	})
	st := ts.l.Stats()
	if st.Sessions != 0 || st.Established != 0 {
		t.Fatalf("state after garbage: %+v", st)
	}
	if c := ts.r.Counts(); len(c.DH) != 0 {
		t.Fatalf("DH for garbage: %+v", c)
	}
}

func waitFor(t *testing.T, f func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	t.Fatal(err)
}

// A recorded initiation sent again (from anywhere) costs no DH: the
// responder's replay filter drops it, and nothing answers.
func TestReplayedInitiationCostsNoDH(t *testing.T) {
	ts := listen(t)
	_, first, err := secure.Initiate(secure.ClientConfig{Private: ts.client, ServerKey: ts.pub})
	if err != nil {
		t.Fatal(err)
	}
	d := appendInitiation(nil, 77, first)
	rc := newRawClient(t, ts)
	rc.send(d)
	if b := rc.answer(2 * time.Second); b == nil || b[0] != TypeResponse {
		t.Fatalf("no response to the first initiation: %v", b)
	}
	ts.accept(t)
	for range 50 {
		newRawClient(t, ts).send(d)      // other source ports: a replay from elsewhere
		time.Sleep(2 * time.Millisecond) // slowly: 32 queued at once is load, which a cookie would answer
	}
	rc.send(d)
	if b := rc.answer(300 * time.Millisecond); b != nil {
		t.Fatalf("a replayed initiation was answered (%d bytes)", len(b))
	}
	waitFor(t, func() error {
		if c := ts.r.Counts(); c.RefusedBeforeDH["duplicate"] != 51 {
			return fmt.Errorf("responder counts %+v, want 51 duplicates", c)
		}
		return nil
	})
	if c := ts.r.Counts(); c.DH["authenticated"] != 1 || c.DHForStrangers != 0 {
		t.Fatalf("DH for replays: %+v", c)
	}
	if n := ts.l.Stats().Sessions; n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
}

// Under load an initiation without mac2 gets a cookie reply and costs no
// DH; the client answers with mac2 and connects.
func TestCookieUnderLoad(t *testing.T) {
	ts := listen(t)
	ts.l.loadUntil.Store(time.Now().Add(time.Hour).UnixNano())
	_, first, err := secure.Initiate(secure.ClientConfig{Private: mustKey(t), ServerKey: ts.pub})
	if err != nil {
		t.Fatal(err)
	}
	rc := newRawClient(t, ts)
	rc.send(appendInitiation(nil, 5, first))
	b := rc.answer(2 * time.Second)
	if b == nil || b[0] != TypeCookieReply || len(b) != CookieReplyLen || index(b[headerLen:]) != 5 {
		t.Fatalf("no cookie reply: %v", b)
	}
	if c := ts.r.Counts(); len(c.DH) != 0 || len(c.RefusedBeforeDH) != 0 {
		t.Fatalf("an initiation without mac2 reached the responder under load: %+v", c)
	}

	// No retry within the dial's timeout: it connects only if it answers
	// the cookie reply at once (a clock would not say so on a loaded
	// machine, nor with a retry that comes soon after).
	cfg := ts.dialConfig(ts.client)
	cfg.Retry, cfg.Timeout = time.Hour, 30*time.Second
	start := time.Now()
	cli, err := Dial(context.Background(), ts.l.Addr().String(), cfg)
	if err != nil {
		t.Fatalf("dial under load with no retry: %v (the cookie reply was not answered at once)", err)
	}
	defer cli.Close()
	ts.accept(t)
	t.Logf("dialed under load in %v (cookie round trip included)", time.Since(start).Round(time.Millisecond))
	if got := ts.l.Stats().CookiesSent; got != 2 {
		t.Errorf("%d cookies sent, want 2", got)
	}
	if c := ts.r.Counts(); c.DH["authenticated"] != 1 || c.DHForStrangers != 0 {
		t.Fatalf("responder counts %+v", c)
	}
}

// A key the server does not know gets silence: the dial times out with an
// error that says so and is a timeout.
func TestDialUnknownKeyGetsSilence(t *testing.T) {
	ts := listen(t)
	cfg := ts.dialConfig(mustKey(t))
	cfg.Timeout = 2 * time.Second
	start := time.Now()
	_, err := Dial(context.Background(), ts.l.Addr().String(), cfg)
	var na *NoAnswerError
	if !errors.As(err, &na) || !errors.Is(err, secure.ErrNoAnswer) {
		t.Fatalf("dial with an unknown key: %v", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("not a timeout: %v", err)
	}
	// It gives up at the timeout, not before; the upper bound only says
	// it does not go on (a loaded machine can run it late).
	if d := time.Since(start); d < cfg.Timeout || d > cfg.Timeout+5*time.Second {
		t.Fatalf("gave up after %v, timeout %v", d, cfg.Timeout)
	}
	// Ten at the retry's pace; four even if every retry runs 250 ms late.
	if na.Attempts < 4 {
		t.Errorf("%d initiations in %v with retry %v", na.Attempts, cfg.Timeout, cfg.Retry)
	}
	if c := ts.r.Counts(); c.DH["unknown_peer"] != uint64(na.Attempts) {
		t.Errorf("responder counts %+v, want %d unknown_peer", c, na.Attempts)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.refused) != na.Attempts || !errors.Is(ts.refused[0], secure.ErrUnknownPeer) {
		t.Errorf("refusals reported: %v", ts.refused)
	}
}

func TestDialVersionMismatchInWords(t *testing.T) {
	ts := listen(t)
	cfg := ts.dialConfig(ts.client)
	cfg.Handshake.Version = secure.ProtocolVersion + 1
	cfg.Timeout = 15 * time.Second // the answer is what counts, not how fast (it failed once at 3 s, load average 8.7)
	_, err := Dial(context.Background(), ts.l.Addr().String(), cfg)
	var ve *secure.VersionError
	if !errors.As(err, &ve) {
		t.Fatalf("dial with another version: %v", err)
	}
}

// A datagram forged with a live session's index, from the client's own
// address and port, and replays of the client's real datagrams, change
// nothing: they are dropped and counted, and the session goes on.
func TestForgedAndReplayedDataDoNotDisturb(t *testing.T) {
	ts := listen(t)
	cli, err := Dial(context.Background(), ts.l.Addr().String(), ts.dialConfig(ts.client))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srv := ts.accept(t)
	cpc, spc := cli.PacketConn(), srv.PacketConn()

	// What the client sends, as an on-path observer captures it.
	var captured [][]byte
	orig := cli.xmit
	cli.xmit = func(b []byte, to netip.AddrPort) error {
		captured = append(captured, bytes.Clone(b))
		return orig(b, to)
	}
	for i := range 3 {
		cpc.WriteTo(fmt.Appendf(nil, "real %d", i), nil)
		if got := readPayload(t, spc); got != fmt.Sprintf("real %d", i) {
			t.Fatalf("read %q", got)
		}
	}
	// The attacker sends from the client's own socket: the same address
	// and port the server knows.
	conn := cli.sock
	for _, d := range captured {
		conn.Write(d) // replays
	}
	for i := range 20 {
		forged := bytes.Clone(captured[0])
		forged[DataHeaderLen+i%8] ^= 0xff // the counter stays, the tag fails
		binary8(forged, uint64(1000+i))
		conn.Write(forged)
	}
	cpc.WriteTo([]byte("after"), nil)
	if got := readPayload(t, spc); got != "after" {
		t.Fatalf("read %q after the attack", got)
	}
	waitFor(t, func() error {
		d := ts.l.Stats().Dropped
		if d[DropReplay.String()] != 3 || d[DropBadTag.String()] != 20 {
			return fmt.Errorf("dropped %v, want 3 replays and 20 bad tags", d)
		}
		return nil
	})
	// The reader counts a run's datagrams when it lets the session go,
	// after it has delivered them: wait for the count, not just the read.
	waitFor(t, func() error {
		if n := srv.Stats().RxDatagrams; n != 4 {
			return fmt.Errorf("server session opened %d datagrams, want 4", n)
		}
		return nil
	})
}

func binary8(d []byte, counter uint64) {
	for i := range 8 {
		d[headerLen+indexLen+i] = byte(counter >> (8 * i))
	}
}

// What a flood sends costs no allocation: garbage, initiations without a
// valid mac1, data for unknown indexes, and forged data for a live
// session (a counter never used, a tag that does not open).
func TestDemuxDropsDoNotAllocate(t *testing.T) {
	ts := listen(t)
	cli, err := Dial(context.Background(), ts.l.Addr().String(), ts.dialConfig(ts.client))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srv := ts.accept(t)
	from := netip.MustParseAddrPort("203.0.113.9:999")
	forged := make([]byte, 200)
	putHeader(forged, TypeData)
	putIndex(forged[headerLen:], srv.local)
	_, first, _ := secure.Initiate(secure.ClientConfig{Private: mustKey(t), ServerKey: mustKey(t).Public()})
	inputs := [][]byte{
		random(100),
		appendInitiation(nil, 3, first),
		append([]byte{TypeData, 0, 0, 0, 9, 9, 9, 9}, random(100)...),
		forged,
	}
	buf := make([]byte, 0, MaxDatagram)
	for _, in := range inputs {
		var counter uint64 = 1 << 20
		allocs := testing.AllocsPerRun(500, func() {
			d := append(buf[:0], in...)
			if d[0] == TypeData && index(d[headerLen:]) == srv.local {
				counter++
				binary.LittleEndian.PutUint64(d[headerLen+indexLen:], counter)
			}
			ts.l.route(d, from)
		})
		if allocs != 0 {
			t.Errorf("%.1f allocations per dropped datagram (type %d)", allocs, in[0])
		}
	}
	if got := ts.l.Stats().Dropped[DropBadTag.String()]; got < 500 {
		t.Fatalf("forged data for the live session: %d bad tags counted", got)
	}
}
