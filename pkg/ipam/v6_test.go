package ipam

import (
	"net/netip"
	"testing"
)

func TestAddress6(t *testing.T) {
	for _, c := range []struct {
		pool, pool6, a4, want string
	}{
		{"100.64.240.0/24", "fd64:240::/64", "100.64.240.1", "fd64:240::1"},
		{"100.64.240.0/24", "fd64:240::/64", "100.64.240.10", "fd64:240::a"},
		{"100.64.0.0/16", "fd64:240::/64", "100.64.3.7", "fd64:240::307"},
		{"100.64.240.0/24", "fd64:240::ff00/120", "100.64.240.254", "fd64:240::fffe"},
		{"100.64.0.0/16", "2001:db8:1:2::/112", "100.64.255.254", "2001:db8:1:2::fffe"},
	} {
		pool, pool6 := netip.MustParsePrefix(c.pool), netip.MustParsePrefix(c.pool6)
		a4 := netip.MustParseAddr(c.a4)
		got := Address6(pool, pool6, a4)
		if got.String() != c.want {
			t.Errorf("Address6(%s, %s, %s) = %s, want %s", pool, pool6, a4, got, c.want)
		}
		off, ok := Offset6(pool, pool6, got)
		a4off := int(be32(a4.As4()) - be32(pool.Addr().As4()))
		if !ok || off != a4off {
			t.Errorf("Offset6(%s) = %d, %v; want %d", got, off, ok, a4off)
		}
	}
	pool, pool6 := netip.MustParsePrefix("100.64.240.0/24"), netip.MustParsePrefix("fd64:240::/64")
	for _, a := range []string{
		"fd64:240::100",       // beyond the pool's 8 host bits
		"fd64:240::1:0:0:5",   // higher host bits of pool6 set
		"fd64:241::5",         // outside pool6
		"100.64.240.5",        // IPv4
		"::ffff:100.64.240.5", // IPv4-mapped
	} {
		if off, ok := Offset6(pool, pool6, netip.MustParseAddr(a)); ok {
			t.Errorf("Offset6(%s) = %d, true; want false", a, off)
		}
	}
}
