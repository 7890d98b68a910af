package ipam

import "net/netip"

// A client's IPv6 tunnel address (server.pool6) is not leased on its own:
// it is pool6's network with the host bits of the client's IPv4 address
// (pool 100.64.240.0/24, pool6 fd64:240::/64: 100.64.240.10 is fd64:240::a).
// One sticky lease so holds both, a fixed address fixes both, and the two
// can never disagree across restarts or between gateways sharing a store.

// Address6 is the IPv6 address in pool6 of a4, an address of pool. pool6
// must have room for pool's host bits (config checks it).
func Address6(pool, pool6 netip.Prefix, a4 netip.Addr) netip.Addr {
	x, base := a4.As4(), pool.Masked().Addr().As4()
	off := be32(x) - be32(base)
	out := pool6.Masked().Addr().As16()
	for i := 15; i >= 12; i-- {
		out[i] |= byte(off)
		off >>= 8
	}
	return netip.AddrFrom16(out)
}

// Offset6 is the offset of a in pool6 when a is the IPv6 address of the
// pool address with that offset (Address6), and whether it is.
func Offset6(pool, pool6 netip.Prefix, a netip.Addr) (int, bool) {
	// a must lie in the first 2^hostBits addresses of pool6: the bits of
	// pool6's host part above the pool's host bits are zero.
	hostBits := 32 - pool.Bits()
	if !a.Is6() || !netip.PrefixFrom(pool6.Masked().Addr(), 128-hostBits).Contains(a) {
		return 0, false
	}
	b := a.As16()
	off := be32([4]byte{b[12], b[13], b[14], b[15]}) & (1<<hostBits - 1)
	return int(off), true
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
