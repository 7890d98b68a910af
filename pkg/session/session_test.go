package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func mustKey(t testing.TB) secure.PrivateKey {
	t.Helper()
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// blackhole is a net.Conn whose writes can be made to vanish without an
// error, like a path that silently stopped delivering.
type blackhole struct {
	net.Conn
	drop atomic.Bool
}

func (b *blackhole) Write(p []byte) (int, error) {
	if b.drop.Load() {
		return len(p), nil
	}
	return b.Conn.Write(p)
}

// sealed returns both ends of a loopback TCP connection after the Noise
// handshake; the client's raw conn is wrapped in a blackhole (no longer a
// socket, so Send queues every packet).
func sealed(t testing.TB) (*secure.Conn, *secure.Conn, *blackhole) {
	t.Helper()
	var bh *blackhole
	cc, sc := sealedTCP(t, func(c net.Conn) net.Conn {
		bh = &blackhole{Conn: c}
		return bh
	})
	return cc, sc, bh
}

// sealedTCP returns both ends of a loopback TCP connection after the Noise
// handshake, the client's raw conn wrapped by wrap (nil: as it is).
func sealedTCP(t testing.TB, wrap func(net.Conn) net.Conn) (*secure.Conn, *secure.Conn) {
	t.Helper()
	ck, sk := mustKey(t), mustKey(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   *secure.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- result{nil, err}
			return
		}
		c, _, err := secure.Server(raw, secure.ServerConfig{Private: sk, Authorize: func(k secure.PublicKey, _ uint64) error {
			if k != ck.Public() {
				return secure.ErrUnknownPeer
			}
			return nil
		}})
		if err != nil {
			raw.Close()
		}
		done <- result{c, err}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn := raw
	if wrap != nil {
		conn = wrap(raw)
	}
	cc, err := secure.Client(conn, secure.ClientConfig{Private: ck, ServerKey: sk.Public()})
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		cc.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { cc.Close(); r.c.Close() })
	return cc, r.c
}

type pair struct {
	c, s   *Session
	cfg    *Msg // what the client got
	hello  *Msg // what the server got
	bh     *blackhole
	config *Msg // what the server sent
}

func testConfig() *Msg {
	return &Msg{Type: TypeConfig, Version: secure.ProtocolVersion, Address: "100.64.240.2/24", Gateway: "100.64.240.1",
		MTU: 1400, Routes: []string{"10.244.0.0/16", "10.96.0.0/12"}, KeepaliveMS: 50, DeadAfter: 3}
}

// newPair sets up a session: hello from the client, config from the server.
// Neither side runs yet.
func newPair(t testing.TB, config *Msg, clientQueue, serverQueue int) *pair {
	t.Helper()
	cc, sc, bh := sealed(t)
	p := setUp(t, cc, sc, config, clientQueue, serverQueue)
	p.bh = bh
	return p
}

// newDirectPair is newPair over a plain TCP connection: the client's Send
// writes directly when it can (as gtun's does), and there is no blackhole.
func newDirectPair(t testing.TB, config *Msg, clientQueue, serverQueue int) *pair {
	t.Helper()
	cc, sc := sealedTCP(t, nil)
	return setUp(t, cc, sc, config, clientQueue, serverQueue)
}

// sealedPipe returns both ends of an in-memory connection (net.Pipe) after
// the Noise handshake, the raw ends wrapped by wrapClient and wrapServer
// (nil: as they are):
// unlike sealed, it runs inside a synctest bubble.
func sealedPipe(t testing.TB, wrapClient, wrapServer func(net.Conn) net.Conn) (*secure.Conn, *secure.Conn) {
	t.Helper()
	ck, sk := mustKey(t), mustKey(t)
	craw, sraw := net.Pipe()
	if wrapClient != nil {
		craw = wrapClient(craw)
	}
	if wrapServer != nil {
		sraw = wrapServer(sraw)
	}
	done := make(chan *secure.Conn, 1)
	go func() {
		c, _, err := secure.Server(sraw, secure.ServerConfig{Private: sk, Authorize: func(secure.PublicKey, uint64) error { return nil }})
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	cc, err := secure.Client(craw, secure.ClientConfig{Private: ck, ServerKey: sk.Public()})
	sc := <-done
	if err != nil || sc == nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); sc.Close() })
	return cc, sc
}

// setUp runs hello and config over cc (the client's) and sc.
func setUp(t testing.TB, cc, sc *secure.Conn, config *Msg, clientQueue, serverQueue int) *pair {
	t.Helper()
	p := &pair{config: config}
	type result struct {
		s   *Session
		m   *Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, m, err := Dial(context.Background(), cc, &Msg{Type: TypeHello, Version: secure.ProtocolVersion, Name: "vm-1"}, clientQueue, quiet)
		done <- result{s, m, err}
	}()
	s, hello, err := Accept(sc, serverQueue, quiet)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.SendControl(config); err != nil {
		t.Fatalf("send config: %v", err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("Dial: %v", r.err)
	}
	t.Cleanup(func() { r.s.Close() })
	p.c, p.cfg, p.s, p.hello = r.s, r.m, s, hello
	return p
}

// run runs s.Run in the background. wait(d) waits up to d for it to return
// and reports its result; wait(0) only looks.
//
// In a synctest bubble, pass a context the test does not end: a client's
// Run says goodbye when its context ends, and the test's own context ends
// as the bubble's main goroutine returns, when the write (delayed by a
// slowConn) would outlive the bubble. The cleanup's Close ends Run.
func run(t testing.TB, ctx context.Context, s *Session, h Handlers) (wait func(time.Duration) (error, bool)) {
	t.Helper()
	done := make(chan struct{})
	var res error
	go func() {
		res = s.Run(ctx, h)
		close(done)
	}()
	t.Cleanup(func() {
		s.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after Close")
		}
	})
	return func(d time.Duration) (error, bool) {
		if d <= 0 {
			select {
			case <-done:
				return res, true
			default:
				return nil, false
			}
		}
		select {
		case <-done:
			return res, true
		case <-time.After(d):
			return nil, false
		}
	}
}

func TestHelloAndConfig(t *testing.T) {
	cfg := testConfig()
	p := newPair(t, cfg, 0, 0)
	if p.hello.Type != TypeHello || p.hello.Name != "vm-1" || p.hello.Version != secure.ProtocolVersion {
		t.Errorf("server got hello %+v", p.hello)
	}
	if fmt.Sprint(*p.cfg) != fmt.Sprint(*cfg) {
		t.Errorf("client got config\n  %+v\nwant\n  %+v", *p.cfg, *cfg)
	}
	if p.c.keepalive != 50*time.Millisecond || p.c.deadAfter != 3 {
		t.Errorf("client keepalive %v dead_after %d, want the pushed 50ms and 3", p.c.keepalive, p.c.deadAfter)
	}
	if p.s.RemoteAddr() == nil || p.c.RemoteAddr() == nil {
		t.Error("no remote address")
	}
}

func TestDialRefused(t *testing.T) {
	cc, sc, _ := sealed(t)
	done := make(chan error, 1)
	go func() {
		_, _, err := Dial(context.Background(), cc, &Msg{Type: TypeHello}, 0, quiet)
		done <- err
	}()
	s, _, err := Accept(sc, 0, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The client may close as soon as it has read this, and the write can
	// then be reported as failed: only the client's view counts.
	_ = s.SendControl(&Msg{Type: TypeError, Error: "peer sz-ecs-1 is disabled"})
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "peer sz-ecs-1 is disabled") {
		t.Errorf("Dial = %v, want the server's reason", err)
	}
}

func TestAcceptWantsHello(t *testing.T) {
	cc, sc, _ := sealed(t)
	go func() {
		s, _, err := Dial(context.Background(), cc, &Msg{Type: TypePing}, 0, quiet)
		if err == nil {
			s.Close()
		}
	}()
	s, _, err := Accept(sc, 0, quiet)
	if err == nil {
		s.Close()
		t.Fatal("Accept took a ping for a hello")
	}
	if !strings.Contains(err.Error(), "expected hello") {
		t.Errorf("Accept = %v", err)
	}
}

// fill writes a recognizable pattern for packet i of size n.
func fill(b []byte, i int) {
	for j := range b {
		b[j] = byte(i*7 + j*13 + j>>8)
	}
}

var sizes = []int{1, 20, 40, 64, 576, 1280, 1400, 1500, 4096, 9000, 16384, 32768, 65534, packet.MaxSize}

func TestPacketsBothWays(t *testing.T) {
	const n = 300
	// Keepalives share the connection with the bulk data and queue behind
	// it; long intervals keep this test about data, even under -race.
	cfg := testConfig()
	cfg.KeepaliveMS, cfg.DeadAfter = 5000, 10
	p := newDirectPair(t, cfg, n, n)
	ctx := t.Context()
	toServer := make(chan []byte, n)
	toClient := make(chan []byte, n)
	collect := func(ch chan []byte) func([]byte) {
		return func(pkt []byte) { ch <- bytes.Clone(pkt) }
	}
	ws := run(t, ctx, p.s, Handlers{Packet: collect(toServer)})
	wc := run(t, ctx, p.c, Handlers{Packet: collect(toClient)})

	size := func(i int) int { return sizes[i%len(sizes)] }
	var wantBytes uint64
	for i := range n {
		wantBytes += uint64(size(i))
	}
	send := func(push func(*packet.Buf) error) {
		for i := range n {
			b := packet.Get()
			b.N = size(i)
			fill(b.Bytes(), i)
			if err := push(b); err != nil {
				t.Errorf("packet %d dropped: %v", i, err)
			}
		}
	}
	var wg sync.WaitGroup
	// The client sends as gtun does (Send: written directly when nothing is
	// in flight), the server through its queue; order must hold either way.
	wg.Go(func() { send(p.c.Send) })
	wg.Go(func() { send(p.s.Enqueue) })
	wg.Wait()

	check := func(dir string, ch chan []byte) {
		want := make([]byte, packet.MaxSize)
		for i := range n {
			select {
			case got := <-ch:
				w := want[:size(i)]
				fill(w, i)
				if !bytes.Equal(got, w) {
					t.Fatalf("%s: packet %d: got %d bytes, want %d (or content differs)", dir, i, len(got), len(w))
				}
			case <-time.After(10 * time.Second):
				serr, sdone := ws(0)
				cerr, cdone := wc(0)
				t.Fatalf("%s: packet %d did not arrive (server ended %v: %v; client ended %v: %v)", dir, i, sdone, serr, cdone, cerr)
			}
		}
	}
	check("client->server", toServer)
	check("server->client", toClient)

	for name, s := range map[string]*Session{"client": p.c, "server": p.s} {
		st := &s.Stats
		if st.TxPackets.Load() != n || st.RxPackets.Load() != n || st.TxBytes.Load() != wantBytes ||
			st.RxBytes.Load() != wantBytes || st.QueueDrops.Load() != 0 {
			t.Errorf("%s stats: tx %d/%d rx %d/%d drops %d; want %d packets, %d bytes each way, no drops", name,
				st.TxPackets.Load(), st.TxBytes.Load(), st.RxPackets.Load(), st.RxBytes.Load(), st.QueueDrops.Load(), n, wantBytes)
		}
	}
}

func TestEnqueueFullQueueDrops(t *testing.T) {
	// A session whose writer is not draining (as when the path is slow):
	// the bounded queue takes two, drops and counts the rest.
	s := &Session{queue: make(chan *packet.Buf, 2)}
	for i := range 5 {
		b := packet.Get()
		b.N = 100 + i
		err := s.Enqueue(b)
		if want := i < 2; (err == nil) != want || (err != nil && !errors.Is(err, ErrQueueFull)) {
			t.Errorf("Enqueue #%d = %v, want accepted %v (else ErrQueueFull)", i, err, want)
		}
	}
	if d := s.Stats.QueueDrops.Load(); d != 3 {
		t.Errorf("QueueDrops = %d, want 3", d)
	}
	if n := s.inflight.Load(); n != 2 {
		t.Errorf("inflight = %d, want the 2 queued", n)
	}
	for range 2 {
		if b := <-s.queue; b.N != 100 && b.N != 101 {
			t.Errorf("queued a dropped packet of %d bytes", b.N)
		}
	}
}

const (
	keepalive = 50 * time.Millisecond
	deadAfter = 3
)

// slowConn delays each write by delay: a path with that latency one way.
// In a synctest bubble the delay is exact.
type slowConn struct {
	net.Conn
	delay time.Duration
}

func (c *slowConn) Write(p []byte) (int, error) {
	time.Sleep(c.delay)
	return c.Conn.Write(p)
}

// The client measures the keepalive round trip (here exactly twice the
// path's one-way delay) and reports it to the server in its pings; the
// server records when it last saw one.
func TestKeepaliveRTT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const oneWay = 7 * time.Millisecond
		slow := func(c net.Conn) net.Conn { return &slowConn{Conn: c, delay: oneWay} }
		cc, sc := sealedPipe(t, slow, slow)
		p := setUp(t, cc, sc, testConfig(), 0, 0)
		p.s.SetKeepalive(keepalive, deadAfter)
		if p.c.RTT() != 0 || !p.s.LastKeepalive().IsZero() {
			t.Fatal("RTT or keepalive before any ping")
		}
		run(t, context.Background(), p.s, Handlers{})
		run(t, context.Background(), p.c, Handlers{})
		time.Sleep(keepalive + 2*oneWay + time.Millisecond) // the first ping and its pong
		synctest.Wait()
		if rtt := p.c.RTT(); rtt != 2*oneWay {
			t.Errorf("client's RTT %v, want %v", rtt, 2*oneWay)
		}
		time.Sleep(keepalive) // the next ping carries it
		synctest.Wait()
		if rtt := p.s.RTT(); rtt != 2*oneWay {
			t.Errorf("server's RTT (the client's report) %v, want %v", rtt, 2*oneWay)
		}
		if since := time.Since(p.s.LastKeepalive()); since > keepalive {
			t.Errorf("server saw the last ping %v ago, with one every %v", since, keepalive)
		}
	})
}

// A session whose peer keeps pinging stays up far past deadAfter
// intervals, however long.
func TestKeepaliveKeepsSessionAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cc, sc := sealedPipe(t, nil, nil)
		p := setUp(t, cc, sc, testConfig(), 0, 0)
		p.s.SetKeepalive(keepalive, deadAfter)
		ws := run(t, context.Background(), p.s, Handlers{})
		wc := run(t, context.Background(), p.c, Handlers{})
		time.Sleep(time.Minute) // 1,200 intervals
		synctest.Wait()
		if err, done := ws(0); done {
			t.Errorf("server session ended: %v", err)
		}
		if err, done := wc(0); done {
			t.Errorf("client session ended: %v", err)
		}
		if since := time.Since(p.s.LastKeepalive()); since > keepalive {
			t.Errorf("server saw the last ping %v ago", since)
		}
	})
}

// A client that never pings: the server declares the session dead at the
// first keepalive tick more than deadAfter intervals after the client's
// last record (its hello), and not a tick before.
func TestServerDeadWhenClientNeverPings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cc, sc := sealedPipe(t, nil, nil)
		p := setUp(t, cc, sc, testConfig(), 0, 0)
		p.s.SetKeepalive(keepalive, deadAfter)
		heard := p.s.LastRecv()
		wait := run(t, context.Background(), p.s, Handlers{})
		time.Sleep(deadAfter * keepalive)
		synctest.Wait()
		if err, done := wait(0); done {
			t.Fatalf("dead after %v, at deadAfter intervals: %v", time.Since(heard), err)
		}
		time.Sleep(keepalive)
		synctest.Wait()
		err, done := wait(0)
		if !done {
			t.Fatalf("still up %v after the client's last word", time.Since(heard))
		}
		if !errors.Is(err, ErrDead) {
			t.Fatalf("Run = %v, want ErrDead", err)
		}
	})
}

// The client's path to the server silently stops delivering: the server
// sees no keepalive and ends with ErrDead within deadAfter+1 intervals of
// the last one, then the client, whose connection the server closed.
func TestDeadAfterBlackhole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The client is told to wait longer than the server, so that the
		// server detects the silence itself rather than seeing the client
		// hang up.
		cfg := testConfig()
		cfg.DeadAfter = 10 * deadAfter
		var bh *blackhole
		cc, sc := sealedPipe(t, func(c net.Conn) net.Conn {
			bh = &blackhole{Conn: c}
			return bh
		}, nil)
		p := setUp(t, cc, sc, cfg, 0, 0)
		p.s.SetKeepalive(keepalive, deadAfter)
		ws := run(t, context.Background(), p.s, Handlers{})
		wc := run(t, context.Background(), p.c, Handlers{})
		time.Sleep(5*keepalive + keepalive/2)
		synctest.Wait()
		if err, done := ws(0); done {
			t.Fatalf("server session ended before the blackhole: %v", err)
		}
		bh.drop.Store(true)
		lastPing := p.s.LastKeepalive()
		time.Sleep(deadAfter*keepalive + keepalive)
		synctest.Wait()
		err, done := ws(0)
		if !done {
			t.Fatalf("server session still up %v after the last ping", time.Since(lastPing))
		}
		if !errors.Is(err, ErrDead) {
			t.Errorf("server Run = %v, want ErrDead", err)
		}
		if err, done := wc(0); !done || err == nil {
			t.Errorf("client session: ended %v, Run = %v; want it ended with an error", done, err)
		}
	})
}

// A client whose Run ends by its context (gtun stops) says goodbye: the
// server's Run ends at once with why, not dead_after keepalives later.
func TestClientSaysGoodbye(t *testing.T) {
	p := newPair(t, testConfig(), 0, 0)
	p.s.SetKeepalive(time.Hour, deadAfter)
	ctx, cancel := context.WithCancel(t.Context())
	wc := run(t, ctx, p.c, Handlers{})
	ws := run(t, t.Context(), p.s, Handlers{})
	cancel()
	if err, done := wc(5 * time.Second); !done || err != nil {
		t.Errorf("client Run after cancel = %v (returned %v), want nil", err, done)
	}
	err, done := ws(5 * time.Second)
	if !done || err == nil || !strings.Contains(err.Error(), "gtun stopped") {
		t.Errorf("server Run after the client's goodbye = %v (returned %v), want the goodbye", err, done)
	}
}

func TestCancelEndsRunCleanly(t *testing.T) {
	p := newPair(t, testConfig(), 0, 0)
	ctx, cancel := context.WithCancel(t.Context())
	ws := run(t, ctx, p.s, Handlers{})
	wc := run(t, t.Context(), p.c, Handlers{})
	time.Sleep(2 * keepalive)
	cancel()
	if err, done := ws(5 * time.Second); !done || err != nil {
		t.Errorf("server Run after cancel = %v (returned %v), want nil", err, done)
	}
	if err, done := wc(5 * time.Second); !done || err == nil {
		t.Errorf("client Run after the server left = %v (returned %v), want an error", err, done)
	}
}

func TestControlMessages(t *testing.T) {
	p := newPair(t, testConfig(), 0, 0)
	got := make(chan *Msg, 4)
	wc := run(t, t.Context(), p.c, Handlers{Control: func(m *Msg) { got <- m }})
	run(t, t.Context(), p.s, Handlers{})
	update := testConfig()
	update.Routes = []string{"10.244.0.0/16"}
	if err := p.s.SendControl(update); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Type != TypeConfig || len(m.Routes) != 1 || m.Routes[0] != "10.244.0.0/16" {
			t.Errorf("client got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("updated config not delivered")
	}
	// An error message ends the session with the peer's reason.
	if err := p.s.SendControl(&Msg{Type: TypeError, Error: "server shutting down"}); err != nil {
		t.Fatal(err)
	}
	err, done := wc(5 * time.Second)
	if !done || err == nil || !strings.Contains(err.Error(), "server shutting down") {
		t.Errorf("client Run = %v (returned %v), want the server's reason", err, done)
	}
	for m := range len(got) {
		t.Errorf("unexpected control message #%d passed to the handler", m)
	}
}

// The client's send keys live as long as the server's config says, from
// the first config on and again after a pushed change; the server's as
// long as it is told. Both rotate on an idle session (keepalives carry the
// updates) and each side follows the other's.
func TestRekeyIntervalPushed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.RekeyIntervalMS = 1000
		cc, sc := sealedPipe(t, nil, nil)
		p := setUp(t, cc, sc, cfg, 0, 0)
		p.s.SetRekeyInterval(2 * time.Second)
		if got := cc.RekeyInterval(); got != time.Second {
			t.Fatalf("client's interval %v after the config, want 1s", got)
		}
		got := make(chan *Msg, 1)
		run(t, context.Background(), p.c, Handlers{Control: func(m *Msg) { got <- m }})
		run(t, context.Background(), p.s, Handlers{})
		check := func(when string, clientMin, clientMax, serverMin, serverMax uint64) {
			t.Helper()
			synctest.Wait() // every record written is read
			c, s := p.c.Rekeys(), p.s.Rekeys()
			if c.Sent < clientMin || c.Sent > clientMax || s.Sent < serverMin || s.Sent > serverMax || c.Sent != s.Received || s.Sent != c.Received {
				t.Fatalf("%s: client %+v, server %+v; want the client to send %d..%d, the server %d..%d, each to receive what the other sent",
					when, c, s, clientMin, clientMax, serverMin, serverMax)
			}
		}
		time.Sleep(10*time.Second + 10*time.Millisecond)
		check("after 10s", 9, 10, 4, 5)
		if age := p.c.KeyAge(); age > time.Second+50*time.Millisecond {
			t.Fatalf("client's key is %v old with a 1s interval and a ping every 50ms", age)
		}

		update := testConfig()
		update.RekeyIntervalMS = 5000
		if err := p.s.SendControl(update); err != nil {
			t.Fatal(err)
		}
		if m := <-got; m.RekeyIntervalMS != 5000 {
			t.Fatalf("handler got %+v", m)
		}
		if got := cc.RekeyInterval(); got != 5*time.Second {
			t.Fatalf("client's interval %v after the push, want 5s", got)
		}
		before := p.c.Rekeys().Sent
		time.Sleep(20 * time.Second)
		if n := p.c.Rekeys().Sent - before; n < 3 || n > 4 {
			t.Fatalf("client rekeyed %d times in 20s with a 5s interval", n)
		}
		check("after 30s", 12, 14, 14, 15)
	})
}

// Send never waits on the connection, which gtun's one TUN reader shares
// with every other server: with the peer no longer reading (its handler
// holds its reader, so both socket buffers fill), every Send returns at
// once; packets beyond the socket's and the queue's room are dropped and
// counted. Once the peer reads again, every packet Send took arrives, once
// and in order.
func TestSendNeverWaitsOnAStalledPath(t *testing.T) {
	cfg := testConfig()
	cfg.KeepaliveMS, cfg.DeadAfter = 5000, 10
	const queue, n, size = 64, 3000, 60000
	p := newDirectPair(t, cfg, queue, 0)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	got := make(chan int, n)
	run(t, t.Context(), p.s, Handlers{Packet: func(pkt []byte) {
		<-release
		got <- int(pkt[0])<<16 | int(pkt[1])<<8 | int(pkt[2])
	}})
	run(t, t.Context(), p.c, Handlers{})

	var progress atomic.Int64 // when the last Send returned, unix nanoseconds
	progress.Store(time.Now().UnixNano())
	var accepted []int
	var slowest time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			b := packet.Get()
			b.N = size
			b.B[0], b.B[1], b.B[2] = byte(i>>16), byte(i>>8), byte(i)
			start := time.Now()
			if p.c.Send(b) == nil {
				accepted = append(accepted, i)
			}
			slowest = max(slowest, time.Since(start))
			progress.Store(time.Now().UnixNano())
		}
	}()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-time.After(100 * time.Millisecond):
			if stuck := time.Since(time.Unix(0, progress.Load())); stuck > 2*time.Second {
				unblock()
				<-done
				t.Fatalf("Send blocked for %v on a stalled path", stuck)
			}
		}
	}
	drops := p.c.Stats.QueueDrops.Load()
	t.Logf("%d of %d packets of %d bytes taken, %d dropped (queue full); slowest Send %v", len(accepted), n, size, drops, slowest)
	if drops == 0 || int(drops)+len(accepted) != n {
		t.Fatalf("%d dropped and %d taken of %d: the path never stalled, or a packet went missing", drops, len(accepted), n)
	}

	unblock()
	for _, want := range accepted {
		select {
		case i := <-got:
			if i != want {
				t.Fatalf("received packet %d, want %d (order, or a lost packet)", i, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("packet %d did not arrive", want)
		}
	}
	select {
	case i := <-got:
		t.Fatalf("packet %d arrived but was counted as dropped", i)
	case <-time.After(100 * time.Millisecond):
	}
}

// Send's direct write allocates nothing per packet.
func TestSendAllocs(t *testing.T) {
	cfg := testConfig()
	cfg.KeepaliveMS, cfg.DeadAfter = 5000, 10
	p := newDirectPair(t, cfg, 0, 0)
	var received atomic.Int64
	run(t, t.Context(), p.s, Handlers{Packet: func([]byte) { received.Add(1) }})
	run(t, t.Context(), p.c, Handlers{})
	send := func() {
		b := packet.Get()
		b.N = 1400
		p.c.Send(b)
	}
	for range 100 { // the pools fill
		send()
	}
	if n := testing.AllocsPerRun(2000, send); n != 0 {
		t.Errorf("%v allocations per packet", n)
	}
	if tx := p.c.Stats.TxPackets.Load(); tx != 2101 {
		t.Errorf("%d packets sent, want 2101", tx)
	}
}

// refusingDatagrams is a datagram path that refuses every frame.
type refusingDatagrams struct{ err error }

func (r refusingDatagrams) SendFrame([]byte) error        { return r.err }
func (r refusingDatagrams) SendFrameMore([]byte) error    { return r.err }
func (r refusingDatagrams) SendHeld() error               { return nil }
func (refusingDatagrams) SetReceiver(func(frame []byte))  {}
func (refusingDatagrams) Rekeys() (sent, received uint64) { return 0, 0 }

// holdingDatagrams counts what is asked of a datagram path that holds.
type holdingDatagrams struct {
	refusingDatagrams
	held *[]string // names of the sessions whose held datagrams were sent, in order
	name string
}

func (h holdingDatagrams) SendHeld() error { *h.held = append(*h.held, h.name); return nil }

// Held sends what the last session held when the reader turns to another
// and on Flush, never for the session it keeps sending to.
func TestHeld(t *testing.T) {
	var sent []string
	a, b := &Session{}, &Session{}
	a.UseDatagrams(holdingDatagrams{held: &sent, name: "a"})
	b.UseDatagrams(holdingDatagrams{held: &sent, name: "b"})
	var h Held
	h.To(a)
	h.To(a)
	h.To(b)
	h.To(b)
	h.To(a)
	h.Flush()
	h.Flush()
	if got, want := strings.Join(sent, " "), "a b a"; got != want {
		t.Errorf("held sent by %q, want %q", got, want)
	}
}

func TestDatagramsRefusedIsNotQueueFull(t *testing.T) {
	// A frame the datagram path refuses (a packet larger than a datagram
	// carries) comes back with the path's error, counted as a send error:
	// there is no queue to be full on that path.
	tooBig := errors.New("packet larger than a datagram carries")
	s := &Session{}
	s.UseDatagrams(refusingDatagrams{tooBig})
	for _, send := range []func(*packet.Buf) error{s.Send, s.Enqueue} {
		b := packet.Get()
		b.N = 100
		if err := send(b); !errors.Is(err, tooBig) || errors.Is(err, ErrQueueFull) {
			t.Errorf("send = %v, want the path's error", err)
		}
	}
	if n, q := s.Stats.SendErrors.Load(), s.Stats.QueueDrops.Load(); n != 2 || q != 0 {
		t.Errorf("SendErrors = %d, QueueDrops = %d; want 2, 0", n, q)
	}
}

// Each way Send and Enqueue refuse a frame has its reason, wrapped or not;
// anything else is the transport's refusal.
func TestSendDropsFor(t *testing.T) {
	d := SendDrops[string]{QueueFull: "queue_full", BadOffload: "bad_offload", Malformed: "malformed", Other: "send_error"}
	for _, c := range []struct {
		err  error
		want string
	}{
		{ErrQueueFull, "queue_full"},
		{fmt.Errorf("segment: %w", packet.ErrBadVnetHdr), "bad_offload"},
		{packet.ErrMalformed, "malformed"},
		{errors.New("packet larger than a datagram carries"), "send_error"},
	} {
		if got := d.For(c.err); got != c.want {
			t.Errorf("For(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}
