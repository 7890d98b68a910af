package server

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/packet"
)

// IPv6 inside the tunnel (server.pool6): a client's IPv6 address is pool6
// with the host bits of its IPv4 one, pushed with it; the data plane checks
// and routes IPv6 packets as it does IPv4 ones.

const gw6 = "fd64:240::1" // gtund's own IPv6 tunnel address

var ping6 = []byte{128, 0, 0, 0, 0, 1, 0, 1} // ICMPv6 echo request

// testConfig6 is testConfig with pool6 fd64:240::/64 and the cluster's IPv6
// pod and Service CIDRs served besides the IPv4 ones.
func testConfig6(t *testing.T, peers ...config.Peer) *config.Server {
	routes := []netip.Prefix{pfx("10.244.0.0/16"), pfx("10.96.0.0/12"), pfx("fd00:10:244::/56"), pfx("fd00:10:96::/112")}
	for i := range peers {
		if peers[i].Allowed == nil {
			peers[i].Allowed = routes
		}
	}
	cfg := testConfig(t, peers...)
	cfg.Routes = routes
	cfg.Pool6, cfg.Gateway6 = pfx("fd64:240::/64"), netip.MustParseAddr(gw6)
	return cfg
}

// frame6 is a plain frame with an IPv6 packet of next header proto from src
// to dst whose first transport bytes are l4.
func frame6(src, dst string, proto byte, l4 ...byte) []byte {
	p := make([]byte, packet.VnetHdrLen+40, packet.VnetHdrLen+40+len(l4))
	ip := p[packet.VnetHdrLen:]
	ip[0], ip[6], ip[7] = 0x60, proto, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	p = append(p, l4...)
	binary.BigEndian.PutUint16(p[packet.VnetHdrLen+4:], uint16(len(l4)))
	return p
}

func TestAddress6Pushed(t *testing.T) {
	m := newMemServer(t, testConfig6(t, config.Peer{Name: "vm"}))
	c := m.connect("vm")
	want := ipam.Address6(m.s.cfg.Pool, m.s.cfg.Pool6, c.addr)
	if c.cfg.Address6 != netip.PrefixFrom(want, 64).String() || c.cfg.Gateway6 != gw6 {
		t.Fatalf("pushed address6 %q gateway6 %q, want %s/64 and %s", c.cfg.Address6, c.cfg.Gateway6, want, gw6)
	}
	// The IPv4 address's host bits, in pool6.
	if a4 := c.addr.As4(); want != netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x64, 2: 0x02, 3: 0x40, 15: a4[3]}) {
		t.Errorf("address6 %s does not carry the host bits of %s", want, c.addr)
	}
	st := m.s.Status()
	if st.Pool6 != "fd64:240::/64" || st.Gateway6 != gw6 || len(st.Peers) != 1 || st.Peers[0].Address6 != want.String() {
		t.Errorf("status pool6 %q gateway6 %q peers %+v", st.Pool6, st.Gateway6, st.Peers)
	}
	// Without pool6 nothing IPv6 is pushed.
	m4 := newMemServer(t, testConfig(t, config.Peer{Name: "vm"}))
	if c4 := m4.connect("vm"); c4.cfg.Address6 != "" || c4.cfg.Gateway6 != "" {
		t.Errorf("pushed %q %q without pool6", c4.cfg.Address6, c4.cfg.Gateway6)
	}
}

// A peer sends IPv6 from its IPv6 tunnel address (or its IPv6 subnets) to
// what its allowed names; gtund's IPv6 address answers pings only.
func TestAntiSpoofingAndACL6(t *testing.T) {
	m := newMemServer(t, testConfig6(t,
		config.Peer{Name: "vm", Allowed: []netip.Prefix{pfx("fd00:10:244::/56"), pfx("10.244.0.0/16")}},
		config.Peer{Name: "site", Subnets: []netip.Prefix{pfx("fd00:172:16::/64")}}))
	clients := map[string]*memClient{"vm": m.connect("vm"), "site": m.connect("site")}
	me6 := func(c *memClient) string { return ipam.Address6(m.s.cfg.Pool, m.s.cfg.Pool6, c.addr).String() }
	to := func(src, dst string, proto byte, l4 ...byte) func(string) []byte {
		return func(string) []byte { return frame6(src, dst, proto, l4...) }
	}
	vm, site := me6(clients["vm"]), me6(clients["site"])
	runFromPeer(t, m, clients, []fromPeerCase{
		{"to a pod", "vm", to(vm, "fd00:10:244:1::20", 6, syn22...), ""},
		{"to a service outside its allowed", "vm", to(vm, "fd00:10:96::10", 17, udp53...), "acl"},
		{"to a service in the served routes", "site", to(site, "fd00:10:96::10", 17, udp53...), ""},
		{"to another peer", "vm", to(vm, site, 58, ping6...), "acl"},
		{"from another peer's address", "vm", to(site, "fd00:10:244:1::20", 6, syn22...), "spoofed_source"},
		{"from pool6 beside its address", "vm", to("fd64:240::1:0:0:5", "fd00:10:244:1::20", 6, syn22...), "spoofed_source"},
		{"from its subnets", "site", to("fd00:172:16::9", "fd00:10:244:1::20", 6, syn22...), ""},
		{"from beside its subnets", "site", to("fd00:172:17::9", "fd00:10:244:1::20", 6, syn22...), "spoofed_source"},
		{"ping gtund", "vm", to(vm, gw6, 58, ping6...), ""},
		{"ssh to gtund", "vm", to(vm, gw6, 6, syn22...), "gateway_host"},
		{"IPv4 still", "vm", func(me string) []byte { return frame(me, "10.244.1.20", 6, syn22...) }, ""},
	})
}

// The host's IPv6 packets go to the session whose IPv6 address (its IPv4
// address's slot) or IPv6 subnets hold their destination.
func TestRoutingToPeers6(t *testing.T) {
	m := newMemServer(t, testConfig6(t,
		config.Peer{Name: "a", Subnets: []netip.Prefix{pfx("fd00:172:16::/64")}},
		config.Peer{Name: "b"}))
	a, b := m.connect("a"), m.connect("b")
	a6 := ipam.Address6(m.s.cfg.Pool, m.s.cfg.Pool6, a.addr).String()
	b6 := ipam.Address6(m.s.cfg.Pool, m.s.cfg.Pool6, b.addr).String()
	for _, tc := range []struct {
		dst  string
		want *memClient
	}{
		{a6, a}, {b6, b}, {"fd00:172:16::9", a},
		{"fd64:240::c8", nil},        // a pool address no one holds
		{"fd64:240::1:0:0:2", nil},   // in pool6, beyond the pool's host bits
		{gw6, nil},                   // gtund's own
		{"fd00:10:244:1::20", nil},   // the cluster's
		{"::ffff:100.64.240.2", nil}, // an IPv4-mapped address is no pool address
	} {
		t.Run(tc.dst, func(t *testing.T) {
			m.inject(t, frame6("fd00:10:244:1::20", tc.dst, 17, udp53...), tc.want)
			a.quiet()
			b.quiet()
		})
	}
}

// IPv6 frames cost no allocation either: checked, routed, dropped.
func TestDataPlaneAllocs6(t *testing.T) {
	m := newMemServer(t, testConfig6(t, config.Peer{Name: "vm", Allowed: []netip.Prefix{pfx("fd00:10:244::/56")}}))
	m.dev.Discard()
	vm := m.connect("vm")
	me6 := ipam.Address6(m.s.cfg.Pool, m.s.cfg.Pool6, vm.addr)
	ps := m.s.route(me6)
	if ps == nil {
		t.Fatalf("%s not routed to vm", me6)
	}
	pass, drop := frame6(me6.String(), "fd00:10:244:1::20", 6, syn22...), frame6(me6.String(), "fd00:10:96::10", 6, syn22...)
	m.s.fromPeer(ps, drop) // its line logged: the next ones are held back
	for name, f := range map[string]func(){
		"pass":       func() { m.s.fromPeer(ps, pass) },
		"drop":       func() { m.s.fromPeer(ps, drop) },
		"route":      func() { m.s.route(me6) },
		"route miss": func() { m.s.route(netip.MustParseAddr("fd00:172:16::1")) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per packet", name, n)
		}
	}
}
