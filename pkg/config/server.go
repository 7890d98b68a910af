package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/gtun/gtun/pkg/dgram"
	"github.com/gtun/gtun/pkg/guard"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/transport"
)

// ServerFile is gtund.toml as written.
type ServerFile struct {
	Server ServerSection `toml:"server"`
	Store  StoreSection  `toml:"store"`
	Peer   []PeerSection `toml:"peer"`
	Log    Log           `toml:"log"`
}

// ServerSection is the [server] table.
type ServerSection struct {
	Listen         string   `toml:"listen"`
	Transports     []string `toml:"transports"`
	PrivateKeyFile string   `toml:"private_key_file"`
	Tun            string   `toml:"tun"`
	MTU            int      `toml:"mtu"`
	Pool           string   `toml:"pool"`
	Pool6          string   `toml:"pool6"`
	Routes         []string `toml:"routes"`
	Map            []string `toml:"map"`
	NAT            *bool    `toml:"nat"`
	StateDir       string   `toml:"state_dir"`
	ControlSocket  string   `toml:"control_socket"`
	MetricsListen  string   `toml:"metrics_listen"`
	Keepalive      string   `toml:"keepalive"`
	DeadAfter      int      `toml:"dead_after"`
	RekeyInterval  string   `toml:"rekey_interval"`
	Offload        *bool    `toml:"offload"`
	FECData        int      `toml:"fec_data"`
	FECParity      int      `toml:"fec_parity"`
	DNS            *DNSTOML `toml:"dns"`

	HandshakeTimeout       string `toml:"handshake_timeout"`
	HandshakeRate          int    `toml:"handshake_rate"`
	HandshakeBurst         int    `toml:"handshake_burst"`
	MaxHandshakes          int    `toml:"max_handshakes"`
	MaxHandshakesPerSource int    `toml:"max_handshakes_per_source"`
	MaxHandshakesKnown     int    `toml:"max_handshakes_known"`
	KnownSourceTTL         string `toml:"known_source_ttl"`
}

// DNSTOML is [server] dns = { servers = [...], domains = [...] }.
type DNSTOML struct {
	Servers []string `toml:"servers"`
	Domains []string `toml:"domains"`
}

// PeerSection is one [[peer]] table.
type PeerSection struct {
	Name      string   `toml:"name"`
	PublicKey string   `toml:"public_key"`
	Address   string   `toml:"address"`
	Allowed   []string `toml:"allowed"`
	Subnets   []string `toml:"subnets"`
}

// Server is a validated gtund config. Each field's reload tag says whether
// a reload applies it (see RestartOnly).
type Server struct {
	File           string            `reload:"-"`
	Listen         string            `reload:"server.listen,restart"`
	Transports     []string          `reload:"server.transports,restart"`
	PrivateKey     secure.PrivateKey `reload:"server.private_key_file,restart"`
	PrivateKeyFile string            `reload:"server.private_key_file,restart"`
	Tun            string            `reload:"server.tun,restart"`
	MTU            int               `reload:"server.mtu,restart"`
	Pool           netip.Prefix      `reload:"server.pool,restart"`
	Gateway        netip.Addr        `reload:"server.pool,restart"` // the server's own tunnel address: the pool's first usable
	// Pool6 gives every client an IPv6 tunnel address besides its IPv4
	// one (zero: none). A client's IPv6 address has the host bits of its
	// IPv4 address (ipam.Address6), so one sticky lease holds both.
	Pool6         netip.Prefix   `reload:"server.pool6,restart"`
	Gateway6      netip.Addr     `reload:"server.pool6,restart"` // the server's own IPv6 tunnel address
	Routes        []netip.Prefix `reload:"server.routes,live"`
	Map           []Mapping      `reload:"server.map,live"` // served real prefixes shown to clients under virtual ones
	NAT           bool           `reload:"server.nat,restart"`
	StateDir      string         `reload:"server.state_dir,restart"`
	ControlSocket string         `reload:"server.control_socket,restart"`
	MetricsListen string         `reload:"server.metrics_listen,restart"` // Prometheus endpoint host:port; empty: off
	PeersFile     string         `reload:"-"`                             // follows state_dir and store: state_dir/peers.toml (file store) or the etcd cache's, read when it exists
	Store         Store          `reload:"store,restart"`
	Keepalive     time.Duration  `reload:"server.keepalive,live"`
	DeadAfter     int            `reload:"server.dead_after,live"`
	RekeyInterval time.Duration  `reload:"server.rekey_interval,live"` // how long each side's send key lives; pushed to clients
	Offload       bool           `reload:"server.offload,restart"`     // TUN offloads (virtio-net header, TSO) when the kernel has them
	FECData       int            `reload:"server.fec_data,restart"`    // KCP forward error correction: data shards (0: off)
	FECParity     int            `reload:"server.fec_parity,restart"`  // and parity shards
	DNS           DNS            `reload:"server.dns,live"`            // pushed to clients for split DNS; zero: none
	// HandshakeTimeout bounds an unauthenticated connection: transport
	// accept to the client's hello. Handshake limits what may start one.
	HandshakeTimeout time.Duration `reload:"server.handshake_timeout,live"`
	Handshake        guard.Limits  `reload:"server.handshake_rate,live"` // and handshake_burst, max_handshakes, max_handshakes_per_source
	Peers            []Peer        `reload:"peer,live"`
	Log              Log           `reload:"log,restart"`
}

// DNS is what gtund pushes for split DNS: names under Domains are resolved
// by Servers (addresses within the served routes, so clients reach them
// through the tunnel).
type DNS struct {
	Servers []netip.Addr
	Domains []string // lower case, no trailing dot
}

// IsZero reports whether no split DNS is configured.
func (d DNS) IsZero() bool { return len(d.Servers) == 0 }

// Mapping serves the Real prefix under the Virtual one, 1:1 with the host
// bits kept (10.244.0.0/16=100.100.0.0/16: 10.244.1.20 is 100.100.1.20 to
// clients). Two clusters with the same pod CIDR can so be reached from one
// client at the same time. Both have the same length.
type Mapping struct {
	Real, Virtual netip.Prefix
}

func (m Mapping) String() string { return m.Real.String() + "=" + m.Virtual.String() }

// Virtual returns what clients see of p: p moved into the virtual prefix
// of the mapping whose real prefix holds it, or p itself when none does.
// The config guarantees a served prefix lies inside one real prefix or
// outside all of them.
func Virtual(maps []Mapping, p netip.Prefix) netip.Prefix {
	for _, m := range maps {
		if m.Real.Bits() <= p.Bits() && m.Real.Contains(p.Addr()) {
			return netip.PrefixFrom(Translate(m.Real, m.Virtual, p.Addr()), p.Bits())
		}
	}
	return p
}

// Translate moves a from prefix from into prefix to (of the same family
// and length): the network bits are to's, the host bits a's own, as the
// kernel's NETMAP does and NPTv6 does for a whole IPv6 prefix.
func Translate(from, to netip.Prefix, a netip.Addr) netip.Addr {
	if a.Is4() {
		x, net := a.As4(), to.Addr().As4()
		keepHost(x[:], net[:], from.Bits())
		return netip.AddrFrom4(x)
	}
	x, net := a.As16(), to.Addr().As16()
	keepHost(x[:], net[:], from.Bits())
	return netip.AddrFrom16(x)
}

// keepHost replaces the first bits of x by those of net.
func keepHost(x, net []byte, bits int) {
	for i := range x {
		switch {
		case bits >= 8:
			x[i] = net[i]
			bits -= 8
		case bits > 0:
			m := byte(0xff << (8 - bits))
			x[i] = net[i]&m | x[i]&^m
			bits = 0
		}
	}
}

// Peer is a validated [[peer]].
type Peer struct {
	Source    string // the file it is defined in: the config or the peers file
	Name      string
	PublicKey secure.PublicKey
	Address   netip.Addr // zero: assigned from the pool
	Allowed   []netip.Prefix
	// Subnets are networks behind this client (site-to-site): gtund routes
	// them into its TUN toward this client and accepts them as sources from it.
	Subnets []netip.Prefix
}

// PeersFileName is the peers file in state_dir: [[peer]] tables that
// `gtund peer add` writes and gtund reads in addition to its config.
const PeersFileName = "peers.toml"

// PeersFile is the [[peer]] list of the peers file.
type PeersFile struct {
	Peer []PeerSection `toml:"peer"`
}

// EncodePeers renders a peers file: header (comment lines), then one
// [[peer]] table per entry, keys left empty left out.
func EncodePeers(header string, list []PeerSection) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(header)
	for _, p := range list {
		var one bytes.Buffer
		if err := toml.NewEncoder(&one).Encode(PeersFile{Peer: []PeerSection{p}}); err != nil {
			return nil, fmt.Errorf("encode peer %q: %w", p.Name, err)
		}
		buf.WriteString("\n")
		for _, line := range strings.Split(strings.TrimSpace(one.String()), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasSuffix(line, ` = ""`) || strings.HasSuffix(line, " = []") {
				continue
			}
			buf.WriteString(line + "\n")
		}
	}
	return buf.Bytes(), nil
}

// LoadServer reads and validates a gtund config, with the peers file in its
// state_dir when there is one.
func LoadServer(path string) (*Server, error) {
	return loadServer(path, nil, false)
}

// LoadServerWithPeers validates the config at path as if its peers file
// held peers (the contents of a peers file): how `gtund peer add` checks
// a change before it writes it.
func LoadServerWithPeers(path string, peers []byte) (*Server, error) {
	return loadServer(path, peers, true)
}

// ParsePeersFile decodes a peers file strictly (syntax and unknown keys);
// the peers themselves are validated with the config they belong to.
func ParsePeersFile(path string, src []byte) ([]PeerSection, error) {
	var pf PeersFile
	l, err := decodeBytes(path, src, &pf)
	if err != nil {
		return nil, err
	}
	return pf.Peer, l.err()
}

func loadServer(path string, peersSrc []byte, override bool) (*Server, error) {
	var f ServerFile
	l, err := decode(path, &f)
	if err != nil {
		return nil, err
	}
	s := f.Server
	out := &Server{File: path, Log: f.Log}
	l.log(&out.Log)

	out.Listen = s.Listen
	if out.Listen == "" {
		out.Listen = net.JoinHostPort("0.0.0.0", "9623")
	}
	out.Listen = l.endpoint("server.listen", out.Listen)
	out.Transports = s.Transports
	if len(out.Transports) == 0 {
		out.Transports = []string{transport.TCP}
	}
	seen := map[string]bool{}
	for _, t := range out.Transports {
		if t != transport.TCP && t != transport.UDP && t != transport.KCP {
			l.errf("server.transports", "unknown transport %q (tcp, udp or kcp)", t)
		}
		if seen[t] {
			l.errf("server.transports", "%q listed twice", t)
		}
		seen[t] = true
	}
	out.FECData, out.FECParity = s.FECData, s.FECParity
	l.fec("server", s.FECData, s.FECParity)
	out.PrivateKeyFile = s.PrivateKeyFile
	out.PrivateKey = l.privateKey("server.private_key_file", s.PrivateKeyFile)
	out.Tun = s.Tun
	l.tunName("server.tun", &out.Tun, "gtund0")
	out.MTU = s.MTU
	if out.MTU == 0 {
		out.MTU = 1400
	}
	if out.MTU < 576 || out.MTU > 65535 {
		l.errf("server.mtu", "must be 576..65535, not %d", out.MTU)
	} else if slices.Contains(out.Transports, transport.UDP) && out.MTU > dgram.MaxPayload {
		l.errf("server.mtu", "must be at most %d with udp in transports (the largest packet a datagram carries), not %d", dgram.MaxPayload, out.MTU)
	}
	if s.Pool == "" {
		l.errf("server.pool", "required (e.g. \"100.64.240.0/24\")")
	} else if p, ok := l.prefix("server.pool", s.Pool); ok {
		if !p.Addr().Is4() || p.Bits() > 30 || p.Bits() < 16 {
			l.errf("server.pool", "must be an IPv4 prefix from /16 (65,536 addresses) to /30, not %s", p)
		} else {
			out.Pool = p
			out.Gateway = p.Addr().Next()
		}
	}
	if s.Pool6 != "" {
		out.Pool6, out.Gateway6 = l.pool6("server.pool6", s.Pool6, out.Pool)
		if out.Pool6.IsValid() && out.MTU < 1280 {
			l.errf("server.mtu", "must be at least 1280 with server.pool6 (IPv6's minimum link MTU), not %d", out.MTU)
		}
	}
	out.Routes = l.prefixes("server.routes", s.Routes)
	for _, r := range out.Routes {
		if !r.Addr().Is4() && !out.Pool6.IsValid() && s.Pool6 == "" {
			l.errf("server.routes", "IPv6 route %s needs server.pool6 (the clients' IPv6 tunnel addresses)", r)
		}
		for _, pool := range out.pools() {
			if r.Overlaps(pool) {
				l.errf("server.routes", "route %s overlaps pool %s", r, pool)
			}
		}
	}
	out.Map = l.maps("server.map", s.Map, out.pools(), out.Routes)
	out.NAT = s.NAT == nil || *s.NAT
	out.Offload = s.Offload == nil || *s.Offload
	out.StateDir = s.StateDir
	if out.StateDir == "" {
		out.StateDir = "/var/lib/gtund"
	}
	out.ControlSocket = s.ControlSocket
	if out.ControlSocket == "" {
		out.ControlSocket = "/run/gtund/gtund.sock"
	}
	out.MetricsListen = l.metricsListen("server.metrics_listen", s.MetricsListen)
	out.Keepalive = l.duration("server.keepalive", s.Keepalive, 2*time.Second)
	out.DeadAfter = s.DeadAfter
	if out.DeadAfter == 0 {
		out.DeadAfter = 3
	}
	if out.DeadAfter < 2 || out.DeadAfter > 100 {
		l.errf("server.dead_after", "must be 2..100 missed keepalives, not %d", out.DeadAfter)
	}
	out.RekeyInterval = l.duration("server.rekey_interval", s.RekeyInterval, secure.DefaultRekeyInterval)
	if out.RekeyInterval < secure.MinRekeyInterval || out.RekeyInterval > secure.MaxRekeyInterval {
		l.errf("server.rekey_interval", "must be 1s..1h, not %s", out.RekeyInterval)
	}

	out.HandshakeTimeout = l.duration("server.handshake_timeout", s.HandshakeTimeout, 5*time.Second)
	if out.HandshakeTimeout < time.Second || out.HandshakeTimeout > time.Minute {
		l.errf("server.handshake_timeout", "must be 1s..1m, not %s", out.HandshakeTimeout)
	}
	limit := func(key string, v, def, max int) int {
		if v == 0 {
			return def
		}
		if v < 1 || v > max {
			l.errf(key, "must be 1..%d, not %d", max, v)
		}
		return v
	}
	out.Handshake = guard.Limits{
		Rate:                float64(limit("server.handshake_rate", s.HandshakeRate, guard.DefaultRate, 1_000_000)),
		Burst:               limit("server.handshake_burst", s.HandshakeBurst, guard.DefaultBurst, 1_000_000),
		MaxPending:          limit("server.max_handshakes", s.MaxHandshakes, guard.DefaultMaxPending, 65536),
		MaxPendingPerSource: limit("server.max_handshakes_per_source", s.MaxHandshakesPerSource, guard.DefaultMaxPendingPerSource, 65536),
		MaxPendingKnown:     limit("server.max_handshakes_known", s.MaxHandshakesKnown, guard.DefaultMaxPendingKnown, 65536),
		KnownSourceTTL:      l.duration("server.known_source_ttl", s.KnownSourceTTL, guard.DefaultKnownSourceTTL),
	}
	if ttl := out.Handshake.KnownSourceTTL; ttl < time.Minute || ttl > 365*24*time.Hour {
		l.errf("server.known_source_ttl", "must be 1m..8760h, not %s", ttl)
	}
	if out.Handshake.MaxPendingPerSource > out.Handshake.MaxPending {
		l.errf("server.max_handshakes_per_source", "%d is more than max_handshakes (%d)", out.Handshake.MaxPendingPerSource, out.Handshake.MaxPending)
	}

	// The peers of the config, then those of the peers file: one list,
	// each entry checked against all before it, errors naming its own file.
	type peerEntry struct {
		l  *loader
		i  int
		ps PeerSection
	}
	var entries []peerEntry
	for i, ps := range f.Peer {
		entries = append(entries, peerEntry{l, i, ps})
	}
	out.Store = l.store(f.Store)
	out.PeersFile = filepath.Join(CacheDir(out.StateDir, out.Store), PeersFileName)
	if !override {
		switch peersSrc, err = os.ReadFile(out.PeersFile); {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			l.errs = append(l.errs, &Error{File: out.PeersFile, Msg: err.Error()})
		}
	}
	var pl *loader
	if peersSrc != nil {
		var pf PeersFile
		if pl, err = decodeBytes(out.PeersFile, peersSrc, &pf); err != nil {
			l.errs = append(l.errs, err)
		}
		for i, ps := range pf.Peer {
			entries = append(entries, peerEntry{pl, i, ps})
		}
	}
	names := map[string]string{} // the file each name is defined in
	keys := map[secure.PublicKey]string{}
	addrs := map[netip.Addr]string{}
	var subnetOwner []peerSubnet
	for _, e := range entries {
		l, i, ps := e.l, e.i, e.ps
		key := func(k string) string { return "peer." + itoa(i) + "." + k }
		p := Peer{Name: ps.Name, Source: l.file}
		if p.Name == "" {
			l.errf(key("name"), "required")
		} else if where, dup := names[p.Name]; dup && where == l.file {
			l.errf(key("name"), "peer %q defined twice", p.Name)
		} else if dup {
			l.errf(key("name"), "peer %q is also defined in %s", p.Name, where)
		}
		names[p.Name] = l.file
		p.PublicKey = l.publicKey(key("public_key"), ps.PublicKey)
		if other, dup := keys[p.PublicKey]; dup && ps.PublicKey != "" {
			l.errf(key("public_key"), "same key as peer %q", other)
		}
		keys[p.PublicKey] = p.Name
		if ps.Address != "" {
			a, err := netip.ParseAddr(ps.Address)
			switch {
			case err != nil:
				l.errf(key("address"), "bad address %q", ps.Address)
			case !a.Is4():
				l.errf(key("address"), "%s: address is the IPv4 tunnel address; the IPv6 one follows from it (pool6 with its host bits)", a)
			case !out.Pool.IsValid():
			case !out.Pool.Contains(a):
				l.errf(key("address"), "%s is not in pool %s", a, out.Pool)
			case a == out.Pool.Addr() || a == out.Gateway || a == ipam.Broadcast(out.Pool):
				l.errf(key("address"), "%s is the pool's network, broadcast or the server's own address", a)
			case addrs[a] != "":
				l.errf(key("address"), "%s is also the address of peer %q", a, addrs[a])
			default:
				p.Address = a
				addrs[a] = p.Name
			}
		}
		p.Allowed = l.prefixes(key("allowed"), ps.Allowed)
		for _, a := range p.Allowed {
			// The gateway's own address opens the gtund host to the peer
			// (its sshd, its metrics port); without it the host answers
			// the peer's pings and nothing else.
			if !packet.Within(a, out.Routes) && !out.IsGatewayHost(a) {
				own := out.Gateway.String() + "/32"
				if out.Gateway6.IsValid() {
					own += " or " + out.Gateway6.String() + "/128"
				}
				l.errf(key("allowed"), "%s is not within any served route (nor the gateway's own address %s)", a, own)
			}
		}
		if len(ps.Allowed) == 0 {
			p.Allowed = out.Routes
		}
		p.Subnets = l.prefixes(key("subnets"), ps.Subnets)
		for _, sn := range p.Subnets {
			l.subnet(key("subnets"), sn, out, subnetOwner)
			subnetOwner = append(subnetOwner, peerSubnet{sn, p.Name})
		}
		out.Peers = append(out.Peers, p)
	}
	if pl != nil {
		l.errs = append(l.errs, pl.errs...)
	}
	out.DNS = l.dns(s.DNS, out.Routes)
	if err := l.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// pools are the tunnel pools: the IPv4 one, and pool6 when set.
func (s *Server) pools() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []netip.Prefix{s.Pool, s.Pool6} {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// IsGatewayHost reports whether p is gtund's own tunnel address, of either
// family, as a host prefix: in a peer's allowed it opens the gtund host.
func (s *Server) IsGatewayHost(p netip.Prefix) bool {
	return (s.Gateway.IsValid() && p == netip.PrefixFrom(s.Gateway, 32)) ||
		(s.Gateway6.IsValid() && p == netip.PrefixFrom(s.Gateway6, 128))
}

// pool6 validates server.pool6: an IPv6 prefix with room for the host bits
// of every IPv4 pool address, since a client's IPv6 address carries them.
func (l *loader) pool6(key, s string, pool netip.Prefix) (netip.Prefix, netip.Addr) {
	p, ok := l.prefix(key, s)
	if !ok {
		return netip.Prefix{}, netip.Addr{}
	}
	if p.Addr().Is4() || p.Addr().Is4In6() {
		l.errf(key, "must be an IPv6 prefix (e.g. \"fd64:240::/64\"), not %s", p)
		return netip.Prefix{}, netip.Addr{}
	}
	if !pool.IsValid() {
		return netip.Prefix{}, netip.Addr{}
	}
	if max := 128 - (32 - pool.Bits()); p.Bits() > max || p.Bits() < 16 {
		l.errf(key, "must be /16 to /%d (room for the %d host bits of pool %s), not /%d", max, 32-pool.Bits(), pool, p.Bits())
		return netip.Prefix{}, netip.Addr{}
	}
	return p, ipam.Address6(pool, p, pool.Addr().Next())
}

type peerSubnet struct {
	prefix netip.Prefix
	peer   string
}

// subnet checks one of a peer's subnets: gtund routes it into its TUN, so
// it must not overlap the tunnel pool, what the server serves, or another
// peer's subnets (a destination would then have two owners).
func (l *loader) subnet(key string, sn netip.Prefix, s *Server, others []peerSubnet) {
	if !sn.Addr().Is4() && !s.Pool6.IsValid() {
		// gtund forwards IPv6 (and has its ip6 table) only with pool6.
		l.errf(key, "IPv6 subnet %s needs server.pool6", sn)
	}
	for _, pool := range s.pools() {
		if sn.Overlaps(pool) {
			l.errf(key, "subnet %s overlaps pool %s", sn, pool)
		}
	}
	for _, r := range s.Routes {
		if sn.Overlaps(r) {
			l.errf(key, "subnet %s overlaps served route %s", sn, r)
		}
	}
	for _, m := range s.Map {
		if sn.Overlaps(m.Virtual) {
			l.errf(key, "subnet %s overlaps virtual prefix %s of server.map", sn, m.Virtual)
		}
	}
	for _, o := range others {
		if sn.Overlaps(o.prefix) {
			l.errf(key, "subnet %s overlaps %s, a subnet of peer %q", sn, o.prefix, o.peer)
		}
	}
}

// dns validates [server] dns: both lists or neither, servers within the
// served routes (clients send to them through the tunnel), domains valid
// names.
func (l *loader) dns(d *DNSTOML, routes []netip.Prefix) DNS {
	var out DNS
	if d == nil {
		return out
	}
	if len(d.Servers) == 0 {
		l.errf("server.dns.servers", "required when server.dns is set (e.g. [\"10.96.0.10\"])")
	}
	if len(d.Domains) == 0 {
		l.errf("server.dns.domains", "required when server.dns is set (e.g. [\"cluster.local\"])")
	}
	seen := map[netip.Addr]bool{}
	for _, sv := range d.Servers {
		a, err := netip.ParseAddr(sv)
		switch {
		case err != nil || a.Zone() != "" || a.Is4In6():
			l.errf("server.dns.servers", "bad IP address %q", sv)
		case seen[a]:
			l.errf("server.dns.servers", "%s listed twice", a)
		case !packet.Within(netip.PrefixFrom(a, a.BitLen()), routes):
			l.errf("server.dns.servers", "%s is not within any served route (clients reach it through the tunnel)", a)
		default:
			seen[a] = true
			out.Servers = append(out.Servers, a)
		}
	}
	out.Domains = l.domains("server.dns.domains", d.Domains)
	return out
}

// maps validates server.map: "REAL=VIRTUAL" pairs of prefixes of one
// family and the same length (IPv6 pairs map like NPTv6, a prefix for a
// prefix). Neither side may overlap a pool or another entry's same
// side; a virtual prefix may not overlap a served route (an address would
// then mean two things); a served route that touches a real prefix must lie
// inside it, so that it has exactly one virtual name.
func (l *loader) maps(key string, in []string, pools []netip.Prefix, routes []netip.Prefix) []Mapping {
	var out []Mapping
	for _, s := range in {
		realS, virtS, ok := strings.Cut(s, "=")
		if !ok {
			l.errf(key, "%q is not REAL=VIRTUAL (e.g. \"10.244.0.0/16=100.100.0.0/16\")", s)
			continue
		}
		real, ok1 := l.prefix(key, realS)
		virt, ok2 := l.prefix(key, virtS)
		if !ok1 || !ok2 {
			continue
		}
		m := Mapping{Real: real, Virtual: virt}
		switch {
		case real.Addr().Is4() != virt.Addr().Is4():
			l.errf(key, "%s: both sides must be of one family (IPv4 to IPv4, IPv6 to IPv6)", m)
			continue
		case real.Bits() == 0:
			l.errf(key, "%s: a /0 cannot be mapped", m)
			continue
		case real.Bits() != virt.Bits():
			l.errf(key, "%s: both sides must have the same length (/%d is not /%d): addresses map 1:1", m, real.Bits(), virt.Bits())
			continue
		case real == virt:
			l.errf(key, "%s maps a prefix onto itself", m)
			continue
		}
		bad := false
		for _, side := range []netip.Prefix{real, virt} {
			for _, pool := range pools {
				if !side.Overlaps(pool) {
					continue
				}
				l.errf(key, "%s: %s overlaps pool %s", m, side, pool)
				bad = true
			}
		}
		for _, o := range out {
			if real.Overlaps(o.Real) || virt.Overlaps(o.Virtual) || real.Overlaps(o.Virtual) || virt.Overlaps(o.Real) {
				l.errf(key, "%s overlaps %s", m, o)
				bad = true
			}
		}
		for _, r := range routes {
			if virt.Overlaps(r) {
				l.errf(key, "%s: virtual %s overlaps served route %s", m, virt, r)
				bad = true
			}
			if real.Overlaps(r) && !(real.Bits() <= r.Bits() && real.Contains(r.Addr())) {
				l.errf(key, "%s: served route %s is not inside real %s (split the route, or map a prefix that holds it)", m, r, real)
				bad = true
			}
		}
		if !bad {
			out = append(out, m)
		}
	}
	return out
}
