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

// A split DNS server inside a mapped prefix is pushed under its virtual
// address: that is where the client's queries can go.
func TestMapPushesDNSServerVirtual(t *testing.T) {
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
	if m.DNS == nil || !slices.Equal(m.DNS.Servers, []string{"100.110.0.10"}) {
		t.Errorf("pushed dns %+v, want server 100.110.0.10", m.DNS)
	}
}
