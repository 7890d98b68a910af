package config

import (
	"net"
	"net/netip"
	"time"

	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/transport"
)

// ServerFile is gtund.toml as written.
type ServerFile struct {
	Server ServerSection `toml:"server"`
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
	Routes         []string `toml:"routes"`
	NAT            *bool    `toml:"nat"`
	StateDir       string   `toml:"state_dir"`
	ControlSocket  string   `toml:"control_socket"`
	MetricsListen  string   `toml:"metrics_listen"`
	Keepalive      string   `toml:"keepalive"`
	DeadAfter      int      `toml:"dead_after"`
	Offload        *bool    `toml:"offload"`
	FECData        int      `toml:"fec_data"`
	FECParity      int      `toml:"fec_parity"`
}

// PeerSection is one [[peer]] table.
type PeerSection struct {
	Name      string   `toml:"name"`
	PublicKey string   `toml:"public_key"`
	Address   string   `toml:"address"`
	Allowed   []string `toml:"allowed"`
	Subnets   []string `toml:"subnets"`
}

// Server is a validated gtund config.
type Server struct {
	File           string
	Listen         string
	Transports     []string
	PrivateKey     secure.PrivateKey
	PrivateKeyFile string
	Tun            string
	MTU            int
	Pool           netip.Prefix
	Gateway        netip.Addr // the server's own tunnel address: the pool's first usable
	Routes         []netip.Prefix
	NAT            bool
	StateDir       string
	ControlSocket  string
	MetricsListen  string // Prometheus endpoint host:port; empty: off
	Keepalive      time.Duration
	DeadAfter      int
	Offload        bool // TUN offloads (virtio-net header, TSO) when the kernel has them
	FECData        int  // KCP forward error correction: data shards (0: off)
	FECParity      int  // and parity shards
	Peers          []Peer
	Log            Log
}

// Peer is a validated [[peer]].
type Peer struct {
	Name      string
	PublicKey secure.PublicKey
	Address   netip.Addr // zero: assigned from the pool
	Allowed   []netip.Prefix
	Subnets   []netip.Prefix
}

// LoadServer reads and validates a gtund config.
func LoadServer(path string) (*Server, error) {
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
		if t != transport.TCP && t != transport.KCP {
			l.errf("server.transports", "unknown transport %q (tcp or kcp)", t)
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
	out.Routes = l.prefixes("server.routes", s.Routes)
	for _, r := range out.Routes {
		if out.Pool.IsValid() && r.Overlaps(out.Pool) {
			l.errf("server.routes", "route %s overlaps pool %s", r, out.Pool)
		}
	}
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

	names := map[string]bool{}
	keys := map[secure.PublicKey]string{}
	addrs := map[netip.Addr]string{}
	for i, ps := range f.Peer {
		key := func(k string) string { return "peer." + itoa(i) + "." + k }
		p := Peer{Name: ps.Name}
		if p.Name == "" {
			l.errf(key("name"), "required")
		} else if names[p.Name] {
			l.errf(key("name"), "peer %q defined twice", p.Name)
		}
		names[p.Name] = true
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
			if !packet.Within(a, out.Routes) {
				l.errf(key("allowed"), "%s is not within any served route", a)
			}
		}
		if len(ps.Allowed) == 0 {
			p.Allowed = out.Routes
		}
		p.Subnets = l.prefixes(key("subnets"), ps.Subnets)
		if len(p.Subnets) > 0 {
			l.errf(key("subnets"), "site-to-site subnets are not available in this version yet")
		}
		out.Peers = append(out.Peers, p)
	}
	if err := l.err(); err != nil {
		return nil, err
	}
	return out, nil
}
