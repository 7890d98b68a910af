package server

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/session"
)

// With a map, a peer is pushed the virtual names of its allowed prefixes,
// and its ACL checks the destinations its packets carry: the virtual ones.
// The real addresses behind a map are not reachable under their own names.
func TestMapPushesAndChecksVirtualNames(t *testing.T) {
	maps := []config.Mapping{{Real: netip.MustParsePrefix("10.244.0.0/16"), Virtual: netip.MustParsePrefix("100.100.0.0/16")}}
	vm := config.Peer{Name: "vm", Allowed: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.96.0.0/12")}}
	cfg := &config.Server{Pool: netip.MustParsePrefix("100.64.240.0/24"), Gateway: netip.MustParseAddr("100.64.240.1"), MTU: 1400,
		Routes: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")}, Map: maps, Peers: []config.Peer{vm}}
	s := New(cfg, nil)
	var pi *peer
	for _, p := range s.peers {
		pi = p
	}
	m := s.configFor(pi, netip.MustParseAddr("100.64.240.2"))
	if m.Type != session.TypeConfig || !slices.Equal(m.Routes, []string{"100.100.1.0/24", "10.96.0.0/12"}) {
		t.Errorf("pushed routes %v, want the virtual 100.100.1.0/24 and the unmapped 10.96.0.0/12", m.Routes)
	}
	acl := pi.allowed.Load()
	for dst, ok := range map[string]bool{
		"100.100.1.20": true,  // virtual name of an allowed pod
		"10.96.0.10":   true,  // not mapped
		"10.244.1.20":  false, // the real name: not through the tunnel
		"100.100.2.20": false, // virtual, but outside allowed
	} {
		if _, got := acl.Lookup(netip.MustParseAddr(dst)); got != ok {
			t.Errorf("ACL allows %s = %v, want %v", dst, got, ok)
		}
	}
}

// With a map, the split DNS server pushed is gtund's own proxy on the
// gateway address, which answers with virtual addresses; a peer whose
// allowed reaches no DNS server (under its virtual address) gets none.
func TestMapPushesDNSProxy(t *testing.T) {
	maps := []config.Mapping{{Real: netip.MustParsePrefix("10.96.0.0/16"), Virtual: netip.MustParsePrefix("100.110.0.0/16")}}
	routes := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}
	vm := config.Peer{Name: "vm", Allowed: routes}
	cfg := &config.Server{Pool: netip.MustParsePrefix("100.64.240.0/24"), Gateway: netip.MustParseAddr("100.64.240.1"), MTU: 1400,
		Routes: routes, Map: maps, Peers: []config.Peer{vm},
		DNS: config.DNS{Servers: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Domains: []string{"cluster.local"}}}
	s := New(cfg, slog.New(slog.DiscardHandler))
	var pi *peer
	for _, p := range s.peers {
		pi = p
	}
	m := s.configFor(pi, netip.MustParseAddr("100.64.240.2"))
	if m.DNS == nil || !slices.Equal(m.DNS.Servers, []string{"100.64.240.1"}) || !pi.dnsProxy.Load() {
		t.Errorf("pushed dns %+v (proxy allowed %v), want server 100.64.240.1", m.DNS, pi.dnsProxy.Load())
	}
	pi.allowed.Store(aclTable([]netip.Prefix{netip.MustParsePrefix("100.110.1.0/24")}))
	if m := s.configFor(pi, netip.MustParseAddr("100.64.240.2")); m.DNS != nil || pi.dnsProxy.Load() {
		t.Errorf("a peer not allowed the dns server was pushed %+v (proxy allowed %v)", m.DNS, pi.dnsProxy.Load())
	}
}

// Without a map the cluster's DNS server is pushed as it is, and gtund
// runs no proxy.
func TestNoMapPushesDNSServer(t *testing.T) {
	routes := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}
	cfg := &config.Server{Pool: netip.MustParsePrefix("100.64.240.0/24"), Gateway: netip.MustParseAddr("100.64.240.1"), MTU: 1400,
		Routes: routes, Peers: []config.Peer{{Name: "vm", Allowed: routes}},
		DNS: config.DNS{Servers: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Domains: []string{"cluster.local"}}}
	s := New(cfg, slog.New(slog.DiscardHandler))
	for _, pi := range s.peers {
		if m := s.configFor(pi, netip.MustParseAddr("100.64.240.2")); m.DNS == nil || !slices.Equal(m.DNS.Servers, []string{"10.96.0.10"}) || pi.dnsProxy.Load() {
			t.Errorf("pushed dns %+v (proxy allowed %v), want 10.96.0.10", m.DNS, pi.dnsProxy.Load())
		}
	}
}

// Reverse zones inside a mapped real prefix are pushed under the virtual
// prefix; others, and forward domains, as they are.
func TestVirtualZones(t *testing.T) {
	maps := []config.Mapping{
		{Real: netip.MustParsePrefix("10.244.0.0/16"), Virtual: netip.MustParsePrefix("100.100.0.0/16")},
		{Real: netip.MustParsePrefix("fd00:10:244::/56"), Virtual: netip.MustParsePrefix("fd00:100:244::/56")},
	}
	in := []string{"cluster.local", "244.10.in-addr.arpa", "1.244.10.in-addr.arpa", "96.10.in-addr.arpa", "10.in-addr.arpa",
		"1.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa"}
	want := []string{"cluster.local", "100.100.in-addr.arpa", "1.100.100.in-addr.arpa", "96.10.in-addr.arpa", "10.in-addr.arpa",
		"1.0.0.0.4.4.2.0.0.0.1.0.0.0.d.f.ip6.arpa"}
	if got := virtualZones(in, maps); !slices.Equal(got, want) {
		t.Errorf("virtualZones:\n got %q\nwant %q", got, want)
	}
}
