package packet

import "encoding/binary"

const (
	protoICMP   = 1
	protoICMPv6 = 58

	icmpEchoRequest   = 8
	icmpv6EchoRequest = 128
)

// EchoRequest reports whether p is an ICMP echo request (ping), IPv4 or
// IPv6, the one thing a peer may send to gtund's own tunnel address
// without its ACL naming it.
//
// A non-first IPv4 fragment of an ICMP datagram counts too, so that a ping
// larger than the MTU is answered: the kernel reassembles fragments only
// with the same protocol, and the first fragment (checked here like an
// unfragmented packet) decides what the datagram is. IPv6 extension
// headers (fragments included) are not walked: such a packet is not an
// echo request here.
func EchoRequest(p []byte) bool {
	hl, proto, err := ipHeader(p)
	if err != nil {
		return false
	}
	switch p[0] >> 4 {
	case 4:
		if proto != protoICMP {
			return false
		}
		if binary.BigEndian.Uint16(p[6:8])&0x1fff != 0 {
			return true // a later fragment: its datagram's first fragment was checked
		}
		return len(p) >= hl+8 && p[hl] == icmpEchoRequest && p[hl+1] == 0
	default:
		return proto == protoICMPv6 && len(p) >= hl+8 && p[hl] == icmpv6EchoRequest && p[hl+1] == 0
	}
}
