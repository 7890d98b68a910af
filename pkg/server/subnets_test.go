package server

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/secure"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// A connected peer's subnets are routed to its session; a peer gone less
// than the linger time keeps its routes (no session: packets are dropped
// here) and loses them after; peers without subnets add nothing.
func TestPlanSubnets(t *testing.T) {
	var ka, kb, kc secure.PublicKey
	ka[0], kb[0], kc[0] = 1, 2, 3
	a := newPeerInfo(config.Peer{Name: "a", Subnets: []netip.Prefix{pfx("172.16.0.0/24"), pfx("192.168.8.0/22")}}, nil)
	b := newPeerInfo(config.Peer{Name: "b", Subnets: []netip.Prefix{pfx("172.17.0.0/24")}}, nil)
	c := newPeerInfo(config.Peer{Name: "c"}, nil)
	peers := map[secure.PublicKey]*peer{ka: a, kb: b, kc: c}
	ca, cc := &peerSession{peer: a, name: "a"}, &peerSession{peer: c, name: "c"}
	sessions := map[secure.PublicKey]*peerSession{ka: ca, kc: cc}
	now := time.Now()
	b.goneAt = now.Add(-10 * time.Second)

	table, routes := planSubnets(now, peers, sessions, 30*time.Second)
	slices.SortFunc(routes, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	if want := []netip.Prefix{pfx("172.16.0.0/24"), pfx("172.17.0.0/24"), pfx("192.168.8.0/22")}; !slices.Equal(routes, want) {
		t.Errorf("routes %v, want %v", routes, want)
	}
	if len(table) != 2 || table[pfx("172.16.0.0/24")] != ca || table[pfx("192.168.8.0/22")] != ca {
		t.Errorf("table %v: want a's two subnets to a's session, none for the lingering b", table)
	}
	_, routes = planSubnets(now.Add(25*time.Second), peers, sessions, 30*time.Second)
	if len(routes) != 2 || slices.Contains(routes, pfx("172.17.0.0/24")) {
		t.Errorf("after the linger: routes %v, want only a's", routes)
	}
}

// A peer may send from its address (checked by the caller) or its subnets;
// the split DNS pushed to it holds only the servers its ACL lets it reach.
func TestSubnetSourcesAndDNSByACL(t *testing.T) {
	vm := config.Peer{Name: "vm", Allowed: []netip.Prefix{pfx("10.244.0.0/16")}, Subnets: []netip.Prefix{pfx("172.16.0.0/24")}}
	cfg := &config.Server{Pool: pfx("100.64.240.0/24"), Gateway: netip.MustParseAddr("100.64.240.1"), MTU: 1400,
		Routes: []netip.Prefix{pfx("10.244.0.0/16"), pfx("10.96.0.0/12")}, Peers: []config.Peer{vm},
		DNS: config.DNS{Servers: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.244.0.53")}, Domains: []string{"cluster.local"}}}
	s := New(cfg, nil)
	var pi *peer
	for _, p := range s.peers {
		pi = p
	}
	for src, ok := range map[string]bool{"172.16.0.2": true, "172.16.1.2": false, "10.244.1.20": false} {
		if got := pi.fromSubnet(netip.MustParseAddr(src)); got != ok {
			t.Errorf("source %s accepted = %v, want %v", src, got, ok)
		}
	}
	m := s.configFor(pi, netip.MustParseAddr("100.64.240.2"))
	if !slices.Equal(m.Subnets, []string{"172.16.0.0/24"}) {
		t.Errorf("pushed subnets %v", m.Subnets)
	}
	if m.DNS == nil || !slices.Equal(m.DNS.Servers, []string{"10.244.0.53"}) || !slices.Equal(m.DNS.Domains, []string{"cluster.local"}) {
		t.Errorf("pushed dns %+v, want only the server within allowed", m.DNS)
	}
}
