package packet

import (
	"encoding/binary"
	"testing"
)

// icmp4 is an IPv4 packet to the gateway with an 8-byte ICMP header of
// type typ and code, and payload bytes of data.
func icmp4(typ, code byte, payload int) []byte {
	p := ipv4("100.64.240.2", "100.64.240.1")
	p[9] = protoICMP
	p = append(p, typ, code, 0, 0, 0, 1, 0, 1)
	p = append(p, make([]byte, payload)...)
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	return p
}

func TestEchoRequest(t *testing.T) {
	withOptions := icmp4(8, 0, 0)
	withOptions = append(withOptions[:20:20], append([]byte{1, 1, 1, 1}, withOptions[20:]...)...)
	withOptions[0] = 0x46 // a 24-byte header: the ICMP header is after the options

	laterFragment := func(proto byte) []byte {
		p := icmp4(0, 0, 16) // what follows offset 0 is payload, any bytes
		p[9] = proto
		binary.BigEndian.PutUint16(p[6:], 185) // offset 1480
		return p
	}
	firstFragment := icmp4(8, 0, 1472)
	binary.BigEndian.PutUint16(firstFragment[6:], 0x2000) // more fragments, offset 0
	firstFragmentReply := icmp4(0, 0, 1472)
	binary.BigEndian.PutUint16(firstFragmentReply[6:], 0x2000)

	v6 := func(next, typ, code byte) []byte {
		p := make([]byte, 48)
		p[0] = 0x60
		p[6] = next
		p[40], p[41] = typ, code
		return p
	}
	udp := ipv4("100.64.240.2", "100.64.240.1")
	udp[9] = protoUDP
	udp = append(udp, make([]byte, 8)...)

	for _, c := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"echo request", icmp4(8, 0, 56), true},
		{"echo request, header only", icmp4(8, 0, 0), true},
		{"echo request after IP options", withOptions, true},
		{"first fragment of an echo request", firstFragment, true},
		{"later fragment of an ICMP datagram", laterFragment(protoICMP), true},
		{"echo reply", icmp4(0, 0, 56), false},
		{"echo request with a nonzero code", icmp4(8, 1, 56), false},
		{"destination unreachable", icmp4(3, 3, 28), false},
		{"timestamp request", icmp4(13, 0, 12), false},
		{"first fragment of an echo reply", firstFragmentReply, false},
		{"later fragment of a UDP datagram", laterFragment(protoUDP), false},
		{"ICMP cut short", icmp4(8, 0, 0)[:24], false},
		{"UDP", udp, false},
		{"ICMPv6 echo request", v6(protoICMPv6, 128, 0), true},
		{"ICMPv6 echo reply", v6(protoICMPv6, 129, 0), false},
		{"ICMPv6 behind a fragment header", v6(44, 128, 0), false},
		{"ICMPv6 cut short", v6(protoICMPv6, 128, 0)[:44], false},
		{"empty", nil, false},
		{"not IP", []byte{0x10, 0, 0}, false},
	} {
		if got := EchoRequest(c.p); got != c.want {
			t.Errorf("%s: EchoRequest = %v, want %v", c.name, got, c.want)
		}
	}
}

// An ICMP error quotes the packet it is about: its destination is what the
// error concerns, whoever sent it.
func TestErrorAbout(t *testing.T) {
	quoted := ipv4("100.64.240.2", "10.244.1.20")
	quoted[9] = protoUDP
	quoted = append(quoted, 0x9c, 0x40, 0, 53, 0, 8, 0, 0)
	icmpErr := func(typ, code byte, q []byte) []byte {
		p := ipv4("10.0.0.1", "100.64.240.2")
		p[9] = protoICMP
		p = append(p, typ, code, 0, 0, 0, 0, 0x05, 0x78)
		return append(p, q...)
	}
	v6 := func(next, typ byte, q []byte) []byte {
		p := make([]byte, 48)
		p[0], p[6], p[40] = 0x60, next, typ
		return append(p, q...)
	}
	quoted6 := make([]byte, 48)
	quoted6[0], quoted6[39] = 0x60, 0x20 // to ::20

	for _, c := range []struct {
		name string
		p    []byte
		want string
	}{
		{"fragmentation needed", icmpErr(3, 4, quoted), "10.244.1.20"},
		{"port unreachable", icmpErr(3, 3, quoted), "10.244.1.20"},
		{"time exceeded", icmpErr(11, 0, quoted), "10.244.1.20"},
		{"parameter problem", icmpErr(12, 0, quoted), "10.244.1.20"},
		{"echo reply", icmpErr(0, 0, quoted), ""},
		{"redirect", icmpErr(5, 1, quoted), ""},
		{"quote cut short", icmpErr(3, 4, quoted[:19]), ""},
		{"quote not IPv4", icmpErr(3, 4, append([]byte{0x60}, quoted[1:]...)), ""},
		{"UDP", append(ipv4("10.0.0.1", "100.64.240.2"), make([]byte, 28)...), ""},
		{"ICMPv6 packet too big", v6(protoICMPv6, 2, quoted6), "::20"},
		{"ICMPv6 echo reply", v6(protoICMPv6, 129, quoted6), ""},
		{"ICMPv6 quote cut short", v6(protoICMPv6, 1, quoted6[:39]), ""},
	} {
		got, ok := ErrorAbout(c.p)
		if c.want == "" {
			if ok {
				t.Errorf("%s: about %v, want not an error", c.name, got)
			}
			continue
		}
		if !ok || got.String() != c.want {
			t.Errorf("%s: %v %v, want %s", c.name, got, ok, c.want)
		}
	}
}

func TestToPort(t *testing.T) {
	l4 := func(proto byte, dport uint16) []byte {
		p := ipv4("100.64.240.2", "100.64.240.1")
		p[9] = proto
		p = append(p, make([]byte, 20)...)
		binary.BigEndian.PutUint16(p[22:], dport)
		return p
	}
	later := l4(protoUDP, 53)
	binary.BigEndian.PutUint16(later[6:], 185)
	v6 := make([]byte, 48)
	v6[0], v6[6] = 0x60, protoUDP
	binary.BigEndian.PutUint16(v6[42:], 53)
	for _, c := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"udp 53", l4(protoUDP, 53), true},
		{"tcp 53", l4(protoTCP, 53), true},
		{"udp 5353", l4(protoUDP, 5353), false},
		{"tcp 22", l4(protoTCP, 22), false},
		{"icmp", l4(1, 53), false},
		{"a later fragment", later, false},
		{"cut short", l4(protoUDP, 53)[:22], false},
		{"ipv6 udp 53", v6, true},
		{"garbage", []byte{0x45}, false},
	} {
		if got := ToPort(c.p, 53); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
