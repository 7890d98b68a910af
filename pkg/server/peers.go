package server

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/dnsname"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/sdnotify"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/store"
)

// subnetLinger is how long a disconnected peer's subnets stay routed into
// the TUN: a client that reconnects within it finds them in place (like its
// own routes, which it keeps while reconnecting), and meanwhile packets to
// them are dropped here rather than sent out of the default route.
const subnetLinger = 30 * time.Second

// peer is one configured [[peer]] and what gtund keeps of it across its
// sessions: its ACL, its subnets, its counters.
type peer struct {
	cfg     config.Peer // guarded by Server.mu
	lastTS  uint64      // newest handshake timestamp seen, refuses replays; Server.mu
	allowed atomic.Pointer[packet.Table[struct{}]]
	subnets atomic.Pointer[packet.Table[struct{}]] // sources accepted besides its address
	drops   drops                                  // of its packets, across its sessions
	dropLog dropLog                                // holds back log lines of its drops
	goneAt  time.Time                              // when its last session ended; Server.mu
	// dnsProxy: the peer may send DNS queries to gtund's proxy on the
	// gateway address (it was pushed that address as its DNS server).
	dnsProxy atomic.Bool

	// Counters across the peer's sessions, so that status and metrics
	// never go backwards when a session ends or is replaced. Server.mu.
	live     map[*peerSession]struct{} // registered sessions not yet ended
	closed   totals                    // of the sessions that ended
	sessions uint64                    // sessions established
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

// peerSession is a peer's session as the data plane routes to it: packets
// to addr (and to the peer's subnets) go to sess.
type peerSession struct {
	peer      *peer
	name      string
	addr      netip.Addr
	addr6     netip.Addr // with server.pool6: addr's IPv6 twin (ipam.Address6); else zero
	sess      *session.Session
	endpoint  string
	transport string
	since     time.Time
	push      *pusher // configs a reload sends it
}

func newPeerInfo(p config.Peer, maps []config.Mapping) *peer {
	pi := &peer{cfg: p, live: map[*peerSession]struct{}{}}
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

func aclTable(allowed []netip.Prefix) *packet.Table[struct{}] {
	m := map[netip.Prefix]struct{}{}
	for _, a := range allowed {
		m[a] = struct{}{}
	}
	return packet.NewTable(m)
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

func (s *Server) configFor(p *peer, addr netip.Addr) *session.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.configForLocked(p, addr)
}

func (s *Server) configForLocked(p *peer, addr netip.Addr) *session.Msg {
	routes := make([]string, 0, len(p.cfg.Allowed))
	for _, r := range virtual(s.maps, p.cfg.Allowed) {
		// The gateway's own address in allowed opens the host; the client
		// reaches it on the tunnel's subnet already, a route would only
		// collide with another server's gateway of the same pool.
		if !s.cfg.IsGatewayHost(r) {
			routes = append(routes, r.String())
		}
	}
	var subnets []string
	for _, sn := range p.cfg.Subnets {
		subnets = append(subnets, sn.String())
	}
	m := &session.Msg{Type: session.TypeConfig, Version: secure.ProtocolVersion,
		Address: netip.PrefixFrom(addr, s.cfg.Pool.Bits()).String(), Gateway: s.cfg.Gateway.String(),
		MTU: s.cfg.MTU, Routes: routes, KeepaliveMS: int(s.keepalive / time.Millisecond), DeadAfter: s.deadAfter,
		RekeyIntervalMS: int64(s.rekey / time.Millisecond), Subnets: subnets, DNS: s.dnsForLocked(p)}
	if s.cfg.Pool6.IsValid() {
		m.Address6 = netip.PrefixFrom(s.address6(addr), s.cfg.Pool6.Bits()).String()
		m.Gateway6 = s.cfg.Gateway6.String()
	}
	return m
}

// address6 is the IPv6 tunnel address of the client with IPv4 address a,
// zero without server.pool6.
func (s *Server) address6(a netip.Addr) netip.Addr {
	if !s.cfg.Pool6.IsValid() {
		return netip.Addr{}
	}
	return ipam.Address6(s.cfg.Pool, s.cfg.Pool6, a)
}

// dnsForLocked is the split DNS pushed to a peer: the configured servers
// its ACL lets it reach (none: no DNS for it, since its queries would be
// dropped). With a map, the peer is pushed gtund's own DNS proxy instead
// (the gateway address), which answers with the virtual addresses, if its
// ACL lets it reach one of the servers.
func (s *Server) dnsForLocked(p *peer) *session.DNS {
	p.dnsProxy.Store(false)
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
	if dnsProxied(s.dns, s.maps) {
		d.Servers = []string{s.cfg.Gateway.String()}
		d.Domains = virtualZones(s.dns.Domains, s.maps)
		p.dnsProxy.Store(true)
	}
	return d
}

// virtualZones gives each reverse-lookup zone of domains that lies inside
// a mapped real prefix under its virtual prefix (244.10.in-addr.arpa is
// 100.100.in-addr.arpa with 10.244.0.0/16=100.100.0.0/16): clients look up
// the virtual addresses, and gtund's proxy asks the cluster for the real
// ones. Other domains stay.
func virtualZones(domains []string, maps []config.Mapping) []string {
	out := make([]string, 0, len(domains))
	for _, d := range domains {
		if zone, ok := dnsname.ReverseZone(d); ok {
			if v := config.Virtual(maps, zone); v != zone {
				if name, ok := dnsname.ReverseZoneName(v); ok {
					d = name
				}
			}
		}
		out = append(out, d)
	}
	return out
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
func planSubnets(now time.Time, peers map[secure.PublicKey]*peer, sessions map[secure.PublicKey]*peerSession,
	linger time.Duration) (map[netip.Prefix]*peerSession, []netip.Prefix) {
	table := map[netip.Prefix]*peerSession{}
	var routes []netip.Prefix
	for k, p := range peers {
		if len(p.cfg.Subnets) == 0 {
			continue
		}
		ps := sessions[k]
		lingering := ps == nil && !p.goneAt.IsZero() && now.Sub(p.goneAt) < linger
		for _, sn := range p.cfg.Subnets {
			if ps != nil {
				table[sn] = ps
			}
			if ps != nil || lingering {
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

// register makes ps the session of key, replacing (and closing) an older one:
// a client that reconnects before its old session timed out takes over. It
// refuses when the peer was removed (by a reload) meanwhile.
func (s *Server) register(key secure.PublicKey, ps *peerSession) bool {
	s.mu.Lock()
	if s.peers[key] != ps.peer {
		s.mu.Unlock()
		return false
	}
	old := s.sessions[key]
	s.sessions[key] = ps
	ps.peer.live[ps] = struct{}{}
	ps.peer.sessions++
	if old != nil && old.addr != ps.addr {
		s.slot(old.addr).CompareAndSwap(old, nil)
	}
	s.slot(ps.addr).Store(ps)
	ps.peer.goneAt = time.Time{}
	if len(ps.peer.cfg.Subnets) > 0 {
		s.syncSubnetsLocked()
	}
	s.mu.Unlock()
	if old != nil {
		s.log.Info("replacing older session of peer", "peer", ps.name, "old_endpoint", old.endpoint)
		old.sess.Close()
	}
	_ = sdnotify.Status(s.statusLine())
	return true
}

func (s *Server) unregister(key secure.PublicKey, ps *peerSession) {
	s.mu.Lock()
	if s.sessions[key] == ps {
		delete(s.sessions, key)
		ps.peer.goneAt = time.Now()
		if len(ps.peer.cfg.Subnets) > 0 {
			s.syncSubnetsLocked()
			// Withdraw the routes unless it is back by then.
			time.AfterFunc(subnetLinger+100*time.Millisecond, s.syncSubnets)
		}
	}
	if _, ok := ps.peer.live[ps]; ok {
		delete(ps.peer.live, ps)
		ps.peer.closed.add(ps.sess)
	}
	s.slot(ps.addr).CompareAndSwap(ps, nil)
	s.mu.Unlock()
	_ = sdnotify.Status(s.statusLine())
}

// slot is the routing slot of a pool address (which every client address is).
func (s *Server) slot(a netip.Addr) *atomic.Pointer[peerSession] {
	i, _ := s.poolIndex(a)
	return &s.byAddr[i]
}

// poolIndex is a's offset in the pool, and whether a is in the pool: an
// IPv4 pool address, or the IPv6 address of one (its twin shares the slot).
func (s *Server) poolIndex(a netip.Addr) (int, bool) {
	if !a.Is4() {
		if !s.cfg.Pool6.IsValid() {
			return 0, false
		}
		return ipam.Offset6(s.cfg.Pool, s.cfg.Pool6, a)
	}
	if !s.cfg.Pool.Contains(a) {
		return 0, false
	}
	x, base := a.As4(), s.cfg.Pool.Addr().As4()
	return int(binary.BigEndian.Uint32(x[:]) - binary.BigEndian.Uint32(base[:])), true
}

func (p *peer) fromSubnet(a netip.Addr) bool {
	_, ok := p.subnets.Load().Lookup(a)
	return ok
}

// replicaRecord is what this replica publishes in etcd: its sessions, for
// `gtund peer list` on any replica.
func (s *Server) replicaRecord() store.Replica {
	r := store.Replica{Name: s.cfg.Store.Replica, Listen: s.listenAddrs, Since: s.started}
	s.mu.Lock()
	h := sha256.New()
	fmt.Fprintln(h, s.cfg.Pool, s.cfg.Pool6, s.cfg.NAT, s.cfg.MTU, s.cfg.Transports, s.routes, s.maps, s.dns.Servers, s.dns.Domains,
		s.keepalive, s.deadAfter, s.rekey, s.cfg.PrivateKey.Public())
	r.Served = hex.EncodeToString(h.Sum(nil))[:12]
	r.SessionsTotal = len(s.sessions)
	for _, ps := range s.sessions {
		r.Sessions = append(r.Sessions, store.ReplicaSession{Peer: ps.name, Address: ps.addr.String(), Endpoint: ps.endpoint, Since: ps.since})
	}
	s.mu.Unlock()
	slices.SortFunc(r.Sessions, func(a, b store.ReplicaSession) int { return strings.Compare(a.Peer, b.Peer) })
	if len(r.Sessions) > store.MaxPublishedSessions {
		r.Sessions = r.Sessions[:store.MaxPublishedSessions]
	}
	return r
}
