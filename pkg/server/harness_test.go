package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/memconn"
	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/device/memdev"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/transport"
)

// The in-memory gtund: the real Server (its peers, the hello and config of
// admission, the registry of sessions, the data plane) over a memdev TUN
// device, with leases in a temporary state_dir. Its clients are real
// sessions (Noise handshake, hello, pushed config, sealed records) over
// socketpairs. Nothing of the host is touched: no netlink, no nftables, no
// listening socket, no root.

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

type memServer struct {
	t   testing.TB
	s   *Server
	dev *memdev.Device
	ctx context.Context
}

// peerKeys are the keys of the test peers, by name.
var peerKeys = map[string]secure.PrivateKey{}

func peerKey(t testing.TB, name string) secure.PrivateKey {
	t.Helper()
	if k, ok := peerKeys[name]; ok {
		return k
	}
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	peerKeys[name] = k
	return k
}

// testConfig is gtund's config of these tests: pool 100.64.240.0/24
// (gtund is .1), routes 10.244.0.0/16 and 10.96.0.0/12, and peers whose
// keys come from peerKey by name.
func testConfig(t testing.TB, peers ...config.Peer) *config.Server {
	t.Helper()
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	routes := []netip.Prefix{pfx("10.244.0.0/16"), pfx("10.96.0.0/12")}
	for i := range peers {
		peers[i].PublicKey = peerKey(t, peers[i].Name).Public()
		if peers[i].Allowed == nil {
			peers[i].Allowed = routes
		}
	}
	return &config.Server{PrivateKey: k, Tun: "gtund0", Pool: pfx("100.64.240.0/24"), Gateway: netip.MustParseAddr("100.64.240.1"),
		MTU: 1400, Routes: routes, Keepalive: time.Minute, DeadAfter: 3, Peers: peers}
}

// newMemServer runs cfg's gtund in memory until the test ends.
func newMemServer(t testing.TB, cfg *config.Server) *memServer {
	t.Helper()
	s := New(cfg, testLog())
	dev := memdev.New(cfg.Tun, true)
	s.dev = dev
	pool, err := ipam.Open(cfg.Pool, cfg.Gateway, t.TempDir(), s.log)
	if err != nil {
		t.Fatal(err)
	}
	s.pool = pool
	s.syncPoolPeers()
	ctx, cancel := context.WithCancel(context.Background())
	s.goRun(func() { s.readDevice(ctx) })
	t.Cleanup(func() {
		cancel()
		dev.Close()
		s.wg.Wait()
	})
	return &memServer{t: t, s: s, dev: dev, ctx: ctx}
}

// memClient is a gtun as gtund sees it: a session whose frames the test
// sends and receives.
type memClient struct {
	t    testing.TB
	sess *session.Session
	cfg  *session.Msg // what gtund pushed
	addr netip.Addr   // the tunnel address it was given
	got  chan []byte  // frames from gtund
	// hold, when set, is waited on by the session's reader before each
	// frame it delivers: a client that stops reading (its socket buffers
	// fill, then gtund's queue for it).
	hold    chan struct{}
	pushed  chan *session.Msg // configs gtund pushed after the first (a reload's)
	done    chan struct{}     // closed when its session has ended
	endedBy chan string       // the error notice gtund closed the session with
	// lastPushed is the routes of the last config nextPush returned.
	lastPushed []string
}

// connect sets up a session of the peer called name over a socketpair and
// waits until gtund routes its tunnel address to it.
func (m *memServer) connect(name string) *memClient {
	m.t.Helper()
	c := m.dial(name, nil)
	m.waitRouted(c.addr, true)
	return c
}

// dial sets up a session of the peer called name, whose reader waits on
// hold (nil: never) before each frame.
func (m *memServer) dial(name string, hold chan struct{}) *memClient {
	t := m.t
	t.Helper()
	a, b, err := memconn.Pair()
	if err != nil {
		t.Fatal(err)
	}
	m.s.goRun(func() { // what serveConn does for a TCP connection the guard admitted
		deadline := time.Now().Add(wait)
		sc, key, err := m.s.responder.Accept(b, deadline)
		if err != nil {
			b.Close()
			return
		}
		m.s.serveSession(m.ctx, sc, key, "memconn", transport.TCP, deadline, func() {}, nil)
	})
	sc, err := secure.Client(a, secure.ClientConfig{Private: peerKey(t, name), ServerKey: m.s.cfg.PrivateKey.Public()})
	if err != nil {
		a.Close()
		t.Fatalf("handshake of %s: %v", name, err)
	}
	hello := &session.Msg{Type: session.TypeHello, Version: secure.ProtocolVersion, Name: name, Transport: transport.TCP}
	sess, cfg, err := session.Dial(m.ctx, sc, hello, 0, testLog())
	if err != nil {
		t.Fatalf("session of %s: %v", name, err)
	}
	c := &memClient{t: t, sess: sess, cfg: cfg, got: make(chan []byte, 4096), hold: hold, pushed: make(chan *session.Msg, 16),
		done: make(chan struct{}), endedBy: make(chan string, 1)}
	pfx, err := netip.ParsePrefix(cfg.Address)
	if err != nil {
		t.Fatalf("pushed address %q", cfg.Address)
	}
	c.addr = pfx.Addr()
	ctx, cancel := context.WithCancel(m.ctx)
	go func() {
		defer close(c.done)
		err := sess.Run(ctx, session.Handlers{Packet: func(f []byte) {
			if c.hold != nil {
				<-c.hold
			}
			select {
			case c.got <- slices.Clone(f):
			default:
				t.Errorf("%s: more frames than the test takes", name)
			}
		}, Control: func(m *session.Msg) {
			if m.Type != session.TypeConfig {
				return
			}
			select {
			case c.pushed <- m:
			default:
				t.Errorf("%s: more pushed configs than the test takes", name)
			}
		}})
		if err != nil {
			c.endedBy <- err.Error()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-c.done
	})
	return c
}

// waitRouted waits until gtund routes addr to a session (or to none).
func (m *memServer) waitRouted(addr netip.Addr, routed bool) {
	m.t.Helper()
	deadline := time.Now().Add(wait)
	for (m.s.route(addr) != nil) != routed {
		if time.Now().After(deadline) {
			m.t.Fatalf("%s routed = %v after %v, want %v", addr, !routed, wait, routed)
		}
		time.Sleep(time.Millisecond)
	}
}

// send sends frame to gtund as the client's TUN reader does.
func (c *memClient) send(frame []byte) {
	b := packet.Get()
	b.N = copy(b.B, frame)
	if err := c.sess.Send(b); err != nil {
		c.t.Fatal("client send:", err)
	}
}

// next waits for the next frame from gtund.
func (c *memClient) next() []byte {
	c.t.Helper()
	select {
	case f := <-c.got:
		return f
	case <-time.After(wait):
		c.t.Fatal("no frame from gtund")
		return nil
	}
}

// quiet reports that no frame from gtund is waiting.
func (c *memClient) quiet() bool {
	select {
	case f := <-c.got:
		c.t.Errorf("unexpected frame from gtund: % x", f)
		return false
	default:
		return true
	}
}

// inject puts f on gtund's TUN as the kernel would and checks where it
// goes: to want, or, with want nil, nowhere, counted as no_route.
func (m *memServer) inject(t *testing.T, f []byte, want *memClient) {
	t.Helper()
	noRoute := m.s.drops.Get(DropNoRoute)
	m.dev.Inject(f)
	if want != nil {
		if got := want.next(); !bytes.Equal(got, f) {
			t.Fatalf("got % x", got)
		}
		return
	}
	deadline := time.Now().Add(wait)
	for m.s.drops.Get(DropNoRoute) != noRoute+1 {
		if time.Now().After(deadline) {
			t.Fatalf("no_route %d, want %d", m.s.drops.Get(DropNoRoute), noRoute+1)
		}
		time.Sleep(time.Millisecond)
	}
}

// out waits for the next frame gtund writes to its TUN.
func (m *memServer) out() []byte {
	m.t.Helper()
	f, ok := m.dev.Next(wait)
	if !ok {
		m.t.Fatal("no frame on gtund's TUN")
	}
	return f
}

// nothingOut reports that gtund wrote nothing (more) to its TUN.
func (m *memServer) nothingOut() bool {
	m.t.Helper()
	if f, ok := m.dev.Next(0); ok {
		m.t.Errorf("unexpected frame on gtund's TUN: % x", f)
		return false
	}
	return true
}

// marker is a frame from c that gtund lets through: sent after others, its
// arrival on the TUN says gtund has handled those (a session's frames are
// handled in order).
func (c *memClient) marker() []byte {
	return frame(c.addr.String(), "10.244.9.9", 17, 0x12, 0x34, 0, 9, 0, 8, 0, 0)
}

// sync sends a marker and waits for it on gtund's TUN.
func (m *memServer) sync(c *memClient) {
	m.t.Helper()
	mk := c.marker()
	c.send(mk)
	if got := m.out(); !slices.Equal(got, mk) {
		m.t.Fatalf("frame on the TUN % x, want the marker % x", got, mk)
	}
}

// frame is a plain frame (no offload) with an IPv4 packet of protocol
// proto from src to dst whose first transport bytes are l4.
func frame(src, dst string, proto byte, l4 ...byte) []byte {
	p := make([]byte, packet.VnetHdrLen+20, packet.VnetHdrLen+20+len(l4))
	ip := p[packet.VnetHdrLen:]
	ip[0], ip[8], ip[9] = 0x45, 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	p = append(p, l4...)
	binary.BigEndian.PutUint16(p[packet.VnetHdrLen+2:], uint16(len(p)-packet.VnetHdrLen))
	return p
}
