package server

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
)

// frame is a plain frame (no offload) with an IPv4 packet of protocol
// proto from src to dst whose first transport bytes are l4.
func frame(src, dst string, proto byte, l4 ...byte) []byte {
	p := make([]byte, packet.VnetHdrLen+20, packet.VnetHdrLen+20+len(l4))
	ip := p[packet.VnetHdrLen:]
	ip[0], ip[8], ip[9] = 0x45, 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	p = append(p, l4...)
	binary.BigEndian.PutUint16(p[packet.VnetHdrLen+2:], uint16(len(p)-packet.VnetHdrLen))
	return p
}

var (
	ping  = []byte{8, 0, 0, 0, 0, 1, 0, 1}                                // ICMP echo request
	pong  = []byte{0, 0, 0, 0, 0, 1, 0, 1}                                // ICMP echo reply
	unrch = []byte{3, 4, 0, 0, 0, 0, 0x05, 0x78}                          // ICMP fragmentation needed, MTU 1400
	syn22 = []byte{0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02} // TCP SYN to port 22
	udp53 = []byte{0x9c, 0x40, 0, 53, 0, 8, 0, 0}
)

// gtund's own tunnel address answers pings and nothing else, unless the
// peer's allowed names it; the host's other addresses need allowed like
// any destination; the source checks come first.
func TestCheckFromClient(t *testing.T) {
	routes := []netip.Prefix{pfx("10.244.0.0/16"), pfx("10.96.0.0/12")}
	var k1, k2 secure.PublicKey
	k1[0], k2[0] = 1, 2
	cfg := &config.Server{Pool: pfx("100.64.240.0/24"), Gateway: netip.MustParseAddr("100.64.240.1"), MTU: 1400, Routes: routes,
		Peers: []config.Peer{
			{Name: "closed", PublicKey: k1, Allowed: routes, Subnets: []netip.Prefix{pfx("172.16.0.0/24")}},
			{Name: "open", PublicKey: k2, Allowed: append(slices.Clone(routes), pfx("100.64.240.1/32"))},
		}}
	s := New(cfg, slog.New(slog.DiscardHandler))
	conn := map[string]*peerSession{}
	for _, p := range s.peers {
		conn[p.cfg.Name] = &peerSession{peer: p, name: p.cfg.Name, addr: netip.MustParseAddr("100.64.240.2")}
	}
	const me, gw, gwVPC = "100.64.240.2", "100.64.240.1", "10.0.0.2"
	for _, c := range []struct {
		name  string
		peer  string
		frame []byte
		want  string
	}{
		{"ping the gateway", "closed", frame(me, gw, 1, ping...), ""},
		{"ping the gateway from a subnet", "closed", frame("172.16.0.5", gw, 1, ping...), ""},
		{"ssh to the gateway", "closed", frame(me, gw, 6, syn22...), DropGatewayHost.String()},
		{"dns to the gateway", "closed", frame(me, gw, 17, udp53...), DropGatewayHost.String()},
		{"echo reply to the gateway", "closed", frame(me, gw, 1, pong...), DropGatewayHost.String()},
		{"forged fragmentation needed to the gateway", "closed", frame(me, gw, 1, unrch...), DropGatewayHost.String()},
		{"ssh to the gateway's VPC address", "closed", frame(me, gwVPC, 6, syn22...), DropACL.String()},
		{"ssh to the gateway, allowed", "open", frame(me, gw, 6, syn22...), ""},
		{"dns to the gateway, allowed", "open", frame(me, gw, 17, udp53...), ""},
		{"ssh to the gateway's VPC address, gateway allowed", "open", frame(me, gwVPC, 6, syn22...), DropACL.String()},
		{"to a pod", "closed", frame(me, "10.244.1.20", 6, syn22...), ""},
		{"to another peer", "open", frame(me, "100.64.240.3", 1, ping...), DropACL.String()},
		{"spoofed ping to the gateway", "closed", frame("100.64.240.9", gw, 1, ping...), DropSpoofed.String()},
		{"short", "closed", make([]byte, packet.VnetHdrLen), DropMalformed.String()},
		{"not IP", "closed", append(make([]byte, packet.VnetHdrLen), 0x10, 0, 0), DropMalformed.String()},
	} {
		if got := verdict(s.checkFromPeer(conn[c.peer], c.frame)); got != c.want {
			t.Errorf("%s (peer %s): %q, want %q", c.name, c.peer, got, c.want)
		}
	}
	for _, reason := range []DropReason{DropMalformed, DropBadOffload, DropSpoofed, DropACL, DropGatewayHost} {
		if dropLines[reason] == "" {
			t.Errorf("no log line for %q", reason)
		}
	}
}

// The gateway's own address in allowed opens the host but is not pushed as
// a route: the client reaches it on the tunnel's subnet.
func TestGatewayInAllowedNotPushed(t *testing.T) {
	routes := []netip.Prefix{pfx("10.244.0.0/16")}
	cfg := &config.Server{Pool: pfx("100.64.240.0/24"), Gateway: netip.MustParseAddr("100.64.240.1"), MTU: 1400, Routes: routes,
		Peers: []config.Peer{{Name: "open", Allowed: append(slices.Clone(routes), pfx("100.64.240.1/32"))}}}
	s := New(cfg, slog.New(slog.DiscardHandler))
	for _, p := range s.peers {
		if m := s.configFor(p, netip.MustParseAddr("100.64.240.2")); !slices.Equal(m.Routes, []string{"10.244.0.0/16"}) {
			t.Errorf("pushed routes %v, want only 10.244.0.0/16", m.Routes)
		}
	}
}

// The checks allocate nothing for a packet they let through (the data path).
func TestCheckFromClientAllocs(t *testing.T) {
	routes := []netip.Prefix{pfx("10.244.0.0/16")}
	cfg := &config.Server{Pool: pfx("100.64.240.0/24"), Gateway: netip.MustParseAddr("100.64.240.1"), MTU: 1400, Routes: routes,
		Peers: []config.Peer{{Name: "vm", Allowed: routes}}}
	s := New(cfg, slog.New(slog.DiscardHandler))
	var c *peerSession
	for _, p := range s.peers {
		c = &peerSession{peer: p, name: "vm", addr: netip.MustParseAddr("100.64.240.2")}
	}
	toPod, toGW := frame("100.64.240.2", "10.244.1.20", 6, syn22...), frame("100.64.240.2", "100.64.240.1", 1, ping...)
	if n := testing.AllocsPerRun(1000, func() {
		if r, drop := s.checkFromPeer(c, toPod); drop {
			t.Fatal(r)
		}
		if r, drop := s.checkFromPeer(c, toGW); drop {
			t.Fatal(r)
		}
	}); n != 0 {
		t.Errorf("%v allocations per packet", n)
	}
}

// verdict names a check's outcome: the drop reason, or "" for a packet let through.
func verdict(r DropReason, drop bool) string {
	if !drop {
		return ""
	}
	return r.String()
}
