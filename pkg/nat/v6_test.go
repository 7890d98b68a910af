package nat

import (
	"net/netip"
	"strings"
	"testing"
)

// testSpec6 is testSpec with IPv6: pool6 masqueraded (a /64 and a
// /61, which nft matches through a mask), an IPv6 SNAT and two IPv6
// prefix maps, besides the IPv4 entries.
func testSpec6(ns *testNS) Spec {
	s := testSpec(ns)
	s.Masquerade = append(s.Masquerade, netip.MustParsePrefix("fd64:240::/64"), netip.MustParsePrefix("fd64:248::/61"))
	s.SNAT = []SNAT{{Dst: netip.MustParsePrefix("fd00:10:244::/56"), To: netip.MustParseAddr("fd64:240::2")}}
	s.Netmap = []Netmap{
		{Virtual: netip.MustParsePrefix("fd00:100::/64"), Real: netip.MustParsePrefix("fd00:10:244::/64")},
		{Virtual: netip.MustParsePrefix("fd00:101::/60"), Real: netip.MustParsePrefix("fd00:10:248::/60")},
	}
	return s
}

// The ip6 table: the same listing and bytecode as nft makes of the same
// rules (ip6 saddr/daddr, snat ip6, dnat ip6 prefix to: NPTv6-style), the
// IPv4 entries staying in the ip table alone.
func TestEnsureIPv6Rules(t *testing.T) {
	ns := newNS(t)
	s := testSpec6(ns)
	if err := Ensure(s); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	got := ns.nft("list", "table", "ip6", "gtund")
	t.Logf("nft list table ip6 gtund:\n%s", got)
	ns.nftStdin(`table ip6 ref {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "gtund0" ip6 daddr fd00:100::/64 dnat ip6 prefix to fd00:10:244::/64
		iifname "gtund0" ip6 daddr fd00:101::/60 dnat ip6 prefix to fd00:10:248::/60
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip6 saddr fd64:240::/64 oifname != "gtund0" masquerade
		ip6 saddr fd64:248::/61 oifname != "gtund0" masquerade
		oifname "gtund0" ip6 daddr fd00:10:244::/56 snat ip6 to fd64:240::2
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "gtund0" tcp flags syn tcp option maxseg size set rt mtu
		oifname "gtund0" tcp flags syn tcp option maxseg size set rt mtu
		iifname "gtund0" accept
		oifname "gtund0" ct state established,related accept
	}
}
`)
	ref := ns.nft("list", "table", "ip6", "ref")
	if strings.Replace(ref, "table ip6 ref", "table ip6 gtund", 1) != got {
		t.Errorf("listing differs from nft's own:\nours:\n%s\nnft:\n%s", got, ref)
	}
	for _, chain := range []string{"prerouting", "postrouting", "forward"} {
		oursBC := bytecode(ns.nft("--debug=netlink", "list", "chain", "ip6", "gtund", chain))
		refBC := bytecode(ns.nft("--debug=netlink", "list", "chain", "ip6", "ref", chain))
		if oursBC == "" || oursBC != refBC {
			t.Errorf("%s chain bytecode differs:\nours:\n%s\nnft:\n%s", chain, oursBC, refBC)
		}
	}
	// The ip table holds the IPv4 entries and no IPv6 one.
	v4 := ns.nft("list", "table", "ip", "gtund")
	if !strings.Contains(v4, "ip saddr 100.64.240.0/24") || strings.Contains(v4, "fd") || strings.Contains(v4, "prerouting") {
		t.Errorf("ip table:\n%s", v4)
	}
	if ok, err := Intact(s); err != nil || !ok {
		t.Errorf("Intact = %v, %v; want true", ok, err)
	}
	ns.nft("flush", "chain", "ip6", "gtund", "postrouting")
	if ok, err := Intact(s); err != nil || ok {
		t.Errorf("Intact after flushing the ip6 postrouting = %v, %v; want false", ok, err)
	}

	// A spec without IPv6 takes the ip6 table away; IPv6 alone brings it
	// back with the forward chain only.
	s4 := testSpec(ns)
	if err := Ensure(s4); err != nil {
		t.Fatal(err)
	}
	if out := ns.nft("list", "tables"); strings.Contains(out, "ip6 gtund") {
		t.Errorf("ip6 table left by an IPv4-only spec: %s", out)
	}
	s4.IPv6 = true
	if err := Ensure(s4); err != nil {
		t.Fatal(err)
	}
	if got := ns.nft("list", "table", "ip6", "gtund"); !strings.Contains(got, "maxseg size set rt mtu") || strings.Contains(got, "masquerade") {
		t.Errorf("ip6 table of IPv6 without entries:\n%s", got)
	}

	// Remove takes both families.
	if err := RemoveIn(ns.fd(), "gtund"); err != nil {
		t.Fatal(err)
	}
	if out := ns.nft("list", "tables"); strings.Contains(out, "gtund") {
		t.Errorf("tables left after Remove: %s", out)
	}
	if ok, err := ExistsIn(ns.fd(), "gtund"); err != nil || ok {
		t.Errorf("ExistsIn after Remove = %v, %v", ok, err)
	}
}
