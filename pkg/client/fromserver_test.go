package client

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/gtun/gtun/pkg/packet"
)

// frame is a plain frame (no offload) with an IPv4/UDP packet.
func frame(src, dst string) []byte {
	p := make([]byte, packet.VnetHdrLen+28)
	ip := p[packet.VnetHdrLen:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], 28)
	s, d := addr(src).As4(), addr(dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	return p
}

// twoServers is a client whose c1 owns 10.244.0.0/16 and routes
// 172.16.0.0/24 (its subnets) here, and whose c2 owns 10.96.0.0/12 (and
// pushed 10.244.0.0/16 too, which stays with c1); both servers use one pool.
func twoServers(t *testing.T) (*Client, *upstream, *upstream) {
	t.Helper()
	c := &Client{log: slog.New(slog.DiscardHandler)}
	c.upstreams = servers("c1", "c2")
	c1, c2 := c.upstreams[0], c.upstreams[1]
	plan := planRoutes([]claimant{
		{name: "c1", desired: pfx("10.244.0.0/16"), address: netip.MustParsePrefix("100.64.240.2/24"), gateway: addr("100.64.240.1")},
		{name: "c2", desired: pfx("10.96.0.0/12", "10.244.0.0/16"), address: netip.MustParsePrefix("100.64.240.2/24"), gateway: addr("100.64.240.1")},
	}, nil)
	c.byDst.Store(plan.table(c.upstreams))
	for _, up := range c.upstreams {
		up.tunnel.Store(&tunnelAddrs{address: netip.MustParsePrefix("100.64.240.2/24"), gateway: addr("100.64.240.1")})
	}
	c1.tunnel.Store(&tunnelAddrs{address: netip.MustParsePrefix("100.64.240.2/24"), gateway: addr("100.64.240.1"),
		subnets: packet.NewTable(map[netip.Prefix]struct{}{netip.MustParsePrefix("172.16.0.0/24"): {}})})
	return c, c1, c2
}

// A server is trusted for what its routes cover: a packet's source must be
// one this client routes to that server, or the server's own tunnel
// address.
func TestCheckFromServer(t *testing.T) {
	c, c1, c2 := twoServers(t)
	const me = "100.64.240.2"
	for _, tc := range []struct {
		name     string
		up       *upstream
		src, dst string
		want     string
	}{
		{"a pod of c1", c1, "10.244.1.20", me, ""},
		{"a service of c2", c2, "10.96.0.10", me, ""},
		{"c1's gateway", c1, "100.64.240.1", me, ""},
		{"c2's gateway, the same address", c2, "100.64.240.1", me, ""},
		{"a public source", c1, "203.0.113.5", me, "spoofed_source"},
		{"c1 with c2's service as source", c1, "10.96.0.10", me, "spoofed_source"},
		{"c2 with a pod of c1's route (it pushed it too)", c2, "10.244.1.20", me, "spoofed_source"},
		{"the cluster's VPC, outside the routes", c1, "10.0.0.3", me, "spoofed_source"},
		{"another pool address", c1, "100.64.240.7", me, "spoofed_source"},
		{"site-to-site: a pod to a host of this VPC", c1, "10.244.1.20", "172.16.0.5", ""},
		{"site-to-site from a forged source", c1, "198.51.100.9", "172.16.0.5", "spoofed_source"},
		{"c2 to a subnet c1 routes here", c2, "10.96.0.10", "172.16.0.5", "wrong_destination"},
		{"not for this client", c1, "10.244.1.20", "100.64.240.9", "wrong_destination"},
	} {
		if got := verdict(c.checkFromServer(tc.up, frame(tc.src, tc.dst))); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// ICMP errors from routers outside the routes, judged by the packet
	// they quote.
	icmpErr := func(up *upstream, router, quotedDst string) string {
		f := frame(router, me)
		f[packet.VnetHdrLen+9] = 1
		quote := frame(me, quotedDst)[packet.VnetHdrLen:]
		f = append(append(f[:packet.VnetHdrLen+20], 3, 4, 0, 0, 0, 0, 0x05, 0x78), quote...)
		return verdict(c.checkFromServer(up, f))
	}
	for _, tc := range []struct {
		name          string
		up            *upstream
		router, about string
		want          string
	}{
		{"fragmentation needed from the cluster's VPC router", c1, "10.0.0.1", "10.244.1.20", ""},
		{"the same about c2's route", c1, "10.0.0.1", "10.96.0.10", "spoofed_source"},
		{"about a public address", c1, "10.0.0.1", "203.0.113.5", "spoofed_source"},
		{"from c2's router about its route", c2, "192.168.0.1", "10.96.0.10", ""},
	} {
		if got := icmpErr(tc.up, tc.router, tc.about); got != tc.want {
			t.Errorf("ICMP error %s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := verdict(c.checkFromServer(c1, make([]byte, packet.VnetHdrLen))); got != "malformed" {
		t.Errorf("short frame: %q", got)
	}
	for _, reason := range []DropReason{DropMalformed, DropBadOffload, DropWrongDestination, DropSpoofed} {
		if dropLines[reason] == "" {
			t.Errorf("no log message for %q", reason)
		}
	}
}

// The checks allocate nothing for a packet they let through.
func TestCheckFromServerAllocs(t *testing.T) {
	c, c1, _ := twoServers(t)
	f := frame("10.244.1.20", "100.64.240.2")
	if n := testing.AllocsPerRun(1000, func() {
		if r, drop := c.checkFromServer(c1, f); drop {
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
