package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/guard"
	"github.com/gtun/gtun/pkg/secure"
)

// fixture holds real key files and public keys for config files under test.
type fixture struct {
	dir    string
	key    string // private key file, mode 0600
	key644 string // private key file, mode 0644 (must be refused)
	priv   secure.PrivateKey
	pub1   string
	pub2   string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir, key: filepath.Join(dir, "private.key"), key644: filepath.Join(dir, "open.key")}
	f.priv = genKey(t)
	writeKey(t, f.key, f.priv, 0o600)
	writeKey(t, f.key644, genKey(t), 0o644)
	f.pub1 = genKey(t).Public().String()
	f.pub2 = genKey(t).Public().String()
	return f
}

func genKey(t *testing.T) secure.PrivateKey {
	t.Helper()
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeKey(t *testing.T, path string, k secure.PrivateKey, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(k.Encode()+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode is filtered by the umask; set it exactly.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// write expands the placeholders KEY, KEY644, PUB1 and PUB2 in src and
// writes it to a new file named name.
func (f *fixture) write(t *testing.T, name, src string) string {
	t.Helper()
	src = strings.NewReplacer("KEY644", f.key644, "KEY", f.key, "PUB1", f.pub1, "PUB2", f.pub2).Replace(src)
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// leaves returns the individual errors of a joined error.
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}

func TestLoadServerDefaults(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtund.toml", `[server]
private_key_file = "KEY"
pool = "100.64.240.0/24"
routes = ["10.96.0.0/12", "10.244.0.0/16"]

[[peer]]
name = "a"
public_key = "PUB1"

[[peer]]
name = "b"
public_key = "PUB2"
address = "100.64.240.10"
allowed = ["10.244.1.0/24"]
`)
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	pfx := netip.MustParsePrefix
	checks := []struct {
		name      string
		got, want any
	}{
		{"File", s.File, path},
		{"Listen", s.Listen, "0.0.0.0:9623"},
		{"Transports", s.Transports, []string{"tcp"}},
		{"PrivateKey", s.PrivateKey, f.priv},
		{"PrivateKeyFile", s.PrivateKeyFile, f.key},
		{"Tun", s.Tun, "gtund0"},
		{"MTU", s.MTU, 1400},
		{"Pool", s.Pool, pfx("100.64.240.0/24")},
		{"Gateway", s.Gateway, netip.MustParseAddr("100.64.240.1")},
		{"Routes", s.Routes, []netip.Prefix{pfx("10.244.0.0/16"), pfx("10.96.0.0/12")}},
		{"NAT", s.NAT, true},
		{"StateDir", s.StateDir, "/var/lib/gtund"},
		{"ControlSocket", s.ControlSocket, "/run/gtund/gtund.sock"},
		{"Keepalive", s.Keepalive, 2 * time.Second},
		{"HandshakeTimeout", s.HandshakeTimeout, 5 * time.Second},
		{"Handshake", s.Handshake, guard.Limits{Rate: guard.DefaultRate, Burst: guard.DefaultBurst, MaxPending: guard.DefaultMaxPending, MaxPendingPerSource: guard.DefaultMaxPendingPerSource,
			MaxPendingKnown: guard.DefaultMaxPendingKnown, KnownSourceTTL: guard.DefaultKnownSourceTTL}},
		{"DeadAfter", s.DeadAfter, 3},
		{"RekeyInterval", s.RekeyInterval, 2 * time.Minute},
		{"Log", s.Log, Log{Level: "info", Format: "text"}},
		{"len(Peers)", len(s.Peers), 2},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if t.Failed() {
		return
	}
	a, b := s.Peers[0], s.Peers[1]
	if a.Name != "a" || a.PublicKey.String() != f.pub1 || a.Address.IsValid() {
		t.Errorf("peer a = %+v", a)
	}
	if !slices.Equal(a.Allowed, s.Routes) {
		t.Errorf("peer a allowed = %v, want all served routes %v", a.Allowed, s.Routes)
	}
	if b.Name != "b" || b.PublicKey.String() != f.pub2 || b.Address != netip.MustParseAddr("100.64.240.10") {
		t.Errorf("peer b = %+v", b)
	}
	if !slices.Equal(b.Allowed, []netip.Prefix{pfx("10.244.1.0/24")}) {
		t.Errorf("peer b allowed = %v", b.Allowed)
	}
}

// The gateway's own address is the one allowed entry outside the served
// routes: it opens the gtund host to the peer.
func TestLoadServerAllowedGateway(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtund.toml", serverHead+twoPeers+`allowed = ["10.244.1.0/24", "100.64.240.1/32"]
`)
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("100.64.240.1/32")}
	if got := s.Peers[1].Allowed; !slices.Equal(got, want) {
		t.Errorf("allowed %v, want %v", got, want)
	}
}

func TestLoadServerMap(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtund.toml", serverHead+`map = ["10.244.0.0/16=100.100.0.0/16", "10.96.0.0/12=100.112.0.0/12"]
`+twoPeers+`allowed = ["10.244.1.0/24"]
`)
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("100.100.0.0/16")},
		{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("100.112.0.0/12")},
	}
	if !slices.Equal(s.Map, want) {
		t.Fatalf("map %v, want %v", s.Map, want)
	}
	// allowed is written in real terms, like routes.
	if got := s.Peers[1].Allowed; !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}) {
		t.Errorf("allowed %v", got)
	}
	for in, out := range map[string]string{
		"10.244.0.0/16":  "100.100.0.0/16",
		"10.244.1.0/24":  "100.100.1.0/24",
		"10.244.1.20/32": "100.100.1.20/32",
		"10.96.0.0/12":   "100.112.0.0/12",
		"10.96.0.10/32":  "100.112.0.10/32",
		"10.111.2.3/32":  "100.127.2.3/32", // host bits of a /12 cross the octet
		"10.0.0.0/24":    "10.0.0.0/24",    // not mapped
	} {
		if got := Virtual(s.Map, netip.MustParsePrefix(in)); got.String() != out {
			t.Errorf("Virtual(%s) = %s, want %s", in, got, out)
		}
	}
}

// IPv6: pool6 and its gateway, IPv6 routes, subnets and dns servers, and
// maps of IPv6 prefixes (NPTv6-style, the host bits kept).
func TestLoadServerIPv6(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtund.toml", `[server]
listen = "[::]:9623"
private_key_file = "KEY"
pool = "100.64.240.0/24"
pool6 = "fd64:240::/64"
routes = ["10.244.0.0/16", "fd00:10:244::/56", "fd00:10:96::/112"]
map = ["fd00:10:244::/56=fd00:100:244::/56", "10.244.0.0/16=100.100.0.0/16"]
dns = { servers = ["fd00:10:96::a"], domains = ["cluster.local"] }
[[peer]]
name = "a"
public_key = "PUB1"
address = "100.64.240.10"
allowed = ["fd00:10:244:1::/64", "fd64:240::1/128"]
subnets = ["fd00:172:16::/64", "172.16.0.0/24"]
`)
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Listen != "[::]:9623" || s.Pool6.String() != "fd64:240::/64" || s.Gateway6.String() != "fd64:240::1" {
		t.Errorf("listen %s pool6 %s gateway6 %s", s.Listen, s.Pool6, s.Gateway6)
	}
	if got := s.DNS.Servers; len(got) != 1 || got[0].String() != "fd00:10:96::a" {
		t.Errorf("dns servers %v", got)
	}
	if got := s.Peers[0].Subnets; len(got) != 2 {
		t.Errorf("subnets %v", got)
	}
	for in, out := range map[string]string{
		"fd00:10:244:1::/64":    "fd00:100:244:1::/64",
		"fd00:10:244:1::20/128": "fd00:100:244:1::20/128",
		"fd00:10:96::a/128":     "fd00:10:96::a/128", // not mapped
		"10.244.1.20/32":        "100.100.1.20/32",
	} {
		if got := Virtual(s.Map, netip.MustParsePrefix(in)); got.String() != out {
			t.Errorf("Virtual(%s) = %s, want %s", in, got, out)
		}
	}
	// A map of a length that is not a whole byte keeps the host bits
	// across the byte.
	m := []Mapping{{netip.MustParsePrefix("fd00:10:244::/52"), netip.MustParsePrefix("fd00:200:ff00::/52")}}
	if got := Virtual(m, netip.MustParsePrefix("fd00:10:244:f01::9/128")); got.String() != "fd00:200:ff00:f01::9/128" {
		t.Errorf("Virtual across a byte = %s", got)
	}
}

func TestLoadServerExplicitValues(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtund.toml", `[server]
listen = "127.0.0.1"
transports = ["tcp"]
private_key_file = "KEY"
tun = "gw0"
mtu = 9000
pool = "100.64.0.0/30"
routes = []
nat = false
state_dir = "/srv/state"
control_socket = "/tmp/x.sock"
metrics_listen = "127.0.0.1:9624"
keepalive = "250ms"
dead_after = 7
rekey_interval = "1s"
offload = false
handshake_timeout = "2s"
handshake_rate = 5
handshake_burst = 10
max_handshakes = 100
max_handshakes_per_source = 4
max_handshakes_known = 16
known_source_ttl = "24h"

[log]
level = "debug"
format = "json"
`)
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Server{File: path, Listen: "127.0.0.1:9623", Transports: []string{"tcp"}, PrivateKey: f.priv,
		PrivateKeyFile: f.key, Tun: "gw0", MTU: 9000, Pool: netip.MustParsePrefix("100.64.0.0/30"),
		Gateway: netip.MustParseAddr("100.64.0.1"), NAT: false, StateDir: "/srv/state", ControlSocket: "/tmp/x.sock", MetricsListen: "127.0.0.1:9624", PeersFile: "/srv/state/peers.toml",
		Store:     Store{Backend: StoreFile, DialTimeout: 5 * time.Second, Replica: hostname(t)},
		Keepalive: 250 * time.Millisecond, DeadAfter: 7, RekeyInterval: time.Second, Offload: false, Log: Log{Level: "debug", Format: "json"},
		HandshakeTimeout: 2 * time.Second, Handshake: guard.Limits{Rate: 5, Burst: 10, MaxPending: 100, MaxPendingPerSource: 4, MaxPendingKnown: 16, KnownSourceTTL: 24 * time.Hour}}
	if !reflect.DeepEqual(*s, want) {
		t.Errorf("got  %+v\nwant %+v", *s, want)
	}
}

func TestLoadClientDefaults(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtun.toml", `[client]
private_key_file = "KEY"

[[server]]
name = "hk-cluster"
endpoints = ["203.0.113.10", "203.0.113.11:443"]
public_key = "PUB1"
`)
	c, err := LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Client{File: path, PrivateKey: f.priv, PrivateKeyFile: f.key, Tun: "gtun0", ControlSocket: "/run/gtun/gtun.sock", Offload: true,
		Log: Log{Level: "info", Format: "text"}}
	servers := c.Servers
	c.Servers = nil
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("got  %+v\nwant %+v", *c, want)
	}
	if len(servers) != 1 {
		t.Fatalf("servers = %+v", servers)
	}
	e := servers[0]
	if e.Name != "hk-cluster" || e.Transport != "tcp" || e.PublicKey.String() != f.pub1 || len(e.Routes) != 0 {
		t.Errorf("server = %+v", e)
	}
	if !slices.Equal(e.Endpoints, []string{"203.0.113.10:9623", "203.0.113.11:443"}) {
		t.Errorf("endpoints = %v (the default port 9623 must be added when missing)", e.Endpoints)
	}
}

// Several [[server]] blocks, each with its own routes: one gtun, many clusters.
func TestLoadClientManyServers(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtun.toml", `[client]
private_key_file = "KEY"

[[server]]
name = "cluster-1"
endpoints = ["203.0.113.10"]
public_key = "PUB1"
routes = ["100.100.0.0/16"]

[[server]]
name = "cluster-2"
endpoints = ["198.51.100.20:443"]
transport = "kcp"
public_key = "PUB2"
routes = ["100.101.0.0/16", "100.111.0.0/16"]

[[server]]
name = "cluster-3"
endpoints = ["192.0.2.30"]
public_key = "PUB2"
`)
	c, err := LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range c.Servers {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"cluster-1", "cluster-2", "cluster-3"}) {
		t.Fatalf("servers %v, want them in file order", names)
	}
	if got := c.Servers[1]; got.Transport != "kcp" || got.PublicKey.String() != f.pub2 || len(got.Routes) != 2 {
		t.Errorf("second server = %+v", got)
	}
	if len(c.Servers[2].Routes) != 0 {
		t.Errorf("third server routes %v, want none (accept all pushed)", c.Servers[2].Routes)
	}
}

// dns_domains: absent is the default policy (nil), [] accepts none (empty,
// not nil), names are normalized.
func TestLoadClientDNSDomains(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtun.toml", `[client]
private_key_file = "KEY"

[[server]]
name = "default"
endpoints = ["203.0.113.10"]
public_key = "PUB1"

[[server]]
name = "none"
endpoints = ["203.0.113.11"]
public_key = "PUB1"
dns_domains = []

[[server]]
name = "listed"
endpoints = ["203.0.113.12"]
public_key = "PUB2"
dns_domains = ["Cluster.Local.", "corp.example"]
`)
	c, err := LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Servers[0].DNSDomains; d != nil {
		t.Errorf("default: %q, want nil", d)
	}
	if d := c.Servers[1].DNSDomains; d == nil || len(d) != 0 {
		t.Errorf("none: %q, want empty and not nil", d)
	}
	if d := c.Servers[2].DNSDomains; !slices.Equal(d, []string{"cluster.local", "corp.example"}) {
		t.Errorf("listed: %q", d)
	}
}

// dns_suffix: normalized, the cluster domain cluster.local unless named;
// none without the key.
func TestLoadClientDNSSuffix(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtun.toml", `[client]
private_key_file = "KEY"

[[server]]
name = "hk"
endpoints = ["203.0.113.10"]
public_key = "PUB1"
dns_suffix = "HK."

[[server]]
name = "sz"
endpoints = ["203.0.113.11"]
public_key = "PUB2"
dns_suffix = "sz.corp"
dns_cluster_domain = "K8s.Local"

[[server]]
name = "plain"
endpoints = ["203.0.113.12"]
public_key = "PUB2"
`)
	c, err := LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][2]string{{"hk", "cluster.local"}, {"sz.corp", "k8s.local"}, {"", ""}} {
		if got := [2]string{c.Servers[i].DNSSuffix, c.Servers[i].DNSClusterDomain}; got != want {
			t.Errorf("server %d: suffix and cluster domain %q, want %q", i, got, want)
		}
	}
}

func TestLoadClientRoutesSubset(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtun.toml", `[client]
private_key_file = "KEY"
tun = "t1"
gateway = false
control_socket = "/tmp/c.sock"
[[server]]
name = "x"
endpoints = ["[2001:db8::1]:9623"]
transport = "tcp"
public_key = "PUB1"
routes = ["10.96.0.0/12", "10.244.0.0/16"]
[log]
level = "warn"
`)
	c, err := LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Tun != "t1" || c.ControlSocket != "/tmp/c.sock" || c.Log.Level != "warn" {
		t.Errorf("client = %+v", c)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")}
	if got := c.Servers[0].Routes; !slices.Equal(got, want) {
		t.Errorf("routes = %v, want %v", got, want)
	}
}

// serverHead is the start of most bad server files: lines 1-4.
const serverHead = `[server]
private_key_file = "KEY"
pool = "100.64.240.0/24"
routes = ["10.244.0.0/16", "10.96.0.0/12"]
`

// twoPeers follows serverHead: lines 5-10.
const twoPeers = `[[peer]]
name = "a"
public_key = "PUB1"
[[peer]]
name = "b"
public_key = "PUB2"
`

type badCase struct {
	name string
	src  string
	line int    // expected line in "file:LINE"
	key  string // expected key name after it
	msg  string // expected part of the message
}

func TestLoadServerErrors(t *testing.T) {
	cases := []badCase{
		{"unknown top-level key", "verbose = true\n" + serverHead, 1, "verbose", "unknown key"},
		{"unknown key in server", serverHead + "listen_addr = \"0.0.0.0:1\"\n", 5, "server.listen_addr", "unknown key"},
		{"unknown key in second peer", serverHead + twoPeers + "adress = \"100.64.240.9\"\n", 11, "peer.1.adress", "unknown key"},
		{"unknown table", serverHead + "[metrics]\nlisten = \"x\"\nport = 1\n", 5, "metrics", "unknown key"},
		{"bad CIDR in routes", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/24\"\n\nroutes = [\"10.244.0.0/16\", \"10.96.0.0/33\"]\n",
			5, "server.routes", "bad CIDR"},
		{"CIDR with host bits", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/24\"\nroutes = [\"10.244.1.1/16\"]\n",
			4, "server.routes", "host bits"},
		{"route listed twice", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/24\"\nroutes = [\"10.244.0.0/16\", \"10.244.0.0/16\"]\n",
			4, "server.routes", "twice"},
		{"pool overlaps a route", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/24\"\nroutes = [\"100.64.0.0/10\"]\n",
			4, "server.routes", "overlaps pool"},
		{"pool inside a route, pool after routes", "[server]\nprivate_key_file = \"KEY\"\nroutes = [\"100.64.240.128/25\"]\npool = \"100.64.240.0/24\"\n",
			3, "server.routes", "overlaps pool"},
		{"missing private_key_file", "# gtund\n\n[server]\npool = \"100.64.240.0/24\"\n", 3, "server.private_key_file", "required"},
		{"key file mode 0644", "[server]\npool = \"100.64.240.0/24\"\nprivate_key_file = \"KEY644\"\n", 3, "server.private_key_file", "mode 0644"},
		{"missing key file", "[server]\npool = \"100.64.240.0/24\"\nprivate_key_file = \"/nonexistent/private.key\"\n", 3, "server.private_key_file", "no such file"},
		{"missing pool", "[server]\nprivate_key_file = \"KEY\"\n", 1, "server.pool", "required"},
		{"handshake timeout too long", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/24\"\nhandshake_timeout = \"5m\"\n", 4, "server.handshake_timeout", "1s..1m"},
		{"negative handshake rate", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/24\"\nhandshake_rate = -1\n", 4, "server.handshake_rate", "must be 1.."},
		{"known source TTL too short", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/24\"\nknown_source_ttl = \"10s\"\n", 4, "server.known_source_ttl", "1m..8760h"},
		{"known reserve zero or less", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/24\"\nmax_handshakes_known = -3\n", 4, "server.max_handshakes_known", "must be 1.."},
		{"per-source cap above the total", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/24\"\nmax_handshakes = 10\nmax_handshakes_per_source = 11\n", 5, "server.max_handshakes_per_source", "more than max_handshakes"},
		{"pool too small", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/31\"\n", 3, "server.pool", "from /16 (65,536 addresses) to /30"},
		{"pool too big", "[server]\nprivate_key_file = \"KEY\"\npool = \"10.0.0.0/8\"\n", 3, "server.pool", "from /16 (65,536 addresses) to /30"},
		{"pool IPv6", "[server]\nprivate_key_file = \"KEY\"\npool = \"fd00::/64\"\n", 3, "server.pool", "IPv4"},
		{"bad public_key", serverHead + "[[peer]]\nname = \"a\"\npublic_key = \"PUB1\"\n[[peer]]\nname = \"b\"\npublic_key = \"not-a-key\"\n",
			10, "peer.1.public_key", "bad public key"},
		{"missing public_key", serverHead + "[[peer]]\nname = \"a\"\npublic_key = \"PUB1\"\n[[peer]]\nname = \"b\"\n",
			8, "peer.1.public_key", "required"},
		{"duplicate peer name", serverHead + "[[peer]]\nname = \"a\"\npublic_key = \"PUB1\"\n[[peer]]\nname = \"a\"\npublic_key = \"PUB2\"\n",
			9, "peer.1.name", "defined twice"},
		{"duplicate peer key", serverHead + "[[peer]]\nname = \"a\"\npublic_key = \"PUB1\"\n[[peer]]\nname = \"b\"\npublic_key = \"PUB1\"\n",
			10, "peer.1.public_key", `same key as peer "a"`},
		{"peer address outside pool", serverHead + twoPeers + "address = \"100.64.241.9\"\n", 11, "peer.1.address", "not in pool"},
		{"peer address is the gateway", serverHead + twoPeers + "address = \"100.64.240.1\"\n", 11, "peer.1.address", "server's own address"},
		{"peer address is the network", serverHead + twoPeers + "address = \"100.64.240.0\"\n", 11, "peer.1.address", "network"},
		{"peer address is the broadcast", serverHead + twoPeers + "address = \"100.64.240.255\"\n", 11, "peer.1.address", "broadcast"},
		{"peer address taken", serverHead + "[[peer]]\nname = \"a\"\npublic_key = \"PUB1\"\naddress = \"100.64.240.9\"\n[[peer]]\nname = \"b\"\npublic_key = \"PUB2\"\naddress = \"100.64.240.9\"\n",
			12, "peer.1.address", `also the address of peer "a"`},
		{"peer address unparsable", serverHead + twoPeers + "address = \"100.64.240.x\"\n", 11, "peer.1.address", "bad address"},
		{"allowed outside served routes", serverHead + twoPeers + "allowed = [\"10.244.1.0/24\", \"10.0.0.0/8\"]\n", 11, "peer.1.allowed", "not within any served route"},
		{"allowed with host bits", serverHead + twoPeers + "allowed = [\"10.244.1.1/24\"]\n", 11, "peer.1.allowed", "host bits"},
		{"allowed another pool address", serverHead + twoPeers + "allowed = [\"100.64.240.2/32\"]\n", 11, "peer.1.allowed", "nor the gateway's own address 100.64.240.1/32"},
		{"allowed the whole pool", serverHead + twoPeers + "allowed = [\"100.64.240.0/24\"]\n", 11, "peer.1.allowed", "not within any served route"},
		{"subnet overlaps the pool", serverHead + twoPeers + "subnets = [\"100.64.0.0/16\"]\n", 11, "peer.1.subnets", "overlaps pool 100.64.240.0/24"},
		{"subnet overlaps a served route", serverHead + twoPeers + "subnets = [\"172.16.0.0/24\", \"10.244.7.0/24\"]\n", 11, "peer.1.subnets", "overlaps served route 10.244.0.0/16"},
		{"subnet overlaps another peer's", serverHead + "[[peer]]\nname = \"a\"\npublic_key = \"PUB1\"\nsubnets = [\"172.16.0.0/16\"]\n[[peer]]\nname = \"b\"\npublic_key = \"PUB2\"\nsubnets = [\"172.16.5.0/24\"]\n",
			12, "peer.1.subnets", `overlaps 172.16.0.0/16, a subnet of peer "a"`},
		{"subnet overlaps a virtual prefix", serverHead + "map = [\"10.244.0.0/16=100.100.0.0/16\"]\n" + twoPeers + "subnets = [\"100.100.8.0/24\"]\n", 12, "peer.1.subnets", "overlaps virtual prefix 100.100.0.0/16"},
		{"subnet with host bits", serverHead + twoPeers + "subnets = [\"172.16.0.1/24\"]\n", 11, "peer.1.subnets", "host bits"},
		{"dns without domains", serverHead + "dns = { servers = [\"10.96.0.10\"] }\n", 5, "server.dns.domains", "required"},
		{"dns server outside the routes", serverHead + "dns = { servers = [\"8.8.8.8\"], domains = [\"cluster.local\"] }\n", 5, "server.dns.servers", "not within any served route"},
		{"dns server not an address", serverHead + "dns = { servers = [\"kube-dns\"], domains = [\"cluster.local\"] }\n", 5, "server.dns.servers", "bad IP address"},
		{"dns bad domain", serverHead + "dns = { servers = [\"10.96.0.10\"], domains = [\"cluster..local\"] }\n", 5, "server.dns.domains", "bad domain"},
		{"dns unknown key", serverHead + "dns = { servers = [\"10.96.0.10\"], domains = [\"cluster.local\"], search = [] }\n", 5, "server.dns.search", "unknown key"},
		{"bad log level", serverHead + "[log]\nformat = \"json\"\nlevel = \"verbose\"\n", 7, "log.level", "must be debug, info, warn or error"},
		{"bad log format", serverHead + "[log]\nformat = \"xml\"\n", 6, "log.format", "must be text or json"},
		{"metrics_listen without port", serverHead + "metrics_listen = \"127.0.0.1\"\n", 5, "server.metrics_listen", "bad address"},
		{"metrics_listen bad port", serverHead + "metrics_listen = \"127.0.0.1:99999\"\n", 5, "server.metrics_listen", "bad port"},
		{"unknown transport", serverHead + "transports = [\"tcp\", \"quic\"]\n", 5, "server.transports", `unknown transport "quic"`},
		{"transport twice", serverHead + "transports = [\"kcp\", \"kcp\"]\n", 5, "server.transports", `"kcp" listed twice`},
		{"fec parity without data", serverHead + "fec_parity = 3\n", 1, "server.fec_data", "data shards"},
		{"fec data without parity", serverHead + "fec_data = 10\n", 1, "server.fec_parity", "parity shards"},
		{"mtu too small", serverHead + "mtu = 500\n", 5, "server.mtu", "576..65535"},
		{"mtu too large for udp", serverHead + "transports = [\"tcp\", \"udp\"]\nmtu = 9500\n", 6, "server.mtu", "at most 9184 with udp"},
		{"bad keepalive", serverHead + "keepalive = \"2\"\n", 5, "server.keepalive", "bad duration"},
		{"dead_after too small", serverHead + "dead_after = 1\n", 5, "server.dead_after", "2..100"},
		{"rekey_interval too short", serverHead + "rekey_interval = \"500ms\"\n", 5, "server.rekey_interval", "must be 1s..1h, not 500ms"},
		{"rekey_interval too long", serverHead + "rekey_interval = \"2h\"\n", 5, "server.rekey_interval", "must be 1s..1h, not 2h0m0s"},
		{"rekey_interval not a duration", serverHead + "rekey_interval = \"120\"\n", 5, "server.rekey_interval", "bad duration"},
		{"bad listen port", serverHead + "listen = \"0.0.0.0:70000\"\n", 5, "server.listen", "bad port"},
		{"bad tun name", serverHead + "tun = \"a-very-long-interface\"\n", 5, "server.tun", "bad interface name"},
		{"map without =", serverHead + "map = [\"10.244.0.0/16\"]\n", 5, "server.map", "is not REAL=VIRTUAL"},
		{"map bad CIDR", serverHead + "map = [\"10.244.0.0/16=100.100.0.0/33\"]\n", 5, "server.map", "bad CIDR"},
		{"map host bits", serverHead + "map = [\"10.244.0.0/16=100.100.0.1/16\"]\n", 5, "server.map", "host bits"},
		{"map length mismatch", serverHead + "map = [\"10.96.0.0/12=100.110.0.0/16\"]\n", 5, "server.map", "same length (/12 is not /16)"},
		{"map across families", serverHead + "map = [\"fd00::/104=10.0.0.0/8\"]\n", 5, "server.map", "of one family"},
		{"map IPv6 of different lengths", serverHead + "map = [\"fd00::/64=fd01::/56\"]\n", 5, "server.map", "same length"},
		{"pool6 not IPv6", serverHead + "pool6 = \"10.1.0.0/16\"\n", 5, "server.pool6", "must be an IPv6 prefix"},
		{"pool6 too long for the pool's host bits", serverHead + "pool6 = \"fd64::/124\"\n", 5, "server.pool6", "must be /16 to /120"},
		{"pool6 host bits", serverHead + "pool6 = \"fd64::1/64\"\n", 5, "server.pool6", "host bits set"},
		{"IPv6 route without pool6", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/24\"\nroutes = [\"fd00:10:244::/56\"]\n", 4, "server.routes", "needs server.pool6"},
		{"IPv6 subnet without pool6", serverHead + twoPeers + "subnets = [\"fd00:172:16::/64\"]\n", 11, "peer.1.subnets", "needs server.pool6"},
		{"route overlaps pool6", "[server]\nprivate_key_file = \"KEY\"\npool = \"100.64.240.0/24\"\npool6 = \"fd64::/64\"\nroutes = [\"fd64::/48\"]\n", 5, "server.routes", "overlaps pool fd64::/64"},
		{"mtu below IPv6's minimum with pool6", serverHead + "pool6 = \"fd64::/64\"\nmtu = 1200\n", 6, "server.mtu", "at least 1280"},
		{"map IPv6 virtual overlaps pool6", serverHead + "pool6 = \"fd64::/64\"\nmap = [\"fd00:10:244::/64=fd64::/64\"]\n", 6, "server.map", "overlaps pool fd64::/64"},
		{"map onto itself", serverHead + "map = [\"10.244.0.0/16=10.244.0.0/16\"]\n", 5, "server.map", "onto itself"},
		{"map virtual overlaps pool", serverHead + "map = [\"10.244.0.0/16=100.64.0.0/16\"]\n", 5, "server.map", "100.64.0.0/16 overlaps pool 100.64.240.0/24"},
		{"map virtual overlaps a served route", serverHead + "map = [\"10.244.0.0/16=10.100.0.0/16\"]\n", 5, "server.map", "virtual 10.100.0.0/16 overlaps served route 10.96.0.0/12"},
		{"map real cuts a served route", serverHead + "map = [\"10.96.0.0/16=100.110.0.0/16\"]\n", 5, "server.map", "served route 10.96.0.0/12 is not inside real 10.96.0.0/16"},
		{"map same real twice", serverHead + "map = [\"10.244.0.0/16=100.100.0.0/16\", \"10.244.0.0/16=100.101.0.0/16\"]\n", 5, "server.map", "overlaps 10.244.0.0/16=100.100.0.0/16"},
		{"map same virtual twice", serverHead + "map = [\"10.244.0.0/16=100.100.0.0/16\", \"10.96.0.0/12=100.96.0.0/12\"]\n", 5, "server.map", "overlaps 10.244.0.0/16=100.100.0.0/16"},
		{"syntax error", serverHead + "mtu = \n", 5, "server.mtu", "expected value"},
		{"syntax error: unterminated string", serverHead + "\ntun = \"gtund0\n", 6, "server.tun", ""},
	}
	f := newFixture(t)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := f.write(t, fmt.Sprintf("server%d.toml", i), c.src)
			s, err := LoadServer(path)
			checkBad(t, path, s, err, c)
		})
	}
}

func TestLoadClientErrors(t *testing.T) {
	const head = "[client]\nprivate_key_file = \"KEY\"\n\n[[server]]\nname = \"hk\"\nendpoints = [\"203.0.113.10:9623\"]\npublic_key = \"PUB1\"\n"
	cases := []badCase{
		{"unknown key in client", "[client]\nprivate_key_file = \"KEY\"\ntunnel = \"x\"\n[[server]]\nname = \"hk\"\nendpoints = [\"203.0.113.10\"]\npublic_key = \"PUB1\"\n",
			3, "client.tunnel", "unknown key"},
		{"unknown key in server", head + "transprot = \"tcp\"\n", 8, "server.0.transprot", "unknown key"},
		{"missing private_key_file", "[client]\ntun = \"gtun0\"\n[[server]]\nname = \"hk\"\nendpoints = [\"203.0.113.10\"]\npublic_key = \"PUB1\"\n",
			1, "client.private_key_file", "required"},
		{"key file mode 0644", "[client]\nprivate_key_file = \"KEY644\"\n[[server]]\nname = \"hk\"\nendpoints = [\"203.0.113.10\"]\npublic_key = \"PUB1\"\n",
			2, "client.private_key_file", "mode 0644"},
		{"masquerade without gateway", "[client]\nprivate_key_file = \"KEY\"\nmasquerade = false\n[[server]]\nname = \"hk\"\nendpoints = [\"203.0.113.10\"]\npublic_key = \"PUB1\"\n",
			3, "client.masquerade", "only with gateway = true"},
		{"metrics_listen bad port", "[client]\nprivate_key_file = \"KEY\"\nmetrics_listen = \"127.0.0.1:x\"\n[[server]]\nname = \"hk\"\nendpoints = [\"203.0.113.10\"]\npublic_key = \"PUB1\"\n",
			3, "client.metrics_listen", "bad port"},
		{"bad endpoint port", "[client]\nprivate_key_file = \"KEY\"\n[[server]]\nname = \"hk\"\npublic_key = \"PUB1\"\nendpoints = [\"203.0.113.10:9623\", \"203.0.113.11:0\"]\n",
			6, "server.0.endpoints", "bad port"},
		{"missing endpoints", "[client]\nprivate_key_file = \"KEY\"\n[[server]]\nname = \"hk\"\npublic_key = \"PUB1\"\n", 3, "server.0.endpoints", "at least one"},
		{"unknown transport", head + "transport = \"quic\"\n", 8, "server.0.transport", `unknown transport "quic"`},
		{"fec data too large", head + "fec_data = 200\nfec_parity = 3\n", 8, "server.0.fec_data", "1..128"},
		{"bad public_key", "[client]\nprivate_key_file = \"KEY\"\n[[server]]\nname = \"hk\"\nendpoints = [\"203.0.113.10\"]\npublic_key = \"AAAA\"\n",
			6, "server.0.public_key", "bad public key"},
		{"routes with host bits", head + "routes = [\"10.96.0.1/12\"]\n", 8, "server.0.routes", "host bits"},
		{"bad dns_domains entry", head + "dns_domains = [\"cluster.local\", \"corp..example\"]\n", 8, "server.0.dns_domains", `bad domain "corp..example"`},
		{"dns_domains entry twice", head + "dns_domains = [\"cluster.local\", \"Cluster.Local.\"]\n", 8, "server.0.dns_domains", `"cluster.local" listed twice`},
		{"bad dns_suffix", head + "dns_suffix = \"hk..x\"\n", 8, "server.0.dns_suffix", `bad domain "hk..x"`},
		{"dns_cluster_domain without dns_suffix", head + "dns_cluster_domain = \"k8s.local\"\n", 8, "server.0.dns_cluster_domain", "only with dns_suffix"},
		{"dns_suffix inside the cluster domain", head + "dns_suffix = \"hk.cluster.local\"\n", 8, "server.0.dns_suffix", "must not contain one another"},
		{"dns_suffix of two servers nested", head + "dns_suffix = \"hk\"\n[[server]]\nname = \"sg\"\nendpoints = [\"203.0.113.20\"]\npublic_key = \"PUB2\"\ndns_suffix = \"a.HK.\"\n",
			13, "server.1.dns_suffix", `"a.hk" overlaps the dns_suffix "hk" of server "hk"`},
		{"duplicate server name", head + "\n[[server]]\nendpoints = [\"203.0.113.20\"]\npublic_key = \"PUB2\"\nname = \"hk\"\n",
			12, "server.1.name", `server "hk" defined twice`},
		{"same route in two servers", head + "routes = [\"10.244.0.0/16\"]\n[[server]]\nname = \"sg\"\nendpoints = [\"203.0.113.20\"]\npublic_key = \"PUB2\"\nroutes = [\"10.96.0.0/12\", \"10.244.0.0/16\"]\n",
			13, "server.1.routes", `10.244.0.0/16 overlaps 10.244.0.0/16 in the routes of server "hk"`},
		{"overlapping routes in two servers", head + "routes = [\"10.244.0.0/16\"]\n[[server]]\nname = \"sg\"\nendpoints = [\"203.0.113.20\"]\npublic_key = \"PUB2\"\nroutes = [\"10.244.8.0/24\"]\n",
			13, "server.1.routes", `10.244.8.0/24 overlaps 10.244.0.0/16 in the routes of server "hk"`},
	}
	f := newFixture(t)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := f.write(t, fmt.Sprintf("client%d.toml", i), c.src)
			cl, err := LoadClient(path)
			checkBad(t, path, cl, err, c)
		})
	}
	t.Run("type mismatch", func(t *testing.T) {
		path := f.write(t, "client-mismatch.toml", head+"routes = \"10.96.0.0/12\"\n")
		cl, err := LoadClient(path)
		checkMismatch(t, path, cl, err, badCase{line: 8, key: "server.0.routes", msg: "incompatible types"})
	})
}

func checkBad[T any](t *testing.T, path string, got *T, err error, c badCase) {
	t.Helper()
	if err == nil {
		t.Fatalf("loaded %+v, want an error", got)
	}
	if got != nil {
		t.Errorf("returned a config together with the error %v", err)
	}
	if !IsConfigError(err) {
		t.Errorf("IsConfigError(%v) = false", err)
	}
	if n := len(leaves(err)); n != 1 {
		t.Errorf("got %d errors, want exactly 1:\n%v", n, err)
	}
	msg := err.Error()
	want := fmt.Sprintf("%s:%d: %s", path, c.line, c.key)
	if !strings.Contains(msg, want) {
		t.Errorf("error\n  %v\ndoes not contain %q", msg, want)
	}
	if !strings.Contains(msg, c.msg) {
		t.Errorf("error\n  %v\ndoes not contain %q", msg, c.msg)
	}
}

// checkMismatch checks a TOML type mismatch error. It must name the file,
// the line and the key; BurntSushi/toml reports it as a plain error, which
// decode passes on as "file: line N (last key \"k\"): ...", so both that form
// and the "file:N: k" of every other config error are accepted.
func checkMismatch[T any](t *testing.T, path string, got *T, err error, c badCase) {
	t.Helper()
	if err == nil {
		t.Fatalf("loaded %+v, want an error", got)
	}
	if !IsConfigError(err) {
		t.Errorf("IsConfigError(%v) = false", err)
	}
	msg := err.Error()
	uniform := fmt.Sprintf("%s:%d: %s", path, c.line, c.key)
	if !strings.Contains(msg, uniform) {
		t.Errorf("error\n  %v\ndoes not contain %q", msg, uniform)
	}
	if !strings.Contains(msg, c.msg) {
		t.Errorf("error\n  %v\ndoes not contain %q", msg, c.msg)
	}
}

func TestLoadServerTypeMismatch(t *testing.T) {
	f := newFixture(t)
	for i, c := range []badCase{
		{"mtu string", serverHead + "mtu = \"x\"\n", 5, "server.mtu", "incompatible types"},
		{"nat string", serverHead + "\nnat = \"yes\"\n", 6, "server.nat", "incompatible types"},
		{"peer address number", serverHead + twoPeers + "address = 10\n", 11, "peer.1.address", "incompatible types"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := f.write(t, fmt.Sprintf("mismatch%d.toml", i), c.src)
			s, err := LoadServer(path)
			checkMismatch(t, path, s, err, c)
		})
	}
}

// Keys of an unknown table are not reported one by one: the table is the error.
func TestUnknownTableReportedOnce(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtund.toml", serverHead+"[metrics]\nlisten = \"x\"\nport = 1\n")
	_, err := LoadServer(path)
	if err == nil {
		t.Fatal("no error")
	}
	if strings.Contains(err.Error(), "metrics.") {
		t.Errorf("children of the unknown table reported: %v", err)
	}
}

// All errors of a file are reported at once, each at its own line.
func TestLoadServerReportsEveryError(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtund.toml", `[server]
private_key_file = "KEY"
pool = "100.64.240.0/24"
routes = ["10.244.0.0/16"]
mtu = 100
bogus = 1

[[peer]]
name = "a"
public_key = "PUB1"
address = "100.64.241.1"

[log]
level = "loud"
`)
	_, err := LoadServer(path)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		path + ":5: server.mtu",
		path + ":6: server.bogus: unknown key",
		path + ":11: peer.0.address",
		path + ":14: log.level",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error\n%v\ndoes not contain %q", err, want)
		}
	}
	if n := len(leaves(err)); n != 4 {
		t.Errorf("got %d errors, want 4:\n%v", n, err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	for name, load := range map[string]func(string) error{
		"server": func(p string) error { _, err := LoadServer(p); return err },
		"client": func(p string) error { _, err := LoadClient(p); return err },
	} {
		err := load(path)
		if err == nil || !IsConfigError(err) || !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "no such file") {
			t.Errorf("%s: err = %v, want a config error naming the missing file", name, err)
		}
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v does not name %s", name, err, path)
		}
	}
}

func TestIsConfigError(t *testing.T) {
	e := &Error{File: "f.toml", Line: 3, Key: "server.mtu", Msg: "bad"}
	if !IsConfigError(e) || !IsConfigError(fmt.Errorf("wrapped: %w", e)) || !IsConfigError(errors.Join(errors.New("x"), e)) {
		t.Error("IsConfigError misses a config error")
	}
	if IsConfigError(errors.New("f.toml:3: server.mtu: bad")) || IsConfigError(nil) {
		t.Error("IsConfigError accepts a non-config error")
	}
	if got, want := e.Error(), "f.toml:3: server.mtu: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := (&Error{File: "f.toml", Msg: "gone"}).Error(), "f.toml: gone"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// The same unknown key in two [[peer]] tables is reported at each one's line.
func TestUnknownKeyInEveryArrayTable(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "dup-unknown.toml", serverHead+"[[peer]]\nname = \"a\"\npublic_key = \"PUB1\"\nbogus = 1\n[[peer]]\nname = \"b\"\npublic_key = \"PUB2\"\nbogus = 2\n")
	_, err := LoadServer(path)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{path + ":8: peer.0.bogus: unknown key", path + ":12: peer.1.bogus: unknown key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error\n%v\ndoes not contain %q", err, want)
		}
	}
}

func TestLoadGatewayClient(t *testing.T) {
	f := newFixture(t)
	const servers = "[[server]]\nname = \"hk\"\nendpoints = [\"203.0.113.10\"]\npublic_key = \"PUB1\"\n"
	for _, c := range []struct {
		client           string
		gateway, masquer bool
	}{
		{"", false, false},
		{"gateway = true\n", true, true},
		{"gateway = true\nmasquerade = false\n", true, false},
	} {
		path := f.write(t, "gw.toml", "[client]\nprivate_key_file = \"KEY\"\n"+c.client+servers)
		cl, err := LoadClient(path)
		if err != nil {
			t.Fatal(err)
		}
		if cl.Gateway != c.gateway || cl.Masquerade != c.masquer {
			t.Errorf("%q: gateway %v masquerade %v, want %v %v", c.client, cl.Gateway, cl.Masquerade, c.gateway, c.masquer)
		}
	}
}

func TestLoadServerSubnetsAndDNS(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "s.toml", serverHead+`dns = { servers = ["10.96.0.10"], domains = ["Cluster.Local.", "svc.example"] }
[[peer]]
name = "a"
public_key = "PUB1"
subnets = ["172.16.0.0/24", "192.168.8.0/22"]
[[peer]]
name = "b"
public_key = "PUB2"
subnets = ["172.17.0.0/24"]
`)
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("172.16.0.0/24"), netip.MustParsePrefix("192.168.8.0/22")}
	if !slices.Equal(s.Peers[0].Subnets, want) {
		t.Errorf("subnets = %v, want %v", s.Peers[0].Subnets, want)
	}
	if !slices.Equal(s.DNS.Servers, []netip.Addr{netip.MustParseAddr("10.96.0.10")}) || !slices.Equal(s.DNS.Domains, []string{"cluster.local", "svc.example"}) {
		t.Errorf("dns = %+v", s.DNS)
	}
}

func hostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
