package client

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gtun/gtun/pkg/packet"
)

// frame6 is a plain frame (no offload) with an IPv6/UDP packet.
func frame6(src, dst string) []byte {
	p := make([]byte, packet.VnetHdrLen+48)
	ip := p[packet.VnetHdrLen:]
	ip[0], ip[6], ip[7] = 0x60, 17, 64
	binary.BigEndian.PutUint16(ip[4:], 8)
	s, d := addr(src).As16(), addr(dst).As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return p
}

// A server with pool6: gtun0 gets both addresses, IPv6 packets cross both
// ways, and the server is trusted for its IPv6 routes as for its IPv4 ones.
func TestDualStackServer(t *testing.T) {
	cfg := pushed("100.64.240.2/24", "100.64.240.1", "10.244.0.0/16", "fd00:10:244::/56")
	cfg.Address6, cfg.Gateway6 = "fd64:240::2/64", "fd64:240::1"
	c1 := newMemServer(t, "c1", "192.0.2.1:9623", cfg)
	m := newMemClient(t, false, c1)
	if _, addrs := m.dev.Config(); len(addrs) != 2 || addrs[0] != netip.MustParsePrefix("100.64.240.2/24") || addrs[1] != netip.MustParsePrefix("fd64:240::2/64") {
		t.Fatalf("TUN addresses %v", addrs)
	}
	const me6 = "fd64:240::2"
	up := frame6(me6, "fd00:10:244:1::20")
	m.dev.Inject(up)
	if got := c1.next(); !bytes.Equal(got, up) {
		t.Fatalf("server got % x", got)
	}
	runFromServer(t, m, []fromServerCase{
		{"a pod", "c1", frame6("fd00:10:244:1::20", me6), ""},
		{"the server's IPv6 address", "c1", frame6("fd64:240::1", me6), ""},
		{"outside its routes", "c1", frame6("fd00:10:245::20", me6), "spoofed_source"},
		{"to another IPv6 address", "c1", frame6("fd00:10:244:1::20", "fd64:240::9"), "wrong_destination"},
		{"IPv4 still", "c1", frame("10.244.1.20", "100.64.240.2"), ""},
	})
	st := m.c.Status()
	if s := st.Servers[0]; s.Address6 != "fd64:240::2/64" || s.Gateway6 != "fd64:240::1" {
		t.Errorf("status address6 %q gateway6 %q", s.Address6, s.Gateway6)
	}
}
