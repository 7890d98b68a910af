// Package server is gtund's logic: it terminates clients (transport, Noise,
// yamux), assigns their tunnel addresses, and moves packets between each
// client and the TUN device, enforcing anti-spoofing and the peer's ACL.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/control"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/nat"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/stats"
	"github.com/gtun/gtun/pkg/transport"
	"github.com/gtun/gtun/pkg/tun"
)

// NATTable is the nftables table gtund owns.
const NATTable = "gtund"

// maxPendingHandshakes bounds the goroutines and sockets unauthenticated
// clients can hold at once; more are closed on accept.
const maxPendingHandshakes = 256

// Drop reasons, counted per peer and in total.
const (
	DropSpoofed   = "spoofed_source"
	DropACL       = "acl"
	DropMalformed = "malformed"
	DropNoRoute   = "no_route"
	DropQueueFull = "queue_full"
	DropTunWrite  = "tun_write"
)

// Server is a running gtund.
type Server struct {
	cfg  *config.Server
	log  *slog.Logger
	rate *lograte.Limiter
	tun  *tun.Keeper
	pool *ipam.Pool

	mu       sync.Mutex
	peers    map[secure.PublicKey]*peerInfo
	sessions map[secure.PublicKey]*clientConn
	started  time.Time

	// byDst routes packets read from the TUN to the client owning the
	// destination; rebuilt and swapped whole when a session comes or goes.
	byDst atomic.Pointer[packet.Table[*clientConn]]

	pending     chan struct{}
	hsFailures  stats.Reasons
	drops       stats.Reasons
	wg          sync.WaitGroup
	listenAddrs []string
}

type peerInfo struct {
	cfg     config.Peer
	allowed *packet.Table[struct{}]
	lastTS  uint64        // newest handshake timestamp seen, refuses replays
	drops   stats.Reasons // per peer, across its sessions
}

type clientConn struct {
	peer      *peerInfo
	addr      netip.Addr
	sess      *session.Session
	endpoint  string
	transport string
	since     time.Time
}

// New validates what can be checked before touching the system.
func New(cfg *config.Server, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, log: log, rate: lograte.New(log, 10*time.Second),
		peers: map[secure.PublicKey]*peerInfo{}, sessions: map[secure.PublicKey]*clientConn{},
		pending: make(chan struct{}, maxPendingHandshakes)}
	for _, p := range cfg.Peers {
		s.peers[p.PublicKey] = newPeerInfo(p)
	}
	s.byDst.Store(packet.NewTable(map[netip.Prefix]*clientConn{}))
	return s
}

func newPeerInfo(p config.Peer) *peerInfo {
	m := map[netip.Prefix]struct{}{}
	for _, a := range p.Allowed {
		m[a] = struct{}{}
	}
	return &peerInfo{cfg: p, allowed: packet.NewTable(m)}
}

// Run sets up the TUN device, NAT and listeners, serves until ctx ends, then
// removes everything it created. Setup is idempotent, so it also cleans up
// after a previous instance that was killed.
func (s *Server) Run(ctx context.Context) (err error) {
	s.started = time.Now()
	if changed, err := nat.EnableIPv4Forwarding(); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	} else if changed {
		s.log.Info("enabled net.ipv4.ip_forward")
	}
	if s.pool, err = ipam.Open(s.cfg.Pool, s.cfg.Gateway, s.cfg.StateDir, s.log); err != nil {
		return err
	}
	s.syncPoolPeers()

	if s.tun, err = tun.NewKeeper(s.cfg.Tun, s.log); err != nil {
		return err
	}
	defer func() {
		s.tun.Close()
		s.log.Info("removed tun device", "tun", s.cfg.Tun)
	}()
	if err := s.tun.Set(s.cfg.MTU, []netip.Prefix{netip.PrefixFrom(s.cfg.Gateway, s.cfg.Pool.Bits())}); err != nil {
		return err
	}
	spec := nat.Spec{Table: NATTable, Tun: s.cfg.Tun, ClampMSS: true}
	if s.cfg.NAT {
		spec.Masquerade = []netip.Prefix{s.cfg.Pool}
	}
	if err := nat.Ensure(spec); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer func() {
		if err := nat.Remove(NATTable); err != nil {
			s.log.Error("remove nftables table", "table", NATTable, "err", err)
		} else {
			s.log.Info("removed nftables table", "table", NATTable)
		}
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var listeners []net.Listener
	for _, t := range s.cfg.Transports {
		ln, err := transport.Listen(t, s.cfg.Listen)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("listen %s on %s: %w", t, s.cfg.Listen, err)
		}
		listeners = append(listeners, ln)
		s.listenAddrs = append(s.listenAddrs, t+"://"+ln.Addr().String())
	}
	ctl, err := control.Listen(s.cfg.ControlSocket, func() any { return s.Status() }, s.log)
	if err != nil {
		for _, l := range listeners {
			l.Close()
		}
		return err
	}
	defer ctl.Close()

	for i, ln := range listeners {
		s.goRun(func() { s.acceptLoop(ctx, ln, s.cfg.Transports[i]) })
	}
	s.goRun(func() { s.tun.Run(ctx) })
	s.goRun(func() { s.tunReadLoop(ctx) })
	s.log.Info("gtund ready", "listen", s.listenAddrs, "tun", s.cfg.Tun, "pool", s.cfg.Pool,
		"routes", s.cfg.Routes, "nat", s.cfg.NAT, "peers", len(s.cfg.Peers))

	<-ctx.Done()
	s.log.Info("shutting down")
	for _, ln := range listeners {
		ln.Close()
	}
	s.mu.Lock()
	for _, c := range s.sessions {
		_ = c.sess.SendControl(&session.Msg{Type: session.TypeError, Error: "server shutting down"})
		c.sess.Close()
	}
	s.mu.Unlock()
	s.tun.Close() // unblocks the TUN reader
	s.wg.Wait()
	return nil
}

func (s *Server) goRun(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *Server) syncPoolPeers() {
	fixed := map[secure.PublicKey]netip.Addr{}
	allowed := map[secure.PublicKey]bool{}
	for k, p := range s.peers {
		allowed[k] = true
		if p.cfg.Address.IsValid() {
			fixed[k] = p.cfg.Address
		}
	}
	s.pool.SetPeers(fixed, allowed)
}

func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, tname string) {
	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.rate.Log(slog.LevelWarn, "accept", "accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case s.pending <- struct{}{}:
		default:
			s.hsFailures.Inc("too_many_pending")
			s.rate.Log(slog.LevelWarn, "pending", "too many handshakes in progress; connection closed", "remote", raw.RemoteAddr().String())
			raw.Close()
			continue
		}
		s.goRun(func() { s.serveConn(ctx, raw, tname) })
	}
}

// authorize is the handshake's gate: known key, strictly newer timestamp.
func (s *Server) authorize(k secure.PublicKey, ts uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.peers[k]
	if !ok {
		return secure.ErrUnknownPeer
	}
	if ts <= p.lastTS {
		return secure.ErrReplay
	}
	p.lastTS = ts
	return nil
}

func (s *Server) serveConn(ctx context.Context, raw net.Conn, tname string) {
	remote := raw.RemoteAddr().String()
	// Handshake and setup have deadlines of their own; shutdown need not wait.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	sc, key, err := secure.Server(raw, secure.ServerConfig{Private: s.cfg.PrivateKey, Authorize: s.authorize})
	<-s.pending
	if err != nil {
		raw.Close()
		reason := handshakeReason(err)
		s.hsFailures.Inc(reason)
		args := []any{"remote", remote, "reason", reason, "err", err}
		if reason == "unknown_peer" {
			args = append(args, "key_prefix", key.Short())
		}
		s.rate.Log(slog.LevelWarn, "hs:"+reason, "handshake refused", args...)
		return
	}
	sess, hello, err := session.Accept(sc, 0, s.log)
	if err != nil {
		s.hsFailures.Inc("session_setup")
		s.rate.Log(slog.LevelWarn, "setup", "session setup failed", "remote", remote, "err", err)
		return
	}
	refuse := func(reason string) {
		_ = sess.SendControl(&session.Msg{Type: session.TypeError, Error: reason})
		sess.Close()
	}
	if hello.Version != secure.ProtocolVersion {
		s.hsFailures.Inc("version")
		s.log.Warn("client hello has another protocol version", "remote", remote, "client", hello.Version, "server", secure.ProtocolVersion)
		refuse(fmt.Sprintf("protocol version mismatch: server speaks %d, client %d", secure.ProtocolVersion, hello.Version))
		return
	}
	s.mu.Lock()
	peer, ok := s.peers[key]
	s.mu.Unlock()
	if !ok { // removed while handshaking
		refuse("peer not known")
		return
	}
	addr, err := s.pool.Acquire(key, peer.cfg.Name)
	if err != nil {
		s.log.Error("cannot assign an address", "peer", peer.cfg.Name, "err", err)
		refuse(err.Error())
		return
	}
	sess.SetKeepalive(s.cfg.Keepalive, s.cfg.DeadAfter)
	if err := sess.SendControl(s.configFor(peer, addr)); err != nil {
		s.log.Warn("send config failed", "peer", peer.cfg.Name, "err", err)
		sess.Close()
		return
	}
	if err := sess.AcceptData(); err != nil {
		s.log.Warn("data stream setup failed", "peer", peer.cfg.Name, "err", err)
		sess.Close()
		return
	}
	c := &clientConn{peer: peer, addr: addr, sess: sess, endpoint: remote, transport: tname, since: time.Now()}
	s.register(key, c)
	s.log.Info("peer connected", "peer", peer.cfg.Name, "address", addr, "endpoint", remote, "transport", tname)
	err = sess.Run(ctx, session.Handlers{Packet: func(pkt []byte) { s.fromClient(c, pkt) }})
	s.unregister(key, c)
	s.log.Info("peer disconnected", "peer", peer.cfg.Name, "address", addr, "err", err)
}

func handshakeReason(err error) string {
	var ve *secure.VersionError
	switch {
	case errors.Is(err, secure.ErrUnknownPeer):
		return "unknown_peer"
	case errors.Is(err, secure.ErrReplay):
		return "replay"
	case errors.As(err, &ve):
		return "version"
	case errors.Is(err, secure.ErrMalformed):
		return "malformed"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "timeout"
	}
	return "io"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Server) configFor(p *peerInfo, addr netip.Addr) *session.Msg {
	routes := make([]string, 0, len(p.cfg.Allowed))
	for _, r := range p.cfg.Allowed {
		routes = append(routes, r.String())
	}
	return &session.Msg{Type: session.TypeConfig, Version: secure.ProtocolVersion,
		Address: netip.PrefixFrom(addr, s.cfg.Pool.Bits()).String(), Gateway: s.cfg.Gateway.String(),
		MTU: s.cfg.MTU, Routes: routes, KeepaliveMS: int(s.cfg.Keepalive / time.Millisecond), DeadAfter: s.cfg.DeadAfter}
}

// register makes c the session of key, replacing (and closing) an older one:
// a client that reconnects before its old session timed out takes over.
func (s *Server) register(key secure.PublicKey, c *clientConn) {
	s.mu.Lock()
	old := s.sessions[key]
	s.sessions[key] = c
	s.rebuildLocked()
	s.mu.Unlock()
	if old != nil {
		s.log.Info("replacing older session of peer", "peer", c.peer.cfg.Name, "old_endpoint", old.endpoint)
		old.sess.Close()
	}
}

func (s *Server) unregister(key secure.PublicKey, c *clientConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[key] == c {
		delete(s.sessions, key)
		s.rebuildLocked()
	}
}

func (s *Server) rebuildLocked() {
	m := make(map[netip.Prefix]*clientConn, len(s.sessions))
	for _, c := range s.sessions {
		m[netip.PrefixFrom(c.addr, 32)] = c
	}
	s.byDst.Store(packet.NewTable(m))
}

// fromClient checks a packet from a client and writes it to the TUN: its
// source must be the client's own address and its destination within what
// the peer is allowed to reach (or the gateway address, for diagnostics).
func (s *Server) fromClient(c *clientConn, pkt []byte) {
	src, dst, err := packet.Addrs(pkt)
	switch {
	case err != nil:
		s.drop(c, DropMalformed, "malformed packet from peer")
		return
	case src != c.addr:
		s.drop(c, DropSpoofed, "packet with a source that is not the peer's address", "src", src)
		return
	case dst != s.cfg.Gateway:
		if _, ok := c.peer.allowed.Lookup(dst); !ok {
			s.drop(c, DropACL, "packet to a destination the peer is not allowed", "dst", dst)
			return
		}
	}
	if _, err := s.tun.Write(pkt); err != nil {
		s.drop(c, DropTunWrite, "tun write failed", "err", err)
	}
}

func (s *Server) drop(c *clientConn, reason, msg string, args ...any) {
	s.drops.Inc(reason)
	name := ""
	if c != nil {
		c.peer.drops.Inc(reason)
		name = c.peer.cfg.Name
		args = append(args, "peer", name)
	}
	s.rate.Log(slog.LevelWarn, "drop:"+reason+":"+name, msg, args...)
}

func (s *Server) tunReadLoop(ctx context.Context) {
	for {
		b := packet.Get()
		n, err := s.tun.Read(b.B[:])
		if err != nil {
			packet.Put(b)
			if ctx.Err() != nil {
				return
			}
			// The device was deleted or replaced: the keeper repairs it.
			s.rate.Log(slog.LevelWarn, "tunread", "tun read failed; waiting for the device to be repaired", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		b.N = n
		dst, err := packet.Dst(b.Bytes())
		if err != nil {
			packet.Put(b)
			s.drop(nil, DropMalformed, "malformed packet from tun")
			continue
		}
		c, ok := s.byDst.Load().Lookup(dst)
		if !ok {
			packet.Put(b)
			s.drops.Inc(DropNoRoute) // common and harmless (e.g. a client just left): count, don't log
			continue
		}
		if !c.sess.Enqueue(b) {
			s.drop(c, DropQueueFull, "send queue full")
		}
	}
}
