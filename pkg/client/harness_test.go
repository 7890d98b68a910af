package client

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/memconn"
	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/device/memdev"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/transport"
)

// The in-memory gtun: the real Client (its upstreams and their connect
// loops, the configs servers push, the route plan, the data plane) over a
// memdev TUN device. Its servers are gtunds in memory made of the real
// handshake and session (secure.Server, session.Accept) that push a
// config the test writes and hand the test the frames they receive; the
// client reaches them over socketpairs its dialer makes. Nothing of the
// host is touched: no netlink, no routes, no nftables, no root.

// wait bounds every wait of these tests for something that takes
// microseconds: only a broken data plane reaches it.
const wait = 5 * time.Second

// testLog is where the daemons under test log: nowhere, unless
// GTUN_TEST_LOG is set.
func testLog() *slog.Logger {
	if os.Getenv("GTUN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// memServer is a gtund in memory as gtun sees it.
type memServer struct {
	t         testing.TB
	name      string
	endpoint  string
	key       secure.PrivateKey
	clientKey secure.PublicKey
	got       chan []byte // frames it received
	// hold, when set, is waited on by the session's reader before each
	// frame it delivers: a server that stops reading (its socket buffers
	// fill, then gtun's queue for it).
	hold  chan struct{}
	down  atomic.Bool  // refuses connections
	ended atomic.Int32 // sessions that ended
	// gate, when set, holds every connection before the handshake until
	// it is closed: a server that answers late.
	gate chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	cfg      *session.Msg // pushed to every session
	sess     *session.Session
	sessions int
}

// newMemServer makes a server called name at endpoint that pushes cfg.
func newMemServer(t testing.TB, name, endpoint string, cfg *session.Msg) *memServer {
	t.Helper()
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &memServer{t: t, name: name, endpoint: endpoint, key: k, cfg: cfg, got: make(chan []byte, 4096)}
}

// pushed is the config a server pushes: addr (with the pool's length) as
// this client's tunnel address, gw as the server's, routes.
func pushed(addr, gw string, routes ...string) *session.Msg {
	return &session.Msg{Type: session.TypeConfig, Version: secure.ProtocolVersion, Address: addr, Gateway: gw, MTU: 1400,
		Routes: routes, KeepaliveMS: 60000, DeadAfter: 3}
}

// serve runs one connection: handshake, hello, config, then the session
// until it or the test ends.
func (s *memServer) serve(ctx context.Context, raw net.Conn) {
	defer s.wg.Done()
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			raw.Close()
			return
		}
	}
	sc, _, err := secure.Server(raw, secure.ServerConfig{Private: s.key, Authorize: func(k secure.PublicKey, _ uint64) error {
		if k != s.clientKey {
			return secure.ErrUnknownPeer
		}
		return nil
	}})
	if err != nil {
		raw.Close()
		return
	}
	sess, _, err := session.Accept(sc, 0, testLog())
	if err != nil {
		return
	}
	sess.SetKeepalive(time.Minute, 3)
	s.mu.Lock()
	cfg := s.cfg
	s.sess = sess
	s.sessions++
	s.mu.Unlock()
	if err := sess.SendControl(cfg); err != nil {
		sess.Close()
		return
	}
	defer s.ended.Add(1)
	_ = sess.Run(ctx, session.Handlers{Packet: func(f []byte) {
		if s.hold != nil {
			select {
			case <-s.hold:
			case <-ctx.Done():
				return
			}
		}
		select {
		case s.got <- slices.Clone(f):
		default:
			s.t.Errorf("%s: more frames than the test takes", s.name)
		}
	}})
}

// session is the server's current session.
func (s *memServer) session() *session.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess
}

// send sends frame to the client, as gtund's TUN reader does.
func (s *memServer) send(frame []byte) {
	b := packet.Get()
	b.N = copy(b.B, frame)
	if err := s.session().Enqueue(b); err != nil {
		s.t.Fatalf("%s: send: %v", s.name, err)
	}
}

// next waits for the next frame the server receives.
func (s *memServer) next() []byte {
	s.t.Helper()
	select {
	case f := <-s.got:
		return f
	case <-time.After(wait):
		s.t.Fatalf("no frame at %s", s.name)
		return nil
	}
}

// quiet reports that the server has received nothing (more).
func (s *memServer) quiet() bool {
	select {
	case f := <-s.got:
		s.t.Errorf("unexpected frame at %s: % x", s.name, f)
		return false
	default:
		return true
	}
}

// stop ends the server's session and refuses new ones until start.
func (s *memServer) stop() {
	s.down.Store(true)
	if sess := s.session(); sess != nil {
		sess.Close()
	}
}

func (s *memServer) start() { s.down.Store(false) }

type memClient struct {
	t       testing.TB
	c       *Client
	dev     *memdev.Device
	servers []*memServer
	ctx     context.Context // the client's run

	mu         sync.Mutex
	byEndpoint map[string]*memServer // what its dialer reaches: every server ever configured
}

// entry is s as a [[server]] of m.
func (m *memClient) entry(s *memServer) config.ServerEntry {
	return config.ServerEntry{Name: s.name, Endpoints: []string{s.endpoint}, Transport: transport.TCP, PublicKey: s.key.Public()}
}

// reconfigure makes servers the client's [[server]] list, as a reload of a
// file listing them would.
func (m *memClient) reconfigure(servers ...*memServer) {
	m.t.Helper()
	var entries []config.ServerEntry
	m.mu.Lock()
	for _, s := range servers {
		s.clientKey = m.c.cfg.PrivateKey.Public()
		m.byEndpoint[s.endpoint] = s
		entries = append(entries, m.entry(s))
	}
	m.mu.Unlock()
	m.c.applyServers(m.ctx, entries)
}

// newMemClient runs a gtun in memory with servers as its [[server]]s, in
// that order (gateway: gateway mode), and waits until every one is
// connected but those whose gate is shut.
func newMemClient(t testing.TB, gateway bool, servers ...*memServer) *memClient {
	t.Helper()
	key, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Client{PrivateKey: key, Tun: "gtun0", Gateway: gateway}
	m := &memClient{t: t, dev: memdev.New("gtun0", true), servers: servers, byEndpoint: map[string]*memServer{}}
	byEndpoint := m.byEndpoint
	for _, s := range servers {
		s.clientKey = key.Public()
		byEndpoint[s.endpoint] = s
		cfg.Servers = append(cfg.Servers, config.ServerEntry{Name: s.name, Endpoints: []string{s.endpoint}, Transport: transport.TCP, PublicKey: s.key.Public()})
	}
	c := New(cfg, testLog())
	dev := m.dev
	c.dev = dev
	ctx, cancel := context.WithCancel(context.Background())
	m.c, m.ctx = c, ctx
	c.dialTCP = func(_ context.Context, endpoint string) (net.Conn, error) {
		m.mu.Lock()
		s := byEndpoint[endpoint]
		m.mu.Unlock()
		if s == nil || s.down.Load() {
			return nil, errors.New("connection refused")
		}
		a, b, err := memconn.Pair()
		if err != nil {
			return nil, err
		}
		s.wg.Add(1)
		go s.serve(ctx, b)
		return a, nil
	}
	for _, up := range c.upstreams {
		c.startUpstream(ctx, up)
	}
	c.goRun(func() { c.readDevice(ctx) })
	t.Cleanup(func() {
		cancel()
		dev.Close()
		c.wg.Wait()
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, s := range m.byEndpoint {
			s.wg.Wait()
		}
	})
	for _, s := range servers {
		if s.gate == nil {
			m.waitState(s.name, "connected")
		}
	}
	return m
}

// waitState waits until the upstream called name is in state.
func (m *memClient) waitState(name, state string) {
	m.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		for _, s := range m.c.Status().Servers {
			if s.Name == name && s.State == state {
				return
			}
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s not %s after %v: %+v", name, state, wait, m.c.Status().Servers)
		}
		time.Sleep(time.Millisecond)
	}
}

// upstream is the client's upstream of the server called name.
func (m *memClient) upstream(name string) *upstream {
	for _, up := range m.c.servers() {
		if up.name == name {
			return up
		}
	}
	m.t.Fatalf("no upstream %s", name)
	return nil
}

// out waits for the next frame gtun writes to its TUN.
func (m *memClient) out() []byte {
	m.t.Helper()
	f, ok := m.dev.Next(wait)
	if !ok {
		m.t.Fatal("no frame on gtun's TUN")
	}
	return f
}

// sync sends a frame from s that gtun lets through (from s's gateway to
// gtun's address from s) and waits for it on the TUN: a session's frames
// are handled in order, so every frame s sent before is handled too.
func (m *memClient) sync(s *memServer) {
	m.t.Helper()
	t := m.upstream(s.name).tunnel.Load()
	mk := frame(t.gateway.String(), t.address.Addr().String())
	mk[packet.VnetHdrLen+27] = 0x4d // a mark in the UDP checksum
	s.send(mk)
	if got := m.out(); !slices.Equal(got, mk) {
		m.t.Fatalf("frame on the TUN % x, want the marker % x", got, mk)
	}
}

// waitDrops waits until gtun counted n drops of reason r.
func (m *memClient) waitDrops(r DropReason, n uint64) {
	m.t.Helper()
	deadline := time.Now().Add(wait)
	for m.c.drops.Get(r) < n {
		if time.Now().After(deadline) {
			m.t.Fatalf("%d %s drops after %v, want %d", m.c.drops.Get(r), r, wait, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// frame is a plain frame (no offload) with an IPv4/UDP packet.
func frame(src, dst string) []byte {
	p := make([]byte, packet.VnetHdrLen+28)
	ip := p[packet.VnetHdrLen:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], 28)
	s, d := addr(src).As4(), addr(dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	return p
}
