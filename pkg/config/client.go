package config

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/gtun/gtun/pkg/dnsname"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/transport"
)

// ClientFile is gtun.toml as written.
type ClientFile struct {
	Client ClientSection     `toml:"client"`
	Server []ServerEntryTOML `toml:"server"`
	Log    Log               `toml:"log"`
}

// ClientSection is the [client] table.
type ClientSection struct {
	PrivateKeyFile string `toml:"private_key_file"`
	Tun            string `toml:"tun"`
	Gateway        bool   `toml:"gateway"`
	Masquerade     *bool  `toml:"masquerade"`
	ControlSocket  string `toml:"control_socket"`
	MetricsListen  string `toml:"metrics_listen"`
	Offload        *bool  `toml:"offload"`
}

// ServerEntryTOML is one [[server]] table.
type ServerEntryTOML struct {
	Name      string   `toml:"name"`
	Endpoints []string `toml:"endpoints"`
	Transport string   `toml:"transport"`
	PublicKey string   `toml:"public_key"`
	Routes    []string `toml:"routes"`
	FECData   int      `toml:"fec_data"`
	FECParity int      `toml:"fec_parity"`
	Failback  *bool    `toml:"failback"`
	// FailbackInterval is how often the preferred endpoint/transport is tried.
	FailbackInterval string `toml:"failback_interval"`
	EndpointOrder    string `toml:"endpoint_order"`
	// DNSDomains: nil when the key is absent (the default policy), so that
	// an empty list can mean "none".
	DNSDomains *[]string `toml:"dns_domains"`
	// DNSSuffix renames the server's cluster domain on this client.
	DNSSuffix        string `toml:"dns_suffix"`
	DNSClusterDomain string `toml:"dns_cluster_domain"`
}

// Client is a validated gtun config. Each field's reload tag says whether
// a reload applies it (see RestartOnly).
type Client struct {
	File           string            `reload:"-"`
	PrivateKey     secure.PrivateKey `reload:"client.private_key_file,restart"`
	PrivateKeyFile string            `reload:"client.private_key_file,restart"`
	Tun            string            `reload:"client.tun,restart"`
	ControlSocket  string            `reload:"client.control_socket,restart"`
	MetricsListen  string            `reload:"client.metrics_listen,restart"` // Prometheus endpoint host:port; empty: off
	Offload        bool              `reload:"client.offload,restart"`        // TUN offloads (virtio-net header, TSO) when the kernel has them
	// Gateway: forward for the other hosts of this VPC (their cloud route
	// table points the served CIDRs at this VM).
	Gateway bool `reload:"client.gateway,restart"`
	// Masquerade (gateway mode only): rewrite the source of forwarded
	// traffic to the tunnel address, so the server needs to know nothing
	// about this VPC. Off: their own addresses cross, which needs the
	// server's [[peer]] subnets (site-to-site).
	Masquerade bool `reload:"client.masquerade,restart"`
	// Servers reload one by one, matched by name: a server added starts, a
	// server removed stops, a server's routes and DNS keys apply live, its
	// endpoints, transport or key make it reconnect; the others are not
	// touched.
	Servers []ServerEntry `reload:"server,live"`
	Log     Log           `reload:"log,restart"`
}

// ServerEntry is a validated [[server]].
type ServerEntry struct {
	Name      string
	Endpoints []string
	Transport string
	PublicKey secure.PublicKey
	Routes    []netip.Prefix // empty: accept every route the server pushes
	FECData   int            // KCP forward error correction, must match the server's
	FECParity int
	// Failback: while connected to a later endpoint (or, with transport
	// auto, over tcp), keep trying the preferred one and move back to it.
	Failback         bool
	FailbackInterval time.Duration
	// EndpointOrder is how endpoints are preferred: EndpointsListed (in
	// the order written) or EndpointsSpread (an order of this client's
	// own, by its key: the clients of a gateway's replicas spread evenly
	// over them, each keeps its replica across restarts, and when one
	// replica fails only its clients move).
	EndpointOrder string
	// DNSDomains are the split DNS domains taken from this server, each
	// with the names under it (normalized). nil: the default policy
	// (dnsname.Policy); empty: none.
	DNSDomains []string
	// DNSSuffix, when set, is the name this client gives the server's
	// DNSClusterDomain: names under the suffix are asked of the server's
	// DNS under the cluster domain and answered back under the suffix
	// ("web.default.svc.hk" is "web.default.svc.cluster.local" of this
	// cluster), so that clusters with the same domain are told apart.
	// Both normalized; DNSClusterDomain is "cluster.local" by default.
	DNSSuffix        string
	DNSClusterDomain string
}

// Endpoint orders of a [[server]].
const (
	EndpointsListed = "listed"
	EndpointsSpread = "spread"
)

// LoadClient reads and validates a gtun config.
func LoadClient(path string) (*Client, error) {
	var f ClientFile
	l, err := decode(path, &f)
	if err != nil {
		return nil, err
	}
	c := f.Client
	out := &Client{File: path, Log: f.Log}
	l.log(&out.Log)
	out.PrivateKeyFile = c.PrivateKeyFile
	out.PrivateKey = l.privateKey("client.private_key_file", c.PrivateKeyFile)
	out.Tun = c.Tun
	l.tunName("client.tun", &out.Tun, "gtun0")
	out.Gateway = c.Gateway
	out.Masquerade = c.Gateway && (c.Masquerade == nil || *c.Masquerade)
	if c.Masquerade != nil && !c.Gateway {
		l.errf("client.masquerade", "applies only with gateway = true (it masquerades the traffic gtun forwards for other hosts)")
	}
	out.Offload = c.Offload == nil || *c.Offload
	out.ControlSocket = c.ControlSocket
	if out.ControlSocket == "" {
		out.ControlSocket = "/run/gtun/gtun.sock"
	}
	out.MetricsListen = l.metricsListen("client.metrics_listen", c.MetricsListen)
	if len(f.Server) == 0 {
		l.errf("server", "at least one [[server]] is required")
	}
	names := map[string]bool{}
	// owner of each prefix in a routes list so far: two servers claiming
	// the same or overlapping prefixes would make the choice of session
	// depend on what each happens to push; the operator must decide.
	type claim struct {
		p      netip.Prefix
		server string
	}
	var claimed []claim
	suffixes := map[string]string{} // dns_suffix -> server
	for i, s := range f.Server {
		key := func(k string) string { return "server." + itoa(i) + "." + k }
		e := ServerEntry{Name: s.Name, Transport: s.Transport}
		if e.Name == "" {
			l.errf(key("name"), "required")
		} else if names[e.Name] {
			l.errf(key("name"), "server %q defined twice", e.Name)
		}
		names[e.Name] = true
		if len(s.Endpoints) == 0 {
			l.errf(key("endpoints"), "at least one host:port is required")
		}
		for _, ep := range s.Endpoints {
			e.Endpoints = append(e.Endpoints, l.endpoint(key("endpoints"), ep))
		}
		if e.Transport == "" {
			e.Transport = transport.TCP
		}
		switch e.Transport {
		case transport.TCP, transport.UDP, transport.KCP, transport.Auto:
		default:
			l.errf(key("transport"), "unknown transport %q (tcp, udp, kcp or auto)", e.Transport)
		}
		e.FECData, e.FECParity = s.FECData, s.FECParity
		l.fec("server."+itoa(i), s.FECData, s.FECParity)
		e.Failback = s.Failback == nil || *s.Failback
		e.FailbackInterval = l.duration(key("failback_interval"), s.FailbackInterval, 30*time.Second)
		e.EndpointOrder = s.EndpointOrder
		switch e.EndpointOrder {
		case "":
			e.EndpointOrder = EndpointsListed
		case EndpointsListed, EndpointsSpread:
		default:
			l.errf(key("endpoint_order"), "must be %q or %q, not %q", EndpointsListed, EndpointsSpread, e.EndpointOrder)
		}
		e.PublicKey = l.publicKey(key("public_key"), s.PublicKey)
		e.Routes = l.prefixes(key("routes"), s.Routes)
		if s.DNSDomains != nil {
			e.DNSDomains = l.domains(key("dns_domains"), *s.DNSDomains)
		}
		e.DNSSuffix, e.DNSClusterDomain = l.dnsSuffix(key, s.DNSSuffix, s.DNSClusterDomain)
		for other, n := range suffixes {
			if e.DNSSuffix != "" && (dnsname.Under(e.DNSSuffix, other) || dnsname.Under(other, e.DNSSuffix)) {
				l.errf(key("dns_suffix"), "%q overlaps the dns_suffix %q of server %q (each name belongs to one server)", e.DNSSuffix, other, n)
			}
		}
		if e.DNSSuffix != "" {
			suffixes[e.DNSSuffix] = e.Name
		}
		for _, p := range e.Routes {
			for _, c := range claimed {
				if c.p.Overlaps(p) {
					l.errf(key("routes"), "%s overlaps %s in the routes of server %q (each prefix belongs to one server)", p, c.p, c.server)
				}
			}
		}
		for _, p := range e.Routes {
			claimed = append(claimed, claim{p, e.Name})
		}
		out.Servers = append(out.Servers, e)
	}
	if err := l.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// dnsSuffix validates a [[server]]'s dns_suffix and dns_cluster_domain
// (key makes their keys); it returns both normalized, the cluster domain
// defaulted, or "", "" without a suffix.
func (l *loader) dnsSuffix(key func(string) string, suffix, cluster string) (string, string) {
	if suffix == "" {
		if cluster != "" {
			l.errf(key("dns_cluster_domain"), "applies only with dns_suffix (it names the domain the suffix stands for)")
		}
		return "", ""
	}
	s, c := dnsname.Normalize(suffix), dnsname.Normalize(cluster)
	if c == "" {
		c = "cluster.local"
	}
	switch {
	case !dnsname.Valid(s):
		l.errf(key("dns_suffix"), "bad domain %q (e.g. \"hk\" or \"hk.example\")", suffix)
	case !dnsname.Valid(c):
		l.errf(key("dns_cluster_domain"), "bad domain %q (e.g. \"cluster.local\")", cluster)
	case dnsname.Under(s, c) || dnsname.Under(c, s):
		l.errf(key("dns_suffix"), "%q and the cluster domain %q must not contain one another", s, c)
	}
	return s, c
}

func itoa(i int) string { return strconv.Itoa(i) }
