// Package server is gtund's logic: it terminates clients (transport, Noise,
// session), assigns their tunnel addresses, and moves packets between each
// client and the TUN device, enforcing anti-spoofing and the peer's ACL.
package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/control"
	"github.com/gtun/gtun/pkg/dgram"
	"github.com/gtun/gtun/pkg/guard"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/metrics"
	"github.com/gtun/gtun/pkg/nat"
	"github.com/gtun/gtun/pkg/nlwatch"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/reconcile"
	"github.com/gtun/gtun/pkg/route"
	"github.com/gtun/gtun/pkg/sdnotify"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/stats"
	"github.com/gtun/gtun/pkg/transport"
	"github.com/gtun/gtun/pkg/tun"
)

// NATTable is the nftables table a gtund owns: "gtund" for the default
// device, and one per device for further instances on the same host (an
// instance removes only its own table).
func NATTable(tun string) string {
	if tun == "gtund0" {
		return "gtund"
	}
	return "gtund-" + tun
}

// subnetLinger is how long a disconnected peer's subnets stay routed into
// the TUN: a client that reconnects within it finds them in place (like its
// own routes, which it keeps while reconnecting), and meanwhile packets to
// them are dropped here rather than sent out of the default route.
const subnetLinger = 30 * time.Second

// Drop reasons, counted per peer and in total.
const (
	DropSpoofed = "spoofed_source"
	DropACL     = "acl"
	// DropGatewayHost: to gtund's own tunnel address, neither an ICMP echo
	// request nor named by the peer's allowed (the host's services, sshd
	// or the metrics port, are not the peer's to reach).
	DropGatewayHost = "gateway_host"
	DropMalformed   = "malformed"
	DropBadOffload  = "bad_offload"
	DropNoRoute     = "no_route"
	DropQueueFull   = "queue_full"
	DropTunWrite    = "tun_write"
)

// Server is a running gtund.
type Server struct {
	// cfg is the config gtund started with. Fields a reload can change
	// (routes, peers, keepalive, rekey interval) are copied below and guarded by mu; the
	// rest need a restart and are never written after New.
	cfg  *config.Server
	log  *slog.Logger
	rate *lograte.Limiter
	tun  *tun.Keeper
	pool *ipam.Pool

	mu        sync.Mutex
	routes    []netip.Prefix
	maps      []config.Mapping // real prefixes served under virtual ones (server.map)
	dns       config.DNS
	keepalive time.Duration
	deadAfter int
	rekey     time.Duration // how long a session's send keys live, both sides
	peers     map[secure.PublicKey]*peerInfo
	sessions  map[secure.PublicKey]*clientConn
	started   time.Time

	// byAddr routes packets read from the TUN to the client owning the
	// destination: one slot per pool address, updated in place as sessions
	// come and go (a table rebuilt per session made 1,000 connecting clients
	// cost a million map inserts).
	byAddr []atomic.Pointer[clientConn]
	// bySubnet routes packets to peers' subnets (site-to-site) by longest
	// prefix; rebuilt when a peer with subnets comes or goes.
	bySubnet atomic.Pointer[packet.Table[*clientConn]]
	// subnetRoutes keeps the connected (and lingering) peers' subnets
	// routed into the TUN.
	subnetRoutes *route.Reconciler

	guard       *guard.Guard           // admits handshakes: per-source rate, caps on those in progress
	kcp         *transport.KCPListener // the datagram listener kcp rides in; nil without kcp
	responder   *secure.Responder      // answers first messages on every transport: mac1, replay filter, DH
	hsTimeout   atomic.Int64           // nanoseconds from accept to hello; a reload may change it
	reloadReq   chan chan error        // reloads asked for over the control socket
	hsFailures  stats.Reasons
	events      *nlwatch.Hub   // netlink subscriptions of the TUN keeper and the subnet routes
	book        reconcile.Book // heals and fights of every part kept in place
	natMu       sync.Mutex     // serializes building the nftables table: setup, reload, repair
	natApplied  nat.Spec       // the table as last built; natMu
	drops       stats.Reasons
	wg          sync.WaitGroup
	listenAddrs []string
}

type peerInfo struct {
	cfg     config.Peer // guarded by Server.mu
	lastTS  uint64      // newest handshake timestamp seen, refuses replays; Server.mu
	allowed atomic.Pointer[packet.Table[struct{}]]
	subnets atomic.Pointer[packet.Table[struct{}]] // sources accepted besides its address
	drops   stats.Reasons                          // per peer, across its sessions
	goneAt  time.Time                              // when its last session ended; Server.mu

	// Counters across the peer's sessions, so that status and metrics
	// never go backwards when a session ends or is replaced. Server.mu.
	live     map[*clientConn]struct{} // registered sessions not yet ended
	closed   totals                   // of the sessions that ended
	sessions uint64                   // sessions established
}

// totals are a peer's traffic and key update counters.
type totals struct {
	rxBytes, txBytes, rxPackets, txPackets uint64
	rekeys                                 session.Rekeys
}

func (t *totals) add(s *session.Session) {
	t.rxBytes += s.Stats.RxBytes.Load()
	t.txBytes += s.Stats.TxBytes.Load()
	t.rxPackets += s.Stats.RxPackets.Load()
	t.txPackets += s.Stats.TxPackets.Load()
	t.rekeys = t.rekeys.Add(s.Rekeys())
}

type clientConn struct {
	peer      *peerInfo
	name      string
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
		guard:  guard.New(cfg.Handshake),
		routes: cfg.Routes, maps: cfg.Map, dns: cfg.DNS, keepalive: cfg.Keepalive, deadAfter: cfg.DeadAfter, rekey: cfg.RekeyInterval}
	s.bySubnet.Store(packet.NewTable(map[netip.Prefix]*clientConn{}))
	s.reloadReq = make(chan chan error)
	for _, p := range cfg.Peers {
		s.peers[p.PublicKey] = newPeerInfo(p, cfg.Map)
	}
	s.byAddr = make([]atomic.Pointer[clientConn], 1<<(32-cfg.Pool.Bits()))
	s.hsTimeout.Store(int64(handshakeTimeout(cfg)))
	s.responder = secure.NewResponder(secure.ServerConfig{Private: cfg.PrivateKey, Authorize: s.authorize})
	return s
}

func newPeerInfo(p config.Peer, maps []config.Mapping) *peerInfo {
	pi := &peerInfo{cfg: p, live: map[*clientConn]struct{}{}}
	pi.allowed.Store(aclTable(virtual(maps, p.Allowed)))
	pi.subnets.Store(aclTable(p.Subnets))
	return pi
}

// virtual is what a client sees of prefixes written in real terms (routes,
// allowed): with a map, the virtual names. A peer's ACL checks these, since
// they are the destinations its packets carry; the real addresses behind a
// map are not reachable under their own names.
func virtual(maps []config.Mapping, ps []netip.Prefix) []netip.Prefix {
	if len(maps) == 0 {
		return ps
	}
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = config.Virtual(maps, p)
	}
	return out
}

// natSpec is gtund's nftables table for a map.
func (s *Server) natSpec(maps []config.Mapping) nat.Spec {
	spec := nat.Spec{Table: NATTable(s.cfg.Tun), Tun: s.cfg.Tun, ClampMSS: true}
	if s.cfg.NAT {
		spec.Masquerade = []netip.Prefix{s.cfg.Pool}
	}
	for _, m := range maps {
		spec.Netmap = append(spec.Netmap, nat.Netmap{Virtual: m.Virtual, Real: m.Real})
	}
	return spec
}

func aclTable(allowed []netip.Prefix) *packet.Table[struct{}] {
	m := map[netip.Prefix]struct{}{}
	for _, a := range allowed {
		m[a] = struct{}{}
	}
	return packet.NewTable(m)
}

// Run sets up the TUN device, NAT and listeners, serves until ctx ends, then
// removes everything it created. Setup is idempotent, so it also cleans up
// after a previous instance that was killed.
func (s *Server) Run(ctx context.Context, reload <-chan struct{}) (err error) {
	s.started = time.Now()
	s.events = nlwatch.NewHub(s.log, nil)
	// The TUN device first: it takes the lock on the name, so a second
	// gtund configured like this one stops here, before touching anything
	// (leases, forwarding, tables) the first one owns.
	if s.tun, err = tun.NewKeeper(s.cfg.Tun, s.cfg.Offload, s.log, s.shared()); err != nil {
		return err
	}
	defer func() {
		s.tun.Close()
		s.log.Info("removed tun device", "tun", s.cfg.Tun)
	}()
	if changed, err := nat.EnableIPv4Forwarding(); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	} else if changed {
		s.log.Info("enabled net.ipv4.ip_forward")
	}
	if s.pool, err = ipam.Open(s.cfg.Pool, s.cfg.Gateway, s.cfg.StateDir, s.log); err != nil {
		return err
	}
	s.syncPoolPeers()

	if err := s.tun.Set(s.cfg.MTU, []netip.Prefix{netip.PrefixFrom(s.cfg.Gateway, s.cfg.Pool.Bits())}); err != nil {
		return err
	}
	s.subnetRoutes = route.NewReconciler(route.Options{Link: s.cfg.Tun, Logger: s.log, Shared: s.shared()})
	// Routes of ours left by a killed predecessor on a device of this name.
	if err := s.subnetRoutes.RemoveAll(); err != nil {
		s.log.Warn("cleaning leftover routes", "err", err)
	}
	defer func() {
		s.subnetRoutes.SetDesired(nil)
		if err := s.subnetRoutes.RemoveAll(); err != nil {
			s.log.Error("remove peer subnet routes", "err", err)
		}
	}()
	table := NATTable(s.cfg.Tun)
	if err := s.ensureNAT(s.natSpec(s.cfg.Map)); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer func() {
		if err := nat.Remove(table); err != nil {
			s.log.Error("remove nftables table", "table", table, "err", err)
		} else {
			s.log.Info("removed nftables table", "table", table)
		}
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var listeners []io.Closer
	var serve []func()
	for _, t := range s.cfg.Transports {
		var addr net.Addr
		switch t {
		case transport.KCP:
			kl, err := transport.ListenKCP(s.cfg.Listen, transport.Options{FECData: s.cfg.FECData, FECParity: s.cfg.FECParity},
				dgram.ListenConfig{Responder: s.responder, Guard: s.guard, Refused: s.datagramRefused, Logger: s.log})
			if err != nil {
				closeAll(listeners)
				return fmt.Errorf("listen %s on %s: %w", t, s.cfg.Listen, err)
			}
			s.kcp = kl
			listeners, addr = append(listeners, kl), kl.Addr()
			serve = append(serve, func() { s.kcpAcceptLoop(ctx, kl) })
		default:
			ln, err := transport.ListenTCP(s.cfg.Listen)
			if err != nil {
				closeAll(listeners)
				return fmt.Errorf("listen %s on %s: %w", t, s.cfg.Listen, err)
			}
			listeners, addr = append(listeners, ln), ln.Addr()
			serve = append(serve, func() { s.acceptLoop(ctx, ln, t) })
		}
		s.listenAddrs = append(s.listenAddrs, t+"://"+addr.String())
	}
	ctl, err := control.Listen(s.cfg.ControlSocket, func() any { return s.Status() }, s.log)
	if err != nil {
		closeAll(listeners)
		return err
	}
	defer ctl.Close()
	ctl.HandleReload(func() error { return s.requestReload(ctx) })
	if s.cfg.MetricsListen != "" {
		m, err := metrics.Listen(s.cfg.MetricsListen, s.log, NewCollector(s.Status))
		if err != nil {
			closeAll(listeners)
			return err
		}
		defer m.Close()
	}

	for _, f := range serve {
		s.goRun(f)
	}
	s.goRun(func() { s.events.Run(ctx) })
	s.goRun(func() { s.tun.Run(ctx) })
	s.goRun(func() { s.watchSystem(ctx) })
	s.goRun(func() { s.rate.FlushEvery(ctx, systemCheckInterval) }) // counts of a stopped flood reach the log
	s.goRun(func() {
		if err := s.subnetRoutes.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("route reconciler stopped", "err", err)
		}
	})
	s.goRun(func() { s.tunReadLoop(ctx) })
	s.log.Info("gtund ready", "listen", s.listenAddrs, "tun", s.cfg.Tun, "pool", s.cfg.Pool,
		"routes", s.cfg.Routes, "map", s.cfg.Map, "nat", s.cfg.NAT, "peers", len(s.cfg.Peers),
		"aes", secure.AESImplementation())
	if err := sdnotify.Ready(s.statusLine()); err != nil {
		s.log.Warn("cannot notify systemd", "err", err)
	}

	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-reload:
			_ = s.reload()
		case res := <-s.reloadReq:
			res <- s.reload()
		}
	}
	s.log.Info("shutting down")
	_ = sdnotify.Stopping()
	closeAll(listeners)
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

func closeAll(cs []io.Closer) {
	for _, c := range cs {
		c.Close()
	}
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
		// Admission comes before any goroutine, buffer or crypto is
		// spent on the connection (for kcp, the session kcp-go made for
		// the new UDP source is dropped again by Close).
		ticket, refused := s.guard.AdmitConn(raw)
		if ticket == nil {
			raw.Close()
			s.hsFailures.Inc(refused)
			s.rate.Log(slog.LevelWarn, "admit:"+refused, "handshake refused before it started; connection closed",
				"reason", refused, "remote", raw.RemoteAddr().String(), "transport", tname, "refused_total", s.hsFailures.Get(refused))
			continue
		}
		s.goRun(func() { s.serveConn(ctx, raw, tname, ticket) })
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

// serveConn runs one client connection. Until the client's hello has
// arrived the connection is unauthenticated: it holds its admission ticket
// and has handshake_timeout, from accept, to get there.
func (s *Server) serveConn(ctx context.Context, raw net.Conn, tname string, ticket *guard.Ticket) {
	defer ticket.Release()
	remote := raw.RemoteAddr().String()
	deadline := time.Now().Add(time.Duration(s.hsTimeout.Load()))
	// Handshake and setup have deadlines of their own; shutdown need not wait.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	sc, key, err := s.responder.Accept(raw, deadline)
	if err != nil {
		raw.Close()
		reason := handshakeReason(err)
		if ticket.Evicted() && (reason == "io" || reason == "timeout") {
			reason = guard.Evicted // closed to make room for a source holding fewer
		}
		s.hsFailures.Inc(reason)
		// Never a key: an unknown client's public key prefix is all that
		// is logged (to find it in a peer list), nothing secret.
		args := []any{"remote", remote, "reason", reason, "err", err, "refused_total", s.hsFailures.Get(reason)}
		if reason == "unknown_peer" {
			args = append(args, "key_prefix", key.Short())
		}
		s.rate.Log(slog.LevelWarn, "hs:"+reason, "handshake refused", args...)
		return
	}
	ticket.Authenticated() // a known key proved itself from this source
	s.serveSession(ctx, sc, key, remote, tname, deadline, ticket.Release)
}

// kcpAcceptLoop serves the kcp connections the datagram listener
// authenticated: their handshake is done, only the hello is to come.
func (s *Server) kcpAcceptLoop(ctx context.Context, l *transport.KCPListener) {
	for {
		a, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("kcp listener stopped", "err", err)
			}
			return
		}
		s.goRun(func() {
			stop := context.AfterFunc(ctx, func() { a.Conn.Close() })
			defer stop()
			deadline := time.Now().Add(time.Duration(s.hsTimeout.Load()))
			s.serveSession(ctx, a.Conn, a.Peer, a.Session.Endpoint().String(), transport.KCP, deadline, func() {})
		})
	}
}

// datagramRefused counts and logs a first message over UDP that the
// responder refused, as serveConn does for TCP.
func (s *Server) datagramRefused(err error, from netip.AddrPort) {
	reason := handshakeReason(err)
	s.hsFailures.Inc(reason)
	s.rate.Log(slog.LevelWarn, "hs:"+reason, "handshake refused", "remote", from.String(), "transport", transport.KCP,
		"reason", reason, "err", err, "refused_total", s.hsFailures.Get(reason))
}

// serveSession runs an authenticated connection, whatever its transport,
// from the client's hello on: the hello must arrive before deadline; then
// admitted() is called (the connection is no longer a handshake in
// progress), the client gets its config and the session runs until it
// ends.
func (s *Server) serveSession(ctx context.Context, sc *secure.Conn, key secure.PublicKey, remote, tname string, deadline time.Time, admitted func()) {
	_ = sc.SetReadDeadline(deadline) // for the hello; cleared once it is in
	sess, hello, err := session.Accept(sc, 0, s.log)
	if err != nil {
		s.hsFailures.Inc("session_setup")
		s.rate.Log(slog.LevelWarn, "setup", "session setup failed", "remote", remote, "err", err, "refused_total", s.hsFailures.Get("session_setup"))
		return
	}
	_ = sc.SetReadDeadline(time.Time{})
	admitted()
	refuse := func(reason string) {
		_ = sess.SendControl(&session.Msg{Type: session.TypeError, Error: reason})
		sess.Close()
	}
	if tname == transport.KCP && (hello.FECData != s.cfg.FECData || hello.FECParity != s.cfg.FECParity) {
		s.hsFailures.Inc("fec_mismatch")
		s.log.Warn("client's kcp FEC differs from the server's", "remote", remote,
			"client", fmt.Sprintf("%d/%d", hello.FECData, hello.FECParity), "server", fmt.Sprintf("%d/%d", s.cfg.FECData, s.cfg.FECParity))
		refuse(fmt.Sprintf("fec_data/fec_parity mismatch: client %d/%d, server %d/%d", hello.FECData, hello.FECParity, s.cfg.FECData, s.cfg.FECParity))
		return
	}
	if hello.Version != secure.ProtocolVersion {
		s.hsFailures.Inc("version")
		s.log.Warn("client hello has another protocol version", "remote", remote, "client", hello.Version, "server", secure.ProtocolVersion)
		refuse(fmt.Sprintf("protocol version mismatch: server speaks %d, client %d", secure.ProtocolVersion, hello.Version))
		return
	}
	s.mu.Lock()
	peer, ok := s.peers[key]
	var name string
	if ok {
		name = peer.cfg.Name
	}
	keepalive, deadAfter, rekey := s.keepalive, s.deadAfter, s.rekey
	s.mu.Unlock()
	if !ok { // removed while handshaking
		refuse("peer not known")
		return
	}
	addr, err := s.pool.Acquire(key, name)
	if err != nil {
		s.log.Error("cannot assign an address", "peer", name, "err", err)
		refuse(err.Error())
		return
	}
	sess.SetKeepalive(keepalive, deadAfter)
	sess.SetRekeyInterval(rekey) // the client gets it with its config
	if err := sess.SendControl(s.configFor(peer, addr)); err != nil {
		s.log.Warn("send config failed", "peer", name, "err", err)
		sess.Close()
		return
	}
	c := &clientConn{peer: peer, name: name, addr: addr, sess: sess, endpoint: remote, transport: tname, since: time.Now()}
	if !s.register(key, c) {
		refuse("peer removed")
		return
	}
	s.log.Info("peer connected", "peer", name, "address", addr, "endpoint", remote, "transport", tname)
	err = sess.Run(ctx, session.Handlers{Packet: func(pkt []byte) { s.fromClient(c, pkt) }})
	s.unregister(key, c)
	s.log.Info("peer disconnected", "peer", name, "address", addr, "err", err)
}

// handshakeTimeout is the config's, or the default for configs built in
// code (tests) that leave it zero.
func handshakeTimeout(c *config.Server) time.Duration {
	if c.HandshakeTimeout > 0 {
		return c.HandshakeTimeout
	}
	return secure.DefaultHandshakeTimeout
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
	case errors.Is(err, secure.ErrBadMAC1):
		return "bad_mac1"
	case errors.Is(err, secure.ErrDuplicate):
		return "duplicate"
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
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.configForLocked(p, addr)
}

func (s *Server) configForLocked(p *peerInfo, addr netip.Addr) *session.Msg {
	routes := make([]string, 0, len(p.cfg.Allowed))
	for _, r := range virtual(s.maps, p.cfg.Allowed) {
		// The gateway's own address in allowed opens the host; the client
		// reaches it on the tunnel's subnet already, a route would only
		// collide with another server's gateway of the same pool.
		if r != netip.PrefixFrom(s.cfg.Gateway, 32) {
			routes = append(routes, r.String())
		}
	}
	var subnets []string
	for _, sn := range p.cfg.Subnets {
		subnets = append(subnets, sn.String())
	}
	return &session.Msg{Type: session.TypeConfig, Version: secure.ProtocolVersion,
		Address: netip.PrefixFrom(addr, s.cfg.Pool.Bits()).String(), Gateway: s.cfg.Gateway.String(),
		MTU: s.cfg.MTU, Routes: routes, KeepaliveMS: int(s.keepalive / time.Millisecond), DeadAfter: s.deadAfter,
		RekeyIntervalMS: int64(s.rekey / time.Millisecond), Subnets: subnets, DNS: s.dnsForLocked(p)}
}

// dnsForLocked is the split DNS pushed to a peer: the configured servers
// its ACL lets it reach (none: no DNS for it, since its queries would be
// dropped).
func (s *Server) dnsForLocked(p *peerInfo) *session.DNS {
	if s.dns.IsZero() {
		return nil
	}
	d := &session.DNS{Domains: s.dns.Domains}
	acl := p.allowed.Load()
	for _, a := range s.dns.Servers {
		a = config.Virtual(s.maps, netip.PrefixFrom(a, a.BitLen())).Addr() // as the client reaches it
		if _, ok := acl.Lookup(a); ok {
			d.Servers = append(d.Servers, a.String())
		}
	}
	if len(d.Servers) == 0 {
		s.rate.Log(slog.LevelWarn, "dns-acl:"+p.cfg.Name, "no dns server within the peer's allowed prefixes; split DNS not pushed to it", "peer", p.cfg.Name)
		return nil
	}
	return d
}

// syncSubnetsLocked rebuilds the subnet routing table from the connected
// peers and sets the routes on the TUN: the connected peers' subnets and
// those of peers gone less than subnetLinger ago. Call with s.mu held.
func (s *Server) syncSubnetsLocked() {
	table, routes := planSubnets(time.Now(), s.peers, s.sessions, subnetLinger)
	s.bySubnet.Store(packet.NewTable(table))
	if s.subnetRoutes != nil {
		s.subnetRoutes.SetDesired(routes)
	}
}

// planSubnets maps the subnets of connected peers to their sessions, and
// lists the subnets to route into the TUN: those, and the subnets of peers
// gone less than linger ago.
func planSubnets(now time.Time, peers map[secure.PublicKey]*peerInfo, sessions map[secure.PublicKey]*clientConn,
	linger time.Duration) (map[netip.Prefix]*clientConn, []netip.Prefix) {
	table := map[netip.Prefix]*clientConn{}
	var routes []netip.Prefix
	for k, p := range peers {
		if len(p.cfg.Subnets) == 0 {
			continue
		}
		c := sessions[k]
		lingering := c == nil && !p.goneAt.IsZero() && now.Sub(p.goneAt) < linger
		for _, sn := range p.cfg.Subnets {
			if c != nil {
				table[sn] = c
			}
			if c != nil || lingering {
				routes = append(routes, sn)
			}
		}
	}
	return table, routes
}

func (s *Server) syncSubnets() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncSubnetsLocked()
}

// register makes c the session of key, replacing (and closing) an older one:
// a client that reconnects before its old session timed out takes over. It
// refuses when the peer was removed (by a reload) meanwhile.
func (s *Server) register(key secure.PublicKey, c *clientConn) bool {
	s.mu.Lock()
	if s.peers[key] != c.peer {
		s.mu.Unlock()
		return false
	}
	old := s.sessions[key]
	s.sessions[key] = c
	c.peer.live[c] = struct{}{}
	c.peer.sessions++
	if old != nil && old.addr != c.addr {
		s.slot(old.addr).CompareAndSwap(old, nil)
	}
	s.slot(c.addr).Store(c)
	c.peer.goneAt = time.Time{}
	if len(c.peer.cfg.Subnets) > 0 {
		s.syncSubnetsLocked()
	}
	s.mu.Unlock()
	if old != nil {
		s.log.Info("replacing older session of peer", "peer", c.name, "old_endpoint", old.endpoint)
		old.sess.Close()
	}
	_ = sdnotify.Status(s.statusLine())
	return true
}

// statusLine is the one-line state systemd shows.
func (s *Server) statusLine() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("listening on %s; %d of %d peers connected", strings.Join(s.listenAddrs, ","), len(s.sessions), len(s.peers))
}

func (s *Server) unregister(key secure.PublicKey, c *clientConn) {
	s.mu.Lock()
	if s.sessions[key] == c {
		delete(s.sessions, key)
		c.peer.goneAt = time.Now()
		if len(c.peer.cfg.Subnets) > 0 {
			s.syncSubnetsLocked()
			// Withdraw the routes unless it is back by then.
			time.AfterFunc(subnetLinger+100*time.Millisecond, s.syncSubnets)
		}
	}
	if _, ok := c.peer.live[c]; ok {
		delete(c.peer.live, c)
		c.peer.closed.add(c.sess)
	}
	s.slot(c.addr).CompareAndSwap(c, nil)
	s.mu.Unlock()
	_ = sdnotify.Status(s.statusLine())
}

// slot is the routing slot of a pool address (which every client address is).
func (s *Server) slot(a netip.Addr) *atomic.Pointer[clientConn] {
	i, _ := s.poolIndex(a)
	return &s.byAddr[i]
}

// poolIndex is a's offset in the pool, and whether a is in the pool.
func (s *Server) poolIndex(a netip.Addr) (int, bool) {
	if !a.Is4() || !s.cfg.Pool.Contains(a) {
		return 0, false
	}
	x, base := a.As4(), s.cfg.Pool.Addr().As4()
	return int(binary.BigEndian.Uint32(x[:]) - binary.BigEndian.Uint32(base[:])), true
}

// fromClient writes a frame from a client to the TUN if checkFromClient
// lets it through.
func (s *Server) fromClient(c *clientConn, frame []byte) {
	if reason, detail := s.checkFromClient(c, frame); reason != "" {
		s.drop(c, reason, dropMessages[reason], detail...)
		return
	}
	if err := s.tun.WriteFrame(frame); err != nil {
		s.drop(c, DropTunWrite, "tun write failed", "err", err)
	}
}

// dropMessages are the log lines of checkFromClient's drop reasons.
var dropMessages = map[string]string{
	DropMalformed:   "malformed packet from peer",
	DropBadOffload:  "bad offload header from peer",
	DropSpoofed:     "packet with a source that is neither the peer's address nor in its subnets",
	DropACL:         "packet to a destination the peer is not allowed",
	DropGatewayHost: "packet to the gateway's own address that is not a ping (the peer's allowed does not name the gateway)",
}

// checkFromClient decides whether a frame from a client may go into the
// TUN: "" if so, else the drop reason and what to log with it. Its offload
// header must describe its packet, the packet's source must be the
// client's own address or within its subnets (site-to-site), and its
// destination within what the peer is allowed to reach. gtund's own tunnel
// address answers pings (diagnostics) and nothing else unless the peer's
// allowed names it: packets to it go to the host's own sockets (sshd, the
// metrics port), which are not the cluster.
func (s *Server) checkFromClient(c *clientConn, frame []byte) (reason string, detail []any) {
	if len(frame) <= packet.VnetHdrLen {
		return DropMalformed, []any{"err", "short frame"}
	}
	pkt := frame[packet.VnetHdrLen:]
	if h := packet.DecodeVnetHdr(frame); !h.Plain() {
		if err := h.Validate(pkt); err != nil {
			return DropBadOffload, []any{"err", err}
		}
	}
	src, dst, err := packet.Addrs(pkt)
	switch {
	case err != nil:
		return DropMalformed, []any{"err", err}
	case src != c.addr && !c.peer.fromSubnet(src):
		return DropSpoofed, []any{"src", src}
	}
	if _, ok := c.peer.allowed.Load().Lookup(dst); !ok {
		switch {
		case dst != s.cfg.Gateway:
			return DropACL, []any{"dst", dst}
		case !packet.EchoRequest(pkt):
			return DropGatewayHost, []any{"dst", dst}
		}
	}
	return "", nil
}

func (p *peerInfo) fromSubnet(a netip.Addr) bool {
	_, ok := p.subnets.Load().Lookup(a)
	return ok
}

func (s *Server) drop(c *clientConn, reason, msg string, args ...any) {
	s.drops.Inc(reason)
	name := ""
	if c != nil {
		c.peer.drops.Inc(reason)
		name = c.name
		args = append(args, "peer", name)
	}
	s.rate.Log(slog.LevelWarn, "drop:"+reason+":"+name, msg, args...)
}

func (s *Server) tunReadLoop(ctx context.Context) {
	s.tun.Frames(ctx, func(b *packet.Buf, dst netip.Addr) {
		var c *clientConn
		if i, ok := s.poolIndex(dst); ok {
			c = s.byAddr[i].Load()
		} else {
			c, _ = s.bySubnet.Load().Lookup(dst)
		}
		if c == nil {
			packet.Put(b)
			s.drops.Inc(DropNoRoute) // common and harmless (e.g. a client just left): count, don't log
			return
		}
		if !c.sess.Enqueue(b) {
			s.drop(c, DropQueueFull, "send queue full")
		}
	}, func() { s.drops.Inc(DropMalformed) })
}

// reload re-reads the config file. Routes, peers, keepalive and the rekey
// interval apply live; other keys need a restart and keep their running
// values. A bad file changes nothing.
func (s *Server) reload() error {
	_ = sdnotify.Notify("RELOADING=1")
	defer func() { _ = sdnotify.Notify("READY=1", "STATUS="+s.statusLine()) }()
	n, err := config.LoadServer(s.cfg.File)
	if err != nil {
		s.log.Error("reload failed; the running config stays", "err", err)
		return err
	}
	if keys := config.RestartOnly(s.cfg, n); len(keys) > 0 {
		s.log.Warn("reload: these keys change only with a restart; keeping the running values", "keys", keys)
	}
	s.mu.Lock()
	mapChanged := !slices.Equal(s.maps, n.Map)
	s.mu.Unlock()
	if mapChanged {
		// The table first: if the kernel refuses it, nothing else changes.
		if err := s.ensureNAT(s.natSpec(n.Map)); err != nil {
			s.log.Error("reload failed: cannot apply the new map; the running config stays", "err", err)
			return fmt.Errorf("apply map: %w", err)
		}
		s.log.Info("reload: map changed; connections through a changed mapping break", "map", n.Map)
	}
	newKeys := map[secure.PublicKey]bool{}
	for _, p := range n.Peers {
		newKeys[p.PublicKey] = true
	}
	var drop, push []*clientConn
	var added, removed, changed int
	s.mu.Lock()
	s.routes, s.maps, s.dns, s.keepalive, s.deadAfter, s.rekey = n.Routes, n.Map, n.DNS, n.Keepalive, n.DeadAfter, n.RekeyInterval
	s.guard.SetLimits(n.Handshake)
	s.hsTimeout.Store(int64(handshakeTimeout(n)))
	peers := make(map[secure.PublicKey]*peerInfo, len(n.Peers))
	for _, p := range n.Peers {
		pi, ok := s.peers[p.PublicKey]
		if !ok {
			peers[p.PublicKey] = newPeerInfo(p, n.Map)
			added++
			continue
		}
		addrChanged := pi.cfg.Address != p.Address
		if !slices.Equal(pi.cfg.Allowed, p.Allowed) || !slices.Equal(pi.cfg.Subnets, p.Subnets) || addrChanged || pi.cfg.Name != p.Name {
			changed++
		}
		pi.cfg = p
		pi.allowed.Store(aclTable(virtual(n.Map, p.Allowed)))
		pi.subnets.Store(aclTable(p.Subnets))
		peers[p.PublicKey] = pi
		if c := s.sessions[p.PublicKey]; c != nil {
			if addrChanged {
				drop = append(drop, c) // it reconnects and gets its new address
			} else {
				push = append(push, c)
			}
		}
	}
	for k := range s.peers {
		if !newKeys[k] {
			removed++
		}
	}
	for k, c := range s.sessions {
		if !newKeys[k] {
			drop = append(drop, c)
		}
	}
	s.peers = peers
	s.syncSubnetsLocked()
	msgs := make([]*session.Msg, len(push))
	for i, c := range push {
		msgs[i] = s.configForLocked(c.peer, c.addr)
	}
	s.mu.Unlock()
	s.syncPoolPeers()
	for _, c := range drop {
		_ = c.sess.SendControl(&session.Msg{Type: session.TypeError, Error: "peer removed or its address changed by a config reload"})
		c.sess.Close()
	}
	for i, c := range push {
		c.sess.SetRekeyInterval(n.RekeyInterval) // gtund's side; the config carries it to the client's
		if err := c.sess.SendControl(msgs[i]); err != nil {
			s.log.Warn("reload: cannot push the new config", "peer", c.name, "err", err)
		}
	}
	s.log.Info("config reloaded", "routes", n.Routes, "peers", len(n.Peers), "added", added, "removed", removed,
		"changed", changed, "pushed", len(push), "disconnected", len(drop), "rekey_interval", n.RekeyInterval)
	return nil
}

// requestReload runs a reload in Run's loop, like SIGHUP, and waits for
// its outcome (for the control socket's POST /reload).
func (s *Server) requestReload(ctx context.Context) error {
	res := make(chan error, 1)
	select {
	case s.reloadReq <- res:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
