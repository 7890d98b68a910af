package packet

import (
	"encoding/binary"
	"net/netip"
)

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

// ICMP error types that quote the packet they are about.
const (
	icmpDestUnreachable = 3
	icmpTimeExceeded    = 11
	icmpParamProblem    = 12
	icmpv6MaxError      = 4 // types 1..4: unreachable, too big, time exceeded, parameter problem
)

// ErrorAbout returns the destination of the packet an ICMP (or ICMPv6)
// error quotes: an unreachable, packet-too-big ("fragmentation needed"),
// time-exceeded or parameter-problem message from any router on a path is
// about a packet sent to that destination, whatever its own source.
func ErrorAbout(p []byte) (netip.Addr, bool) {
	hl, proto, err := ipHeader(p)
	if err != nil {
		return netip.Addr{}, false
	}
	switch p[0] >> 4 {
	case 4:
		if proto != protoICMP || binary.BigEndian.Uint16(p[6:8])&0x1fff != 0 || len(p) < hl+8+20 {
			return netip.Addr{}, false
		}
		switch p[hl] {
		case icmpDestUnreachable, icmpTimeExceeded, icmpParamProblem:
		default:
			return netip.Addr{}, false
		}
		if q := p[hl+8:]; q[0]>>4 == 4 {
			return netip.AddrFrom4([4]byte(q[16:20])), true
		}
	default:
		if proto != protoICMPv6 || len(p) < hl+8+40 || p[hl] < 1 || p[hl] > icmpv6MaxError {
			return netip.Addr{}, false
		}
		if q := p[hl+8:]; q[0]>>4 == 6 {
			return netip.AddrFrom16([16]byte(q[24:40])), true
		}
	}
	return netip.Addr{}, false
}

// ToPort reports whether p is a UDP or TCP packet to port (its first
// fragment, or an unfragmented one), IPv4 or IPv6 without extension
// headers: what a peer may send to a service gtund itself offers on its
// tunnel address (DNS). Later fragments carry no port and are not.
func ToPort(p []byte, port uint16) bool {
	hl, proto, err := ipHeader(p)
	if err != nil || (proto != protoTCP && proto != protoUDP) {
		return false
	}
	if p[0]>>4 == 4 && binary.BigEndian.Uint16(p[6:8])&0x1fff != 0 {
		return false
	}
	return len(p) >= hl+4 && binary.BigEndian.Uint16(p[hl+2:hl+4]) == port
}
