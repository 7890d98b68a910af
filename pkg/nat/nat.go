// Package nat manages the nftables tables a gtun daemon owns: masquerade of
// the tunnel pool into the local network, forward accepts for tunnel
// traffic, and TCP MSS clamping. The table of one name exists once per
// family: "ip" always, "ip6" when the daemon carries IPv6 (the rules match
// and rewrite addresses of their family only). It talks nftables netlink directly
// (google/nftables); nothing is exec'd.
//
// The daemon owns the whole table: Ensure rebuilds it from scratch in one
// atomic batch, so there is never a moment with a half-built rule set, and
// operators' own tables are never touched. Rebuilding the table does not
// flush conntrack, so established (and already masqueraded) flows survive a
// reload.
package nat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Spec describes the tables Ensure builds.
type Spec struct {
	// Table is the nftables table name, e.g. "gtund": family ip, and
	// family ip6 as well with IPv6 (or any IPv6 entry below).
	Table string
	// Tun is the tunnel device name, e.g. "gtund0".
	Tun string
	// Masquerade lists source prefixes (the tunnel pool) masqueraded when
	// leaving through any interface other than Tun, each in the table of
	// its family.
	Masquerade []netip.Prefix
	// SNAT rewrites the source of packets leaving through Tun, by
	// destination: gtun's gateway mode, where traffic forwarded for other
	// hosts must leave with the tunnel address of the server whose routes
	// it takes (masquerade would pick one address of the device for all).
	SNAT []SNAT
	// Netmap maps destinations of packets arriving from Tun 1:1 from a
	// virtual prefix to a real one (gtund's `map`), keeping the host bits;
	// conntrack maps the replies back. For IPv6 this is NPTv6's prefix
	// for a prefix, done by conntrack (stateful, not RFC 6296's checksum-
	// neutral stateless rewrite).
	Netmap []Netmap
	// ClampMSS clamps the MSS of forwarded TCP SYNs in and out of Tun to
	// the route's path MTU, so peers behind the tunnel don't send segments
	// that only fit a full-size link.
	ClampMSS bool
	// IPv6 builds the ip6 table (forward accepts, MSS clamp) even with no
	// IPv6 entry above: IPv6 goes through the tunnel.
	IPv6 bool
	// NetNS is an open file descriptor of the network namespace to work
	// in; 0 means the caller's current namespace.
	NetNS int
}

// SNAT is one `oifname <tun> ip daddr <Dst> snat ip to <To>` rule (ip6
// for IPv6: Dst and To are of one family).
type SNAT struct {
	Dst netip.Prefix
	To  netip.Addr
}

// Netmap is one `iifname <tun> ip daddr <Virtual> dnat ip prefix to <Real>`
// rule (the kernel's NF_NAT_RANGE_NETMAP): Virtual and Real have the same
// length, and an address keeps its host bits.
type Netmap struct {
	Virtual, Real netip.Prefix
}

// ifnameSize is IFNAMSIZ: nftables compares interface names as 16 bytes,
// NUL padded, which is what makes it an exact match rather than a prefix.
const ifnameSize = 16

// Ensure makes the table exactly what s describes. It is idempotent: in one
// netlink batch it deletes the table if it exists and creates it afresh with
//
//	chain prerouting { type nat hook prerouting priority dstnat  (only with Netmap)
//	    iifname <tun> ip daddr <virtual> dnat ip prefix to <real>   (per Netmap)
//	}
//	chain postrouting { type nat hook postrouting priority srcnat
//	    ip saddr <pool> oifname != <tun> masquerade        (per pool prefix)
//	    oifname <tun> ip daddr <dst> snat ip to <addr>     (per SNAT)
//	}
//	chain forward { type filter hook forward priority filter; policy accept
//	    iifname <tun> tcp flags syn tcp option maxseg size set rt mtu   (ClampMSS)
//	    oifname <tun> tcp flags syn tcp option maxseg size set rt mtu   (ClampMSS)
//	    iifname <tun> accept
//	    oifname <tun> ct state established,related accept
//	}
//
// The clamp rules come before the accepts because an accept ends evaluation
// of the chain.
func Ensure(s Spec) error {
	if err := s.validate(); err != nil {
		return err
	}
	c, err := conn(s.NetNS)
	if err != nil {
		return err
	}
	v4, v6 := s.split()
	addFamilyTable(c, v4, ipv4)
	t6 := &nftables.Table{Name: s.Table, Family: nftables.TableFamilyIPv6}
	if v6 != nil {
		addFamilyTable(c, *v6, ipv6)
	} else {
		// Add-then-delete: an ip6 table of an earlier spec goes, or nothing.
		c.AddTable(t6)
		c.DelTable(t6)
	}

	// When an expression's module (nft_masq, nft_chain_nat, nft_rt,
	// nft_exthdr) is not loaded, the kernel loads it and replays the batch
	// itself; EAGAIN can still leak out if the load races, so retry once.
	err = c.Flush()
	if errors.Is(err, syscall.EAGAIN) {
		err = c.Flush()
	}
	if err != nil {
		return fmt.Errorf("ensure nftables table %s: %w%s", s.Table, err, hint(err))
	}
	return nil
}

// family is what the rules of one table family differ in.
type family struct {
	table              nftables.TableFamily
	proto              uint32 // NFPROTO_*, for nat expressions
	name               string // as nft names the family, for messages
	saddrOff, daddrOff uint32
	addrLen            uint32
}

var (
	ipv4 = family{nftables.TableFamilyIPv4, unix.NFPROTO_IPV4, "ip", 12, 16, 4}
	ipv6 = family{nftables.TableFamilyIPv6, unix.NFPROTO_IPV6, "ip6", 8, 24, 16}
)

// split sorts s's entries into the spec of the ip table and that of the
// ip6 table (nil when no ip6 table is wanted).
func (s Spec) split() (v4 Spec, v6 *Spec) {
	v4 = Spec{Table: s.Table, Tun: s.Tun, ClampMSS: s.ClampMSS, NetNS: s.NetNS}
	six := Spec{Table: s.Table, Tun: s.Tun, ClampMSS: s.ClampMSS, NetNS: s.NetNS, IPv6: true}
	for _, p := range s.Masquerade {
		if p.Addr().Is4() {
			v4.Masquerade = append(v4.Masquerade, p)
		} else {
			six.Masquerade = append(six.Masquerade, p)
		}
	}
	for _, sn := range s.SNAT {
		if sn.Dst.Addr().Is4() {
			v4.SNAT = append(v4.SNAT, sn)
		} else {
			six.SNAT = append(six.SNAT, sn)
		}
	}
	for _, m := range s.Netmap {
		if m.Virtual.Addr().Is4() {
			v4.Netmap = append(v4.Netmap, m)
		} else {
			six.Netmap = append(six.Netmap, m)
		}
	}
	if s.IPv6 || len(six.Masquerade)+len(six.SNAT)+len(six.Netmap) > 0 {
		return v4, &six
	}
	return v4, nil
}

// addFamilyTable queues, in c's batch, the replacement of s's table of
// family f (whose entries s holds, and no others):
//
//	chain prerouting { type nat hook prerouting priority dstnat  (only with Netmap)
//	    iifname <tun> ip daddr <virtual> dnat ip prefix to <real>   (per Netmap)
//	}
//	chain postrouting { type nat hook postrouting priority srcnat
//	    ip saddr <pool> oifname != <tun> masquerade        (per pool prefix)
//	    oifname <tun> ip daddr <dst> snat ip to <addr>     (per SNAT)
//	}
//	chain forward { type filter hook forward priority filter; policy accept
//	    iifname <tun> tcp flags syn tcp option maxseg size set rt mtu   (ClampMSS)
//	    oifname <tun> tcp flags syn tcp option maxseg size set rt mtu   (ClampMSS)
//	    iifname <tun> accept
//	    oifname <tun> ct state established,related accept
//	}
//
// (ip6 saddr, ip6 daddr and dnat/snat ip6 in the ip6 table). The clamp
// rules come before the accepts because an accept ends evaluation of the
// chain; rt mtu is the route's MTU less the headers of the packet's family
// (40 bytes for IPv4, 60 for IPv6).
func addFamilyTable(c *nftables.Conn, s Spec, f family) {
	t := &nftables.Table{Name: s.Table, Family: f.table}
	// Add-then-delete makes the delete succeed whether or not the table
	// existed, keeping the whole replacement in a single transaction.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	if len(s.Netmap) > 0 {
		pre := c.AddChain(&nftables.Chain{
			Name:     "prerouting",
			Table:    t,
			Type:     nftables.ChainTypeNAT,
			Hooknum:  nftables.ChainHookPrerouting,
			Priority: nftables.ChainPriorityNATDest,
		})
		for _, m := range s.Netmap {
			c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: netmapExprs(m, s.Tun, f)})
		}
	}

	post := c.AddChain(&nftables.Chain{
		Name:     "postrouting",
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	for _, p := range s.Masquerade {
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: masqueradeExprs(p.Masked(), s.Tun, f)})
	}
	for _, sn := range s.SNAT {
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: snatExprs(sn, s.Tun, f)})
	}

	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{
		Name:     "forward",
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &accept,
	})
	if s.ClampMSS {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: clampExprs(expr.MetaKeyIIFNAME, s.Tun)})
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: clampExprs(expr.MetaKeyOIFNAME, s.Tun)})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(s.Tun)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(s.Tun)},
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
}

// Remove deletes the table, of both families, in the current network
// namespace; nil if absent.
func Remove(table string) error { return RemoveIn(0, table) }

// RemoveIn deletes the table in the network namespace given by the open fd
// netns (0 = current); nil if absent.
func RemoveIn(netns int, table string) error {
	c, err := conn(netns)
	if err != nil {
		return err
	}
	for _, f := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		t := &nftables.Table{Name: table, Family: f}
		// Add-then-delete: no ENOENT when the table is already gone.
		c.AddTable(t)
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove nftables table %s: %w", table, err)
	}
	return nil
}

// Exists reports whether the table exists, of either family, in the
// current network namespace.
func Exists(table string) (bool, error) { return ExistsIn(0, table) }

// ExistsIn reports whether the table exists in the network namespace given
// by the open fd netns (0 = current).
func ExistsIn(netns int, table string) (bool, error) {
	c, err := conn(netns)
	if err != nil {
		return false, err
	}
	for _, f := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		tables, err := c.ListTablesOfFamily(f)
		if err != nil {
			return false, fmt.Errorf("list nftables tables: %w", err)
		}
		for _, t := range tables {
			if t.Name == table {
				return true, nil
			}
		}
	}
	return false, nil
}

const (
	ipForward  = "/proc/sys/net/ipv4/ip_forward"
	ip6Forward = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// EnableIPv4Forwarding sets net.ipv4.ip_forward to 1 in the caller's network
// namespace (sysctls under /proc/sys/net are per namespace, chosen by the
// thread that opens the file). It reports whether the value changed.
func EnableIPv4Forwarding() (changed bool, err error) { return enableSysctl(ipForward, "IPv4") }

// EnableIPv6Forwarding sets net.ipv6.conf.all.forwarding to 1 in the
// caller's network namespace, and reports whether the value changed. A
// host that forwards IPv6 no longer takes router advertisements on
// interfaces with accept_ra 1 (the docs say to set 2 where a host learns
// its IPv6 route that way).
func EnableIPv6Forwarding() (changed bool, err error) { return enableSysctl(ip6Forward, "IPv6") }

func enableSysctl(path, family string) (changed bool, err error) {
	cur, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	if strings.TrimSpace(string(cur)) == "1" {
		return false, nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return false, fmt.Errorf("enable %s forwarding: write %s: %w", family, path, err)
	}
	return true, nil
}

func (s Spec) validate() error {
	if s.Table == "" {
		return errors.New("nat: empty table name")
	}
	if s.Tun == "" || len(s.Tun) >= ifnameSize {
		return fmt.Errorf("nat: bad tunnel device name %q", s.Tun)
	}
	for _, p := range s.Masquerade {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return fmt.Errorf("nat: bad masquerade prefix %s", p)
		}
	}
	for _, sn := range s.SNAT {
		if !sn.Dst.IsValid() || !sn.To.IsValid() || sn.Dst.Addr().Is4() != sn.To.Is4() || sn.Dst.Addr().Is4In6() || sn.To.Is4In6() {
			return fmt.Errorf("nat: snat %s to %s: both must be of one family", sn.Dst, sn.To)
		}
	}
	for _, m := range s.Netmap {
		if !m.Virtual.IsValid() || !m.Real.IsValid() || m.Virtual.Addr().Is4() != m.Real.Addr().Is4() || m.Virtual.Addr().Is4In6() || m.Real.Addr().Is4In6() {
			return fmt.Errorf("nat: map %s to %s: both must be of one family", m.Virtual, m.Real)
		}
		if m.Virtual.Bits() == 0 {
			return fmt.Errorf("nat: map %s to %s: a /0 cannot be mapped", m.Virtual, m.Real)
		}
		if m.Virtual.Bits() != m.Real.Bits() {
			return fmt.Errorf("nat: map %s to %s: prefixes of different lengths", m.Virtual, m.Real)
		}
	}
	return nil
}

func conn(netns int) (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if netns > 0 {
		opts = append(opts, nftables.WithNetNSFd(netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink connection: %w", err)
	}
	return c, nil
}

// masqueradeExprs is `ip saddr <p> oifname != <tun> masquerade` (ip6
// saddr in the ip6 table). IPv4 compares through a mask always, IPv6 as
// nft compiles it (addrMatch).
func masqueradeExprs(p netip.Prefix, tun string, f family) []expr.Any {
	var out []expr.Any
	if f == ipv4 {
		addr := p.Addr().As4()
		mask := netipMask(p.Bits(), 4)
		out = []expr.Any{
			// ip saddr: 4 bytes at offset 12 of the IPv4 header.
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
		}
	} else {
		out = addrMatch(p, f.saddrOff, f)
	}
	return append(out,
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(tun)},
		&expr.Masq{},
	)
}

// snatExprs is `oifname <tun> ip daddr <dst> snat ip to <to>` (ip6 in the
// ip6 table).
func snatExprs(sn SNAT, tun string, f family) []expr.Any {
	dst := sn.Dst.Masked()
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(tun)},
	}
	if f == ipv4 {
		addr, mask, to := dst.Addr().As4(), netipMask(dst.Bits(), 4), sn.To.As4()
		return append(out,
			// ip daddr: 4 bytes at offset 16 of the IPv4 header.
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
			&expr.Immediate{Register: 1, Data: to[:]},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		)
	}
	to := sn.To.As16()
	out = append(out, addrMatch(dst, f.daddrOff, f)...)
	return append(out,
		&expr.Immediate{Register: 1, Data: to[:]},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV6, RegAddrMin: 1, RegAddrMax: 1},
	)
}

// netmapExprs is `iifname <tun> ip daddr <virtual> dnat ip prefix to
// <real>` (ip6 in the ip6 table), in the bytecode nft generates for it:
//
//	meta load iifname; cmp eq <tun>
//	payload load <n>b @ network header + <daddr> [; bitwise & <mask>]; cmp eq <virtual>
//	immediate reg 1 <real network>; immediate reg 2 <real last address>
//	nat dnat ip addr_min reg 1 addr_max reg 2 flags NETMAP
//
// The kernel keeps the host bits of the destination and takes the network
// bits from the range (nf_nat_ipv4_manip / nf_nat_ipv6_manip with
// NF_NAT_RANGE_NETMAP): for IPv6, NPTv6's prefix for a prefix.
func netmapExprs(m Netmap, tun string, f family) []expr.Any {
	virt, real := m.Virtual.Masked(), m.Real.Masked()
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(tun)},
	}
	out = append(out, addrMatch(virt, f.daddrOff, f)...)
	first, last := real.Addr().AsSlice(), lastAddr(real).AsSlice()
	return append(out,
		&expr.Immediate{Register: 1, Data: first},
		&expr.Immediate{Register: 2, Data: last},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: f.proto, RegAddrMin: 1, RegAddrMax: 2, Prefix: true},
	)
}

// addrMatch is `ip daddr <p>` (or saddr, by the header offset off) as nft
// compiles it: whole bytes are compared directly, other lengths through a
// mask over the full address.
func addrMatch(p netip.Prefix, off uint32, f family) []expr.Any {
	a := p.Addr().AsSlice()
	if p.Bits()%8 == 0 {
		n := uint32(p.Bits() / 8)
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:n]},
		}
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.addrLen},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: f.addrLen, Mask: netipMask(p.Bits(), int(f.addrLen)), Xor: make([]byte, f.addrLen)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a},
	}
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	mask := netipMask(p.Bits(), len(a))
	for i := range a {
		a[i] |= ^mask[i]
	}
	out, _ := netip.AddrFromSlice(a)
	return out
}

// clampExprs is `<iif|oif>name <tun> tcp flags syn tcp option maxseg size
// set rt mtu`, matching the bytecode nft generates for it:
//
//	meta load l4proto; cmp eq 6
//	payload load 1b @ transport header + 13; bitwise & 0x02; cmp neq 0
//	rt load tcpmss => reg 1
//	byteorder reg 1 = hton(reg 1, 2, 2)
//	exthdr write tcpopt reg 1 => 2b @ 2 + 2
//
// The rt value is in host order; without the byteorder step the kernel
// would write a byte-swapped MSS into the option.
func clampExprs(dir expr.MetaKey, tun string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: dir, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(tun)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0x00}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x00}},
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		&expr.Exthdr{
			SourceRegister: 1,
			Type:           2, // TCPOPT_MAXSEG
			Offset:         2,
			Len:            2,
			Op:             expr.ExthdrOpTcpopt,
		},
	}
}

func ifname(n string) []byte {
	b := make([]byte, ifnameSize)
	copy(b, n)
	return b
}

func netipMask(bits, n int) []byte {
	m := make([]byte, n)
	for i := range n {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return m
}

// hint adds a likely cause to errors that otherwise read as a bare errno.
func hint(err error) string {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EOPNOTSUPP):
		return " (kernel lacks an nftables feature: need nf_tables, nft_chain_nat, nft_masq, nft_ct, nft_rt, nft_exthdr)"
	case errors.Is(err, syscall.EPERM):
		return " (needs CAP_NET_ADMIN)"
	}
	return ""
}

// Intact reports whether the tables Ensure built for s are still in place
// in the current network namespace: each table, its chains and at least
// the rules Ensure put in each. Someone deleting a table (`nft delete
// table ip gtund`), a chain, or flushing a chain makes it false; the owner
// then calls Ensure again.
func Intact(s Spec) (bool, error) {
	c, err := conn(s.NetNS)
	if err != nil {
		return false, err
	}
	v4, v6 := s.split()
	ok, err := intactFamily(c, v4, ipv4)
	if err != nil || !ok || v6 == nil {
		return ok, err
	}
	return intactFamily(c, *v6, ipv6)
}

func intactFamily(c *nftables.Conn, s Spec, f family) (bool, error) {
	chains, err := c.ListChainsOfTableFamily(f.table)
	if err != nil {
		return false, fmt.Errorf("list nftables chains: %w", err)
	}
	want := map[string]int{"postrouting": len(s.Masquerade) + len(s.SNAT), "forward": 2}
	if s.ClampMSS {
		want["forward"] += 2
	}
	if len(s.Netmap) > 0 {
		want["prerouting"] = len(s.Netmap)
	}
	found := 0
	for _, ch := range chains {
		n, ok := want[ch.Name]
		if ch.Table.Name != s.Table || !ok {
			continue
		}
		found++
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return false, fmt.Errorf("list rules of %s %s %s: %w", f.name, s.Table, ch.Name, err)
		}
		if len(rules) < n {
			return false, nil
		}
	}
	return found == len(want), nil
}

// WatchDeletions calls deleted each time nftables reports a table, chain
// or rule deleted in the current network namespace (by anyone: filter in
// deleted, e.g. with Intact), until ctx ends. It returns an error if the
// subscription fails or breaks.
func WatchDeletions(ctx context.Context, deleted func()) error {
	ch, done := make(chan struct{}), make(chan struct{})
	var broke error
	if err := Deletions(ch, done, func(err error) { broke = err }); err != nil {
		return err
	}
	defer func() {
		close(done)
		for range ch {
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-ch:
			if !ok {
				return broke // set before ch is closed
			}
			deleted()
		}
	}
}

// Deletions subscribes to nftables deletions in the current network
// namespace in the shape of the netlink library's subscriptions, for
// nlwatch.NewTopic: a value on ch for each table, chain or rule deleted;
// when the subscription breaks, cb gets why and ch is closed; closing done
// ends it (ch is then closed too).
func Deletions(ch chan struct{}, done chan struct{}, cb func(error)) error {
	c, err := conn(0)
	if err != nil {
		return err
	}
	// Only the "any" monitor gets the generation messages the library
	// delivers events on; deletions are picked out here.
	m := nftables.NewMonitor(nftables.WithMonitorEventBuffer(64))
	events, err := c.AddMonitor(m)
	if err != nil {
		return fmt.Errorf("subscribe to nftables events: %w", err)
	}
	go func() {
		defer close(ch)
		defer func() {
			m.Close()
			for range events { // let the library's goroutines finish
			}
		}()
		for {
			select {
			case <-done:
				return
			case ev, ok := <-events:
				if !ok {
					cb(errors.New("nftables event subscription closed"))
					return
				}
				switch ev.Type {
				case nftables.MonitorEventTypeDelTable, nftables.MonitorEventTypeDelChain, nftables.MonitorEventTypeDelRule:
					select {
					case ch <- struct{}{}:
					case <-done:
						return
					}
				case nftables.MonitorEventTypeOOB:
					cb(fmt.Errorf("nftables event subscription: %v", ev.Error))
					return
				}
			}
		}
	}()
	return nil
}
