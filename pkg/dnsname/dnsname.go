// Package dnsname knows the DNS names gtun handles: their syntax, and which
// domains a client lets a server resolve (split DNS). A server that could
// have any domain routed to it could answer for public names (push "com")
// or for the client's own network; a client takes only what its policy
// names.
package dnsname

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Normalize is n as gtun compares names: lower case, no surrounding space,
// no trailing dot.
func Normalize(n string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(n), "."))
}

// Valid reports whether n (normalized) is a domain name of letters, digits,
// '-' and '_' labels, as cluster DNS domains are.
func Valid(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Under reports whether n is zone or a name below it (both normalized).
func Under(n, zone string) bool {
	return n == zone || strings.HasSuffix(n, "."+zone)
}

// ReverseZone returns the addresses a reverse-lookup zone covers:
// "244.10.in-addr.arpa" is 10.244.0.0/16, "8.b.d.0.1.0.0.2.ip6.arpa" is
// 2001:db8::/32. Only whole octets (IPv4) and nibbles (IPv6) are zones;
// classless delegations ("0/26.1.168.192.in-addr.arpa") are not.
func ReverseZone(n string) (netip.Prefix, bool) {
	if rest, ok := strings.CutSuffix(n, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) > 4 {
			return netip.Prefix{}, false
		}
		var a [4]byte
		for i, l := range labels {
			v, err := strconv.Atoi(l)
			if err != nil || v < 0 || v > 255 || strconv.Itoa(v) != l {
				return netip.Prefix{}, false
			}
			a[len(labels)-1-i] = byte(v)
		}
		return netip.PrefixFrom(netip.AddrFrom4(a), 8*len(labels)), true
	}
	if rest, ok := strings.CutSuffix(n, ".ip6.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) > 32 {
			return netip.Prefix{}, false
		}
		var a [16]byte
		for i, l := range labels {
			v, err := strconv.ParseUint(l, 16, 8)
			if err != nil || len(l) != 1 {
				return netip.Prefix{}, false
			}
			nib := len(labels) - 1 - i // the first label is the last nibble
			a[nib/2] |= byte(v) << (4 * (1 - nib%2))
		}
		return netip.PrefixFrom(netip.AddrFrom16(a), 4*len(labels)), true
	}
	return netip.Prefix{}, false
}

// defaultZones are the suffixes a client accepts names under, but not the
// suffixes themselves, when its config names none: special-use names that
// no public DNS delegates. "local" holds Kubernetes' cluster.local;
// "internal" is left out although it is reserved too: clouds resolve the
// VM's own names there (metadata.google.internal, ec2.internal), and a
// server must not capture those.
var defaultZones = []string{"local", "home.arpa"}

// Policy decides which pushed domains a client applies for one server.
type Policy struct {
	// Accept lists the domains the client applies at or under each (e.g.
	// "cluster.local", "corp.example"). nil: the default policy, names
	// under local and home.arpa and the reverse zones of Routes. Empty,
	// not nil: none.
	Accept []string
	// Routes are the server's routes as the client accepted them.
	Routes []netip.Prefix
}

// Check returns nil if the client applies the pushed domain d
// (normalized), or an error that says why not.
func (p Policy) Check(d string) error {
	if !Valid(d) {
		return errors.New("not a valid domain name")
	}
	if p.Accept != nil {
		for _, z := range p.Accept {
			if Under(d, z) {
				return nil
			}
		}
		if len(p.Accept) == 0 {
			return errors.New("dns_domains is empty: no domain is taken from this server")
		}
		return fmt.Errorf("not under dns_domains %v", p.Accept)
	}
	for _, z := range defaultZones {
		if d != z && Under(d, z) {
			return nil
		}
	}
	if zone, ok := ReverseZone(d); ok {
		for _, r := range p.Routes {
			if r.Bits() <= zone.Bits() && r.Contains(zone.Addr()) {
				return nil
			}
		}
		return fmt.Errorf("reverse zone of %s, not within the server's routes", zone)
	}
	return errors.New("could capture public names: the default takes names under local (e.g. cluster.local) and home.arpa " +
		"and reverse zones of the server's routes; dns_domains takes others")
}

// ReverseZoneName is the reverse-lookup zone of p, the inverse of
// ReverseZone: 10.244.0.0/16 is "244.10.in-addr.arpa". ok is false when p
// is not on a whole octet (IPv4) or nibble (IPv6).
func ReverseZoneName(p netip.Prefix) (string, bool) {
	p = p.Masked()
	if p.Addr().Is4() {
		if p.Bits()%8 != 0 {
			return "", false
		}
		a := p.Addr().As4()
		var labels []string
		for i := p.Bits()/8 - 1; i >= 0; i-- {
			labels = append(labels, strconv.Itoa(int(a[i])))
		}
		return strings.Join(append(labels, "in-addr", "arpa"), "."), true
	}
	if p.Bits()%4 != 0 {
		return "", false
	}
	a := p.Addr().As16()
	var labels []string
	for i := p.Bits()/4 - 1; i >= 0; i-- {
		labels = append(labels, strconv.FormatUint(uint64(a[i/2]>>(4*(1-i%2))&0xf), 16))
	}
	return strings.Join(append(labels, "ip6", "arpa"), "."), true
}
