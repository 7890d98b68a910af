package nat

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// routedNS6 is routedNS for IPv6: cli (fd64:240::2) routes through rtr
// (gtund0 fd64:240::1, wan0 fd00:10::2) to srv (fd00:10::3), DAD off.
func routedNS6(t *testing.T) (cli, rtr, srv *testNS) {
	t.Helper()
	cli, rtr, srv = newNS(t), newNS(t), newNS(t)
	ipCmd(t, "-n", rtr.name, "link", "add", "gtund0", "type", "veth", "peer", "name", "eth0", "netns", cli.name)
	ipCmd(t, "-n", rtr.name, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", srv.name)
	ipCmd(t, "-n", rtr.name, "addr", "add", "fd64:240::1/64", "dev", "gtund0", "nodad")
	ipCmd(t, "-n", rtr.name, "addr", "add", "fd00:10::2/64", "dev", "wan0", "nodad")
	ipCmd(t, "-n", cli.name, "addr", "add", "fd64:240::2/64", "dev", "eth0", "nodad")
	ipCmd(t, "-n", srv.name, "addr", "add", "fd00:10::3/64", "dev", "eth0", "nodad")
	for _, n := range []string{"gtund0", "wan0", "lo"} {
		ipCmd(t, "-n", rtr.name, "link", "set", n, "up")
	}
	for _, ns := range []*testNS{cli, srv} {
		ipCmd(t, "-n", ns.name, "link", "set", "eth0", "up")
		ipCmd(t, "-n", ns.name, "link", "set", "lo", "up")
	}
	ipCmd(t, "-n", cli.name, "-6", "route", "add", "default", "via", "fd64:240::1")
	if out, err := exec.Command("ip", "netns", "exec", rtr.name, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding").CombinedOutput(); err != nil {
		t.Fatalf("enable forwarding: %v: %s", err, out)
	}
	return cli, rtr, srv
}

// In the kernel's data path: cli dials srv's virtual address
// (fd00:100::3, mapped to fd00:10::3 by a prefix map), rtr masquerades it
// (srv sees rtr's fd00:10::2) and clamps the MSS to the route's MTU less
// IPv6's 60 bytes of headers; a rebuilt table keeps the flow.
func TestForwardIPv6(t *testing.T) {
	cli, rtr, srv := routedNS6(t)
	ipCmd(t, "-n", rtr.name, "-6", "route", "add", "fd00:10::3/128", "dev", "wan0", "mtu", "1300")
	spec := Spec{
		Table: "gtund", Tun: "gtund0", ClampMSS: true, NetNS: rtr.fd(),
		Masquerade: []netip.Prefix{netip.MustParsePrefix("100.64.240.0/24"), netip.MustParsePrefix("fd64:240::/64")},
		Netmap:     []Netmap{{Virtual: netip.MustParsePrefix("fd00:100::/64"), Real: netip.MustParsePrefix("fd00:10::/64")}},
	}
	if err := Ensure(spec); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	var ln net.Listener
	inNS(t, srv.h, func() {
		var err error
		if ln, err = net.Listen("tcp6", "[fd00:10::3]:0"); err != nil {
			t.Errorf("listen: %v", err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	defer ln.Close()
	var c net.Conn
	inNS(t, cli.h, func() {
		var err error
		if c, err = net.DialTimeout("tcp6", net.JoinHostPort("fd00:100::3", fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)), 3*time.Second); err != nil {
			t.Errorf("dial the virtual address: %v", err)
		}
	})
	if c == nil {
		t.FailNow()
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if got := sc.RemoteAddr().(*net.TCPAddr).IP.String(); got != "fd00:10::2" {
		t.Errorf("server saw source %s, want masqueraded fd00:10::2", got)
	}
	if got := c.RemoteAddr().(*net.TCPAddr).IP.String(); got != "fd00:100::3" {
		t.Errorf("client sees %s, want the virtual fd00:100::3", got)
	}
	raw, err := sc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mss int
	var serr error
	if err := raw.Control(func(fd uintptr) { mss, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) }); err != nil || serr != nil {
		t.Fatalf("TCP_MAXSEG: %v %v", err, serr)
	}
	// 1300 - 60 = 1240 advertised, less the TCP options in use; unclamped
	// it would be 1440 less options.
	t.Logf("server-side MSS %d", mss)
	if mss > 1240 || mss < 1200 {
		t.Errorf("server-side MSS %d, want 1200..1240 (clamped to rt mtu 1300 less 60)", mss)
	}
	if err := Ensure(spec); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = sc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read after re-Ensure: %q %v", buf, err)
	}
}
