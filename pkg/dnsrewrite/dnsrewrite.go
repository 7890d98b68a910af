// Package dnsrewrite changes DNS messages on their way between a client and
// a cluster's DNS server, so that what the client is told is what it can
// use:
//
//   - Addresses: A and AAAA records inside a mapped real prefix are given
//     under the virtual prefix clients reach it by (gtund's map: the
//     cluster answers 10.244.1.20, the client needs 100.100.1.20).
//   - Rename: a cluster's domain is given under a name of the client's
//     choice (gtun's dns_suffix: web.default.svc.hk is asked as
//     web.default.svc.cluster.local and answered back as .hk), so two
//     clusters that both call themselves cluster.local can be told apart.
//
// A rewritten answer is no longer the one its zone signed: the AD bit is
// cleared and the signatures (RRSIG) of the rewritten sections are removed,
// so a validating stub sees an unsigned answer rather than a forged one.
// TTLs are kept.
package dnsrewrite

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Mapping is one real prefix served under a virtual one of the same length
// and family; an address keeps its host bits.
type Mapping struct {
	Real, Virtual netip.Prefix
}

// mapAddr moves a into m's virtual prefix if m's real prefix holds it.
func (m Mapping) mapAddr(a netip.Addr) (netip.Addr, bool) {
	if !m.Real.Contains(a) || m.Real.Addr().BitLen() != m.Virtual.Addr().BitLen() {
		return a, false
	}
	b, v := a.AsSlice(), m.Virtual.Addr().AsSlice()
	bits := m.Real.Bits()
	for i := range b {
		switch {
		case bits >= 8:
			b[i] = v[i]
			bits -= 8
		case bits > 0:
			keep := byte(0xff) >> bits // host bits of this byte
			b[i] = b[i]&keep | v[i]&^keep
			bits = 0
		}
	}
	out, _ := netip.AddrFromSlice(b)
	return out, true
}

// Addresses rewrites every A and AAAA record of m's answer and additional
// sections whose address lies in a real prefix of maps to the virtual
// one, and returns how many it rewrote. When it rewrote any, AD is cleared
// and the RRSIGs of those sections go.
func Addresses(m *dns.Msg, maps []Mapping) int {
	if len(maps) == 0 {
		return 0
	}
	n := addressesIn(m.Answer, maps) + addressesIn(m.Extra, maps)
	if n > 0 {
		unsign(m)
	}
	return n
}

func addressesIn(rrs []dns.RR, maps []Mapping) int {
	n := 0
	for _, rr := range rrs {
		switch r := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(r.A.To4()); ok {
				if v, ok := mapped(a, maps); ok {
					b := v.As4()
					r.A = b[:]
					n++
				}
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(r.AAAA); ok && a.Is6() {
				if v, ok := mapped(a, maps); ok {
					b := v.As16()
					r.AAAA = b[:]
					n++
				}
			}
		}
	}
	return n
}

func mapped(a netip.Addr, maps []Mapping) (netip.Addr, bool) {
	for _, m := range maps {
		if v, ok := m.mapAddr(a); ok {
			return v, true
		}
	}
	return a, false
}

// unsign clears AD and removes the signatures of the answer and additional
// sections: they were made over records that are no longer there.
func unsign(m *dns.Msg) {
	m.AuthenticatedData = false
	m.Answer = dropSigs(m.Answer)
	m.Extra = dropSigs(m.Extra)
}

func dropSigs(rrs []dns.RR) []dns.RR {
	out := rrs[:0]
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeRRSIG {
			out = append(out, rr)
		}
	}
	return out
}

// Rename gives the cluster domain Cluster (e.g. "cluster.local") to a client
// as Local (e.g. "hk"). Both are normalized names (lower case, no trailing
// dot).
type Rename struct {
	Local, Cluster string
}

// swapSuffix returns name with the suffix from replaced by to, if name (a
// DNS name, any case, with or without the trailing dot) is from or under
// it. The labels before the suffix keep their case.
func swapSuffix(name, from, to string) (string, bool) {
	fqdn := strings.HasSuffix(name, ".")
	n := strings.TrimSuffix(name, ".")
	var head string
	switch {
	case strings.EqualFold(n, from):
	case len(n) > len(from) && n[len(n)-len(from)-1] == '.' && strings.EqualFold(n[len(n)-len(from):], from):
		head = n[:len(n)-len(from)]
	default:
		return name, false
	}
	out := head + to
	if fqdn {
		out += "."
	}
	return out, true
}

// Request renames the question of a query under Local to the same name
// under Cluster, and reports whether it did.
func (r Rename) Request(m *dns.Msg) bool {
	if len(m.Question) != 1 {
		return false
	}
	n, ok := swapSuffix(m.Question[0].Name, r.Local, r.Cluster)
	if ok {
		m.Question[0].Name = n
	}
	return ok
}

// Response gives the cluster's answer to a renamed query back under Local:
// the question becomes q (the client's own), and every owner name and name
// in a record's data (CNAME, SRV, PTR, NS, MX, DNAME targets, SOA names)
// under Cluster moves under Local. It returns how many names it changed;
// when any, AD is cleared and the signatures go (see Addresses).
func (r Rename) Response(m *dns.Msg, q dns.Question) int {
	if len(m.Question) == 1 {
		m.Question[0] = q
	}
	n := 0
	name := func(s *string) {
		if v, ok := swapSuffix(*s, r.Cluster, r.Local); ok {
			*s = v
			n++
		}
	}
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			name(&rr.Header().Name)
			switch x := rr.(type) {
			case *dns.CNAME:
				name(&x.Target)
			case *dns.DNAME:
				name(&x.Target)
			case *dns.SRV:
				name(&x.Target)
			case *dns.PTR:
				name(&x.Ptr)
			case *dns.NS:
				name(&x.Ns)
			case *dns.MX:
				name(&x.Mx)
			case *dns.SOA:
				name(&x.Ns)
				name(&x.Mbox)
			}
		}
	}
	if n > 0 {
		unsign(m)
		m.Ns = dropSigs(m.Ns)
	}
	return n
}

// Reverse returns the Rename that asks a reverse lookup of a virtual
// address as that of its real one: for "20.1.100.100.in-addr.arpa." with
// 10.244.0.0/16=100.100.0.0/16 it is {Local: "20.1.100.100.in-addr.arpa",
// Cluster: "20.1.244.10.in-addr.arpa"}; Request and Response then swap the
// names. ok is false when name is not the reverse name of one address
// inside a virtual prefix of maps.
func Reverse(name string, maps []Mapping) (r Rename, ok bool) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	a, ok := reverseAddr(n)
	if !ok {
		return Rename{}, false
	}
	for _, m := range maps {
		if m.Virtual.Contains(a) && m.Real.Addr().BitLen() == m.Virtual.Addr().BitLen() {
			real, _ := Mapping{Real: m.Virtual, Virtual: m.Real}.mapAddr(a)
			rev, err := dns.ReverseAddr(real.String())
			if err != nil {
				return Rename{}, false
			}
			return Rename{Local: n, Cluster: strings.TrimSuffix(rev, ".")}, true
		}
	}
	return Rename{}, false
}

// reverseAddr parses a whole reverse name (4 labels under in-addr.arpa,
// 32 under ip6.arpa; lower case, no trailing dot).
func reverseAddr(n string) (netip.Addr, bool) {
	var labels []string
	var v6 bool
	switch {
	case strings.HasSuffix(n, ".in-addr.arpa"):
		labels = strings.Split(strings.TrimSuffix(n, ".in-addr.arpa"), ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
	case strings.HasSuffix(n, ".ip6.arpa"):
		labels = strings.Split(strings.TrimSuffix(n, ".ip6.arpa"), ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		v6 = true
	default:
		return netip.Addr{}, false
	}
	var s strings.Builder
	for i := len(labels) - 1; i >= 0; i-- {
		s.WriteString(labels[i])
		switch {
		case !v6 && i > 0:
			s.WriteByte('.')
		case v6 && i > 0 && i%4 == 0:
			s.WriteByte(':')
		}
	}
	a, err := netip.ParseAddr(s.String())
	if err != nil || a.Is4() == v6 {
		return netip.Addr{}, false
	}
	return a, true
}
