// Package server is gtund's logic: it terminates clients (transport, Noise,
// session), assigns their tunnel addresses, and moves packets between each
// client and the TUN device, enforcing anti-spoofing and the peer's ACL.
//
// server.go is gtund's lifecycle, admission.go a connection's way to a
// session, peers.go the peers and their sessions, reload.go a reload, and
// dataplane.go where every packet goes.
package server

import (
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/control"
	"github.com/gtun/gtun/pkg/device"
	"github.com/gtun/gtun/pkg/dgram"
	"github.com/gtun/gtun/pkg/guard"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/metrics"
	"github.com/gtun/gtun/pkg/nat"
	"github.com/gtun/gtun/pkg/nlwatch"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/pause"
	"github.com/gtun/gtun/pkg/reconcile"
	"github.com/gtun/gtun/pkg/route"
	"github.com/gtun/gtun/pkg/sdnotify"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/stats"
	"github.com/gtun/gtun/pkg/store"
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

// Server is a running gtund.
type Server struct {
	// cfg is the config gtund started with. Fields a reload can change
	// (routes, peers, keepalive, rekey interval) are copied below and guarded by mu; the
	// rest need a restart and are never written after New.
	cfg  *config.Server
	log  *slog.Logger
	rate *lograte.Limiter
	dev  device.Device // the TUN device: a tun.Keeper, or in tests a memdev
	pool *ipam.Pool

	mu        sync.Mutex
	routes    []netip.Prefix
	maps      []config.Mapping // real prefixes served under virtual ones (server.map)
	dns       config.DNS
	dnsProxy  *dnsProxy // answers DNS on the gateway address while dns and map are set; nil otherwise
	keepalive time.Duration
	deadAfter int
	rekey     time.Duration // how long a session's send keys live, both sides
	peers     map[secure.PublicKey]*peer
	sessions  map[secure.PublicKey]*peerSession
	started   time.Time

	// byAddr routes packets read from the TUN to the client owning the
	// destination: one slot per pool address, updated in place as sessions
	// come and go (a table rebuilt per session made 1,000 connecting clients
	// cost a million map inserts).
	byAddr []atomic.Pointer[peerSession]
	// bySubnet routes packets to peers' subnets (site-to-site) by longest
	// prefix; rebuilt when a peer with subnets comes or goes.
	bySubnet atomic.Pointer[packet.Table[*peerSession]]
	// subnetRoutes keeps the connected (and lingering) peers' subnets
	// routed into the TUN.
	subnetRoutes *route.Reconciler

	guard       *guard.Guard           // admits handshakes: per-source rate, caps on those in progress
	kcp         *transport.KCPListener // the datagram listener kcp and udp ride in; nil without either
	responder   *secure.Responder      // answers first messages on every transport: mac1, replay filter, DH
	hsTimeout   atomic.Int64           // nanoseconds from accept to hello; a reload may change it
	reloadReq   chan chan reloadResult // reloads asked for over the control socket
	hsFailures  stats.Reasons
	events      *nlwatch.Hub   // netlink subscriptions of the TUN keeper and the subnet routes
	book        reconcile.Book // heals and fights of every part kept in place
	natMu       sync.Mutex     // serializes building the nftables table: setup, reload, repair
	natApplied  nat.Spec       // the table as last built; natMu
	drops       drops          // by the data plane: every peer's, and what came from the TUN
	mirror      *store.Mirror  // follows etcd (backend etcd); nil with the file store
	storeReload chan struct{}  // the mirror wrote new peers to the cache: reload (cap 1)
	wg          sync.WaitGroup
	listenAddrs []string
}

// New validates what can be checked before touching the system.
func New(cfg *config.Server, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, log: log, rate: lograte.New(log, 10*time.Second),
		peers: map[secure.PublicKey]*peer{}, sessions: map[secure.PublicKey]*peerSession{},
		guard:  guard.New(cfg.Handshake),
		routes: cfg.Routes, maps: cfg.Map, dns: cfg.DNS, keepalive: cfg.Keepalive, deadAfter: cfg.DeadAfter, rekey: cfg.RekeyInterval}
	s.bySubnet.Store(packet.NewTable(map[netip.Prefix]*peerSession{}))
	s.reloadReq = make(chan chan reloadResult)
	s.storeReload = make(chan struct{}, 1)
	for _, p := range cfg.Peers {
		s.peers[p.PublicKey] = newPeerInfo(p, cfg.Map)
	}
	s.byAddr = make([]atomic.Pointer[peerSession], 1<<(32-cfg.Pool.Bits()))
	s.hsTimeout.Store(int64(handshakeTimeout(cfg)))
	s.responder = secure.NewResponder(secure.ServerConfig{Private: cfg.PrivateKey, Authorize: s.authorize})
	return s
}

// takeStorePeers takes the peers that the store's first load wrote to the
// cache, before anything is served (Run's loop would otherwise reload them
// a moment after the listeners open). A config that no longer loads keeps
// the peers read at start, and the reload that follows says why.
func (s *Server) takeStorePeers() {
	select {
	case <-s.storeReload:
	default:
		return // nothing new
	}
	n, err := config.LoadServer(s.cfg.File)
	if err != nil {
		s.storeReload <- struct{}{} // Run's loop reloads, and says why it fails
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.Peers = n.Peers
	s.peers = make(map[secure.PublicKey]*peer, len(n.Peers))
	for _, p := range n.Peers {
		s.peers[p.PublicKey] = newPeerInfo(p, s.cfg.Map)
	}
}

// natSpec is gtund's nftables table for a map.
func (s *Server) natSpec(maps []config.Mapping) nat.Spec {
	spec := nat.Spec{Table: NATTable(s.cfg.Tun), Tun: s.cfg.Tun, ClampMSS: true}
	if s.cfg.NAT {
		spec.Masquerade = []netip.Prefix{s.cfg.Pool}
		if s.cfg.Pool6.IsValid() {
			spec.Masquerade = append(spec.Masquerade, s.cfg.Pool6)
		}
	}
	spec.IPv6 = s.cfg.Pool6.IsValid()
	for _, m := range maps {
		spec.Netmap = append(spec.Netmap, nat.Netmap{Virtual: m.Virtual, Real: m.Real})
	}
	return spec
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
	keeper, err := tun.NewKeeper(s.cfg.Tun, s.cfg.Offload, s.log, s.shared())
	if err != nil {
		return err
	}
	s.dev = keeper
	defer func() {
		s.dev.Close()
		s.log.Info("removed tun device", "tun", s.cfg.Tun)
	}()
	if changed, err := nat.EnableIPv4Forwarding(); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	} else if changed {
		s.log.Info("enabled net.ipv4.ip_forward")
	}
	if s.pool, err = ipam.Open(s.cfg.Pool, s.cfg.Gateway, config.CacheDir(s.cfg.StateDir, s.cfg.Store), s.log); err != nil {
		return err
	}
	if s.cfg.Store.Shared() {
		e, err := store.Dial(s.cfg.Store)
		if err != nil {
			return err
		}
		defer e.Close()
		s.pool.SetClaimer(e, crc32.ChecksumIEEE([]byte(s.cfg.Store.Replica)))
		s.mirror = store.NewMirror(e, config.CacheDir(s.cfg.StateDir, s.cfg.Store), s.cfg.Store.Replica, s.log,
			func() {
				select {
				case s.storeReload <- struct{}{}:
				default: // one pending reload reads the newest cache
				}
			}, s.pool)
		s.mirror.SetPublish(s.replicaRecord)
		if err := s.mirror.Prime(ctx); err == nil {
			s.takeStorePeers()
		}
	}
	s.syncPoolPeers()

	addrs := []netip.Prefix{netip.PrefixFrom(s.cfg.Gateway, s.cfg.Pool.Bits())}
	if s.cfg.Pool6.IsValid() && !tun.IPv6Enabled(s.cfg.Tun) {
		return fmt.Errorf("server.pool6 is set but IPv6 is off on %s (a kernel without IPv6, or net.ipv6.conf.default.disable_ipv6 = 1)", s.cfg.Tun)
	}
	if s.cfg.Pool6.IsValid() {
		addrs = append(addrs, netip.PrefixFrom(s.cfg.Gateway6, s.cfg.Pool6.Bits()))
		if changed, err := nat.EnableIPv6Forwarding(); err != nil {
			return fmt.Errorf("enable IPv6 forwarding: %w", err)
		} else if changed {
			s.log.Info("enabled net.ipv6.conf.all.forwarding")
		}
	}
	if err := s.dev.Set(s.cfg.MTU, addrs); err != nil {
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
	s.mu.Lock()
	s.syncDNSProxyLocked()
	s.mu.Unlock()
	defer s.stopDNSProxy()
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
		case transport.KCP, transport.UDP:
			if s.kcp != nil { // udp and kcp share the datagram listener: the hello says which a session is
				addr = s.kcp.Addr()
				break
			}
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
	ctl.HandleReload(func() ([]string, error) { return s.requestReload(ctx) })
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
	if s.mirror != nil {
		s.goRun(func() { s.mirror.Run(ctx) })
		s.goRun(func() { s.pool.RunCacheWriter(ctx) })
	}
	s.goRun(func() { s.events.Run(ctx) })
	s.goRun(func() { s.dev.Run(ctx) })
	s.goRun(func() { s.watchSystem(ctx) })
	s.goRun(func() { // counts of a stopped flood reach the log
		for pause.For(ctx, systemCheckInterval) {
			s.rate.Flush()
			s.flushDropLogs()
		}
	})
	s.goRun(func() {
		if err := s.subnetRoutes.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("route reconciler stopped", "err", err)
		}
	})
	s.goRun(func() { s.readDevice(ctx) })
	s.log.Info("gtund ready", "listen", s.listenAddrs, "tun", s.cfg.Tun, "pool", s.cfg.Pool, "pool6", s.cfg.Pool6,
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
			_, _ = s.reload() // logged
		case <-s.storeReload:
			_, _ = s.reload() // logged
		case res := <-s.reloadReq:
			keys, err := s.reload()
			res <- reloadResult{keys, err}
		}
	}
	s.log.Info("shutting down")
	_ = sdnotify.Stopping()
	closeAll(listeners)
	s.mu.Lock()
	for _, ps := range s.sessions {
		s.disconnect(ps, "server shutting down") // bounded: a blackholed client does not hold up the stop
	}
	s.mu.Unlock()
	s.dev.Close() // unblocks the TUN reader
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

// statusLine is the one-line state systemd shows.
func (s *Server) statusLine() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("listening on %s; %d of %d peers connected", strings.Join(s.listenAddrs, ","), len(s.sessions), len(s.peers))
}
