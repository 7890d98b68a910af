package nat

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/gtun/gtun/internal/testnet"
)

// Each test runs in its own named network namespace made with `ip netns add`;
// the package is pointed at it through Spec.NetNS / the *In functions (an
// open fd), so test goroutines never change namespace themselves, except the
// sysctl test, which must (see there).

var nsSeq atomic.Int32

type testNS struct {
	t    *testing.T
	name string
	h    netns.NsHandle
}

func newNS(t *testing.T) *testNS {
	t.Helper()
	testnet.Require(t) // root, network namespaces, ip and nft
	name := fmt.Sprintf("gtunnat-%d-%d", os.Getpid(), nsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		testnet.Missing(t, fmt.Sprintf("network namespace %s: %v: %s", name, err, out))
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		h.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v: %s", name, err, out)
		}
	})
	return &testNS{t: t, name: name, h: h}
}

func (n *testNS) fd() int { return int(n.h) }

// nft runs nft inside the namespace.
func (n *testNS) nft(args ...string) string {
	n.t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (n *testNS) nftStdin(script string) {
	n.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("nft -f: %v: %s\n%s", err, out, script)
	}
}

func testSpec(ns *testNS) Spec {
	return Spec{
		Table:      "gtund",
		Tun:        "gtund0",
		Masquerade: []netip.Prefix{netip.MustParsePrefix("100.64.240.0/24")},
		ClampMSS:   true,
		NetNS:      ns.fd(),
	}
}

func TestEnsureRules(t *testing.T) {
	ns := newNS(t)
	s := testSpec(ns)
	if err := Ensure(s); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	got := ns.nft("list", "table", "ip", "gtund")
	t.Logf("nft list table ip gtund:\n%s", got)
	for _, want := range []string{
		"type nat hook postrouting priority srcnat; policy accept;",
		`ip saddr 100.64.240.0/24 oifname != "gtund0" masquerade`,
		"type filter hook forward priority filter; policy accept;",
		`iifname "gtund0" tcp flags syn tcp option maxseg size set rt mtu`,
		`oifname "gtund0" tcp flags syn tcp option maxseg size set rt mtu`,
		`iifname "gtund0" accept`,
		`oifname "gtund0" ct state established,related accept`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q", want)
		}
	}
	// Clamp rules must come before the accepts, or accepted SYNs escape.
	if strings.LastIndex(got, "maxseg") > strings.Index(got, "accept\n") {
		t.Errorf("MSS clamp rules not before the accept rules")
	}

	// Compare with what nft itself makes of the same rules: the listing
	// must match, and the MSS clamp bytecode (byteorder!) must be identical.
	ns.nftStdin(`table ip ref {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 100.64.240.0/24 oifname != "gtund0" masquerade
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
	ref := ns.nft("list", "table", "ip", "ref")
	if strings.Replace(ref, "table ip ref", "table ip gtund", 1) != got {
		t.Errorf("listing differs from nft's own:\nours:\n%s\nnft:\n%s", got, ref)
	}
	oursBC := bytecode(ns.nft("--debug=netlink", "list", "chain", "ip", "gtund", "forward"))
	refBC := bytecode(ns.nft("--debug=netlink", "list", "chain", "ip", "ref", "forward"))
	if oursBC == "" || oursBC != refBC {
		t.Errorf("forward chain bytecode differs:\nours:\n%s\nnft:\n%s", oursBC, refBC)
	}
	if !strings.Contains(oursBC, "byteorder reg 1 = hton(reg 1, 2, 2)") {
		t.Errorf("no hton before the MSS write:\n%s", oursBC)
	}
}

// bytecode keeps the "[ ... ]" expression lines of nft --debug=netlink.
func bytecode(s string) string {
	var b strings.Builder
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "[") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// gtun's gateway table: forwarded traffic leaves through the TUN with the
// tunnel address of the server whose route it takes.
func TestEnsureSNAT(t *testing.T) {
	ns := newNS(t)
	s := Spec{Table: "gtun-gtun0", Tun: "gtun0", ClampMSS: true, NetNS: ns.fd(), SNAT: []SNAT{
		{Dst: netip.MustParsePrefix("10.244.0.0/16"), To: netip.MustParseAddr("100.64.240.2")},
		{Dst: netip.MustParsePrefix("10.96.0.0/12"), To: netip.MustParseAddr("100.64.241.7")},
	}}
	if err := Ensure(s); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	got := ns.nft("list", "chain", "ip", "gtun-gtun0", "postrouting")
	ns.nftStdin(`table ip ref {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "gtun0" ip daddr 10.244.0.0/16 snat ip to 100.64.240.2
		oifname "gtun0" ip daddr 10.96.0.0/12 snat ip to 100.64.241.7
	}
}
`)
	ref := ns.nft("list", "chain", "ip", "ref", "postrouting")
	if strings.Replace(ref, "table ip ref", "table ip gtun-gtun0", 1) != got {
		t.Errorf("listing differs from nft's own:\nours:\n%s\nnft:\n%s", got, ref)
	}
	s.SNAT = []SNAT{{Dst: netip.MustParsePrefix("fd00::/64"), To: netip.MustParseAddr("100.64.240.2")}}
	if err := Ensure(s); err == nil {
		t.Error("an IPv6 SNAT was accepted")
	}
}

func TestEnsureIdempotent(t *testing.T) {
	ns := newNS(t)
	s := testSpec(ns)
	s.Masquerade = append(s.Masquerade, netip.MustParsePrefix("100.64.241.7/24"))
	if err := Ensure(s); err != nil {
		t.Fatalf("first Ensure: %v", err)
	}
	first := ns.nft("list", "table", "ip", "gtund")
	// Someone adds a stray rule; the next Ensure must drop it.
	ns.nft("add", "rule", "ip", "gtund", "forward", "drop")
	if err := Ensure(s); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	second := ns.nft("list", "table", "ip", "gtund")
	if first != second {
		t.Errorf("Ensure not idempotent:\nfirst:\n%s\nsecond:\n%s", first, second)
	}
	if !strings.Contains(second, "ip saddr 100.64.241.0/24") {
		t.Errorf("second pool prefix missing or not masked:\n%s", second)
	}
	if n := strings.Count(second, "masquerade"); n != 2 {
		t.Errorf("%d masquerade rules, want 2", n)
	}
	// Without clamping, no maxseg rules.
	s.ClampMSS = false
	if err := Ensure(s); err != nil {
		t.Fatalf("Ensure without clamp: %v", err)
	}
	if out := ns.nft("list", "table", "ip", "gtund"); strings.Contains(out, "maxseg") {
		t.Errorf("clamp rules present with ClampMSS=false:\n%s", out)
	}
	// Ensure leaves other tables alone.
	ns.nft("add", "table", "ip", "operator")
	if err := Ensure(s); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if out := ns.nft("list", "tables"); !strings.Contains(out, "table ip operator") {
		t.Errorf("operator table gone: %s", out)
	}
}

func TestExistsRemove(t *testing.T) {
	ns := newNS(t)
	ok, err := ExistsIn(ns.fd(), "gtund")
	if err != nil || ok {
		t.Fatalf("ExistsIn before Ensure = %v, %v; want false, nil", ok, err)
	}
	if err := RemoveIn(ns.fd(), "gtund"); err != nil {
		t.Errorf("RemoveIn of absent table: %v", err)
	}
	if err := Ensure(testSpec(ns)); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	ok, err = ExistsIn(ns.fd(), "gtund")
	if err != nil || !ok {
		t.Fatalf("ExistsIn after Ensure = %v, %v; want true, nil", ok, err)
	}
	if err := RemoveIn(ns.fd(), "gtund"); err != nil {
		t.Fatalf("RemoveIn: %v", err)
	}
	if out := ns.nft("list", "tables"); strings.Contains(out, "gtund") {
		t.Errorf("table still listed: %s", out)
	}
	ok, err = ExistsIn(ns.fd(), "gtund")
	if err != nil || ok {
		t.Fatalf("ExistsIn after Remove = %v, %v; want false, nil", ok, err)
	}
}

func TestSpecValidation(t *testing.T) {
	for _, s := range []Spec{
		{Tun: "gtund0"},
		{Table: "gtund"},
		{Table: "gtund", Tun: "a-name-that-is-too-long"},
		{Table: "gtund", Tun: "gtund0", Masquerade: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}},
		{Table: "gtund", Tun: "gtund0", SNAT: []SNAT{{Dst: netip.MustParsePrefix("fd00::/64"), To: netip.MustParseAddr("100.64.240.2")}}},
		{Table: "gtund", Tun: "gtund0", Netmap: []Netmap{{Virtual: netip.MustParsePrefix("fd00::/64"), Real: netip.MustParsePrefix("10.0.0.0/24")}}},
	} {
		if err := Ensure(s); err == nil {
			t.Errorf("Ensure(%+v) = nil, want error", s)
		}
	}
}

// The sysctl is per namespace and chosen by the thread that opens the file,
// so this test moves a locked OS thread into the namespace.
func TestEnableIPv4Forwarding(t *testing.T) {
	ns := newNS(t)
	read := func() string {
		out, err := exec.Command("ip", "netns", "exec", ns.name, "cat", "/proc/sys/net/ipv4/ip_forward").CombinedOutput()
		if err != nil {
			t.Fatalf("read ip_forward: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if v := read(); v != "0" {
		t.Fatalf("fresh netns ip_forward = %s, want 0", v)
	}
	type res struct {
		changed [2]bool
		err     error
	}
	done := make(chan res)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread if we cannot switch back: the thread then
		// dies with this goroutine instead of leaking the namespace.
		var r res
		defer func() { done <- r }()
		orig, err := netns.Get()
		if err != nil {
			r.err = err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns.h); err != nil {
			r.err = err
			return
		}
		for i := range r.changed {
			if r.changed[i], err = EnableIPv4Forwarding(); err != nil {
				r.err = err
				break
			}
		}
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("EnableIPv4Forwarding: %v", r.err)
	}
	if r.changed != [2]bool{true, false} {
		t.Errorf("changed = %v, want [true false]", r.changed)
	}
	if v := read(); v != "1" {
		t.Errorf("ip_forward = %s after enable", v)
	}
}

// inNS runs fn on an OS thread moved into ns; sockets created there stay in
// that namespace after the thread goes back.
func inNS(t *testing.T, ns netns.NsHandle, fn func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		fn()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in netns: %v", err)
	}
}

// routedNS builds cli (100.64.240.2) -> rtr [gtund0 100.64.240.1 | wan0
// 10.0.0.2, forwarding] -> srv (10.0.0.3); rtr's gtund0 is a veth standing
// in for the TUN device. srv has no route back to the pool.
func routedNS(t *testing.T) (cli, rtr, srv *testNS) {
	t.Helper()
	cli, rtr, srv = newNS(t), newNS(t), newNS(t)
	ipCmd(t, "-n", rtr.name, "link", "add", "gtund0", "type", "veth", "peer", "name", "eth0", "netns", cli.name)
	ipCmd(t, "-n", rtr.name, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", srv.name)
	ipCmd(t, "-n", rtr.name, "addr", "add", "100.64.240.1/24", "dev", "gtund0")
	ipCmd(t, "-n", rtr.name, "addr", "add", "10.0.0.2/24", "dev", "wan0")
	ipCmd(t, "-n", cli.name, "addr", "add", "100.64.240.2/24", "dev", "eth0")
	ipCmd(t, "-n", srv.name, "addr", "add", "10.0.0.3/24", "dev", "eth0")
	for _, n := range []string{"gtund0", "wan0", "lo"} {
		ipCmd(t, "-n", rtr.name, "link", "set", n, "up")
	}
	for _, ns := range []*testNS{cli, srv} {
		ipCmd(t, "-n", ns.name, "link", "set", "eth0", "up")
		ipCmd(t, "-n", ns.name, "link", "set", "lo", "up")
	}
	ipCmd(t, "-n", cli.name, "route", "add", "default", "via", "100.64.240.1")
	if out, err := exec.Command("ip", "netns", "exec", rtr.name, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward").CombinedOutput(); err != nil {
		t.Fatalf("enable forwarding: %v: %s", err, out)
	}
	return cli, rtr, srv
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// connectThrough opens a TCP connection from cli to a listener on srv's
// 10.0.0.3, dialling host (10.0.0.3 itself, or an address rtr maps to it) on
// the listener's port; what names the dial in a failure. Both ends are
// closed when the test ends.
func connectThrough(t *testing.T, cli, srv *testNS, host, what string) (client, server net.Conn) {
	t.Helper()
	var ln net.Listener
	inNS(t, srv.h, func() {
		var err error
		if ln, err = net.Listen("tcp4", "10.0.0.3:0"); err != nil {
			t.Errorf("listen: %v", err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	defer ln.Close()
	addr := net.JoinHostPort(host, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	inNS(t, cli.h, func() {
		var err error
		if client, err = net.DialTimeout("tcp4", addr, 3*time.Second); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	})
	if client == nil {
		t.FailNow()
	}
	t.Cleanup(func() { client.Close() })
	server, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// TestForwardMasqueradeClamp proves the rules in the kernel's data path:
// cli (100.64.240.2) -> rtr [gtund0 | wan0] -> srv (10.0.0.3). srv has no
// route back to the pool, so the connection only works masqueraded, and
// rtr's route to srv has mtu 1200, so the SYN's MSS must arrive clamped.
func TestForwardMasqueradeClamp(t *testing.T) {
	cli, rtr, srv := routedNS(t)
	ipCmd(t, "-n", rtr.name, "route", "add", "10.0.0.3/32", "dev", "wan0", "mtu", "1200")
	if err := Ensure(Spec{
		Table: "gtund", Tun: "gtund0", ClampMSS: true, NetNS: rtr.fd(),
		Masquerade: []netip.Prefix{netip.MustParsePrefix("100.64.240.0/24")},
	}); err != nil {
		t.Fatalf("Ensure: %v", err)
	}

	c, sc := connectThrough(t, cli, srv, "10.0.0.3", "dial through rtr")
	if got := sc.RemoteAddr().(*net.TCPAddr).IP.String(); got != "10.0.0.2" {
		t.Errorf("server saw source %s, want masqueraded 10.0.0.2", got)
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
	// 1200 - 40 = 1160 advertised; minus TCP options in use on the
	// connection. Unclamped it would be 1460 minus options.
	t.Logf("server-side MSS %d", mss)
	if mss > 1160 {
		t.Errorf("server-side MSS %d, want <= 1160 (clamped to rt mtu 1200)", mss)
	}

	// Rebuilding the table must not break the established, masqueraded
	// flow (conntrack is not flushed, the NAT binding survives).
	if err := Ensure(Spec{
		Table: "gtund", Tun: "gtund0", ClampMSS: true, NetNS: rtr.fd(),
		Masquerade: []netip.Prefix{netip.MustParsePrefix("100.64.240.0/24")},
	}); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write after re-Ensure: %v", err)
	}
	buf := make([]byte, 4)
	_ = sc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read after re-Ensure: %q %v", buf, err)
	}
}

var testNetmap = []Netmap{
	{Virtual: netip.MustParsePrefix("100.100.0.0/16"), Real: netip.MustParsePrefix("10.244.0.0/16")},
	{Virtual: netip.MustParsePrefix("100.112.0.0/12"), Real: netip.MustParsePrefix("10.96.0.0/12")},
	{Virtual: netip.MustParsePrefix("100.101.1.0/24"), Real: netip.MustParsePrefix("10.0.0.0/24")},
}

// The netmap rules: the same listing and bytecode as nft makes of
// `dnat ip prefix to`, in a prerouting chain that only exists with a map.
func TestEnsureNetmapRules(t *testing.T) {
	ns := newNS(t)
	s := testSpec(ns)
	if err := Ensure(s); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if got := ns.nft("list", "table", "ip", "gtund"); strings.Contains(got, "prerouting") {
		t.Errorf("prerouting chain without a map:\n%s", got)
	}
	s.Netmap = testNetmap
	if err := Ensure(s); err != nil {
		t.Fatalf("Ensure with netmap: %v", err)
	}
	got := ns.nft("list", "table", "ip", "gtund")
	t.Logf("nft list table ip gtund:\n%s", got)
	ns.nftStdin(`table ip ref {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "gtund0" ip daddr 100.100.0.0/16 dnat ip prefix to 10.244.0.0/16
		iifname "gtund0" ip daddr 100.112.0.0/12 dnat ip prefix to 10.96.0.0/12
		iifname "gtund0" ip daddr 100.101.1.0/24 dnat ip prefix to 10.0.0.0/24
	}
}
`)
	ref := ns.nft("list", "chain", "ip", "ref", "prerouting")
	ours := ns.nft("list", "chain", "ip", "gtund", "prerouting")
	if strings.Replace(ref, "table ip ref", "table ip gtund", 1) != ours {
		t.Errorf("listing differs from nft's own:\nours:\n%s\nnft:\n%s", ours, ref)
	}
	oursBC := bytecode(ns.nft("--debug=netlink", "list", "chain", "ip", "gtund", "prerouting"))
	refBC := bytecode(ns.nft("--debug=netlink", "list", "chain", "ip", "ref", "prerouting"))
	if oursBC == "" || oursBC != refBC {
		t.Errorf("prerouting chain bytecode differs:\nours:\n%s\nnft:\n%s", oursBC, refBC)
	}
	// 0x40 is NF_NAT_RANGE_NETMAP (the kernel adds 0x1, MAP_IPS).
	if !strings.Contains(oursBC, "nat dnat ip addr_min reg 1 addr_max reg 2 flags 0x41") {
		t.Errorf("no netmap dnat:\n%s", oursBC)
	}
	for _, bad := range []Netmap{
		{Virtual: netip.MustParsePrefix("100.100.0.0/16"), Real: netip.MustParsePrefix("10.244.0.0/24")},
		{Virtual: netip.MustParsePrefix("fd00::/64"), Real: netip.MustParsePrefix("fd01::/60")},
		{Virtual: netip.MustParsePrefix("fd00::/64"), Real: netip.MustParsePrefix("10.0.0.0/24")},
		{Virtual: netip.MustParsePrefix("0.0.0.0/0"), Real: netip.MustParsePrefix("0.0.0.0/0")},
	} {
		s.Netmap = []Netmap{bad}
		if err := Ensure(s); err == nil {
			t.Errorf("Ensure with map %+v = nil, want an error", bad)
		}
	}
}

// TestForwardNetmap proves the mapping in the kernel's data path: cli
// (100.64.240.2) connects to 100.101.1.3, rtr maps it to 10.0.0.3 (srv) and
// masquerades it; srv sees rtr's address, and cli sees the answer come from
// the virtual address it dialled (conntrack reverses both).
func TestForwardNetmap(t *testing.T) {
	cli, rtr, srv := routedNS(t)
	if err := Ensure(Spec{
		Table: "gtund", Tun: "gtund0", NetNS: rtr.fd(),
		Masquerade: []netip.Prefix{netip.MustParsePrefix("100.64.240.0/24")},
		Netmap:     testNetmap,
	}); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	c, sc := connectThrough(t, cli, srv, "100.101.1.3", "dial the virtual address")
	if got := sc.RemoteAddr().(*net.TCPAddr).IP.String(); got != "10.0.0.2" {
		t.Errorf("server saw source %s, want masqueraded 10.0.0.2", got)
	}
	if _, err := sc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("reply through the mapping: %q %v", buf, err)
	}
}

// Intact notices the table deleted, a chain deleted or flushed, and a rule
// deleted, by someone else; Ensure puts it back.
func TestIntactNoticesTampering(t *testing.T) {
	ns := newNS(t)
	s := testSpec(ns)
	s.Netmap = testNetmap
	check := func(want bool, after string) {
		t.Helper()
		ok, err := Intact(s)
		if err != nil {
			t.Fatal(err)
		}
		if ok != want {
			t.Fatalf("after %s: Intact = %v, want %v", after, ok, want)
		}
	}
	check(false, "nothing")
	for _, tamper := range [][]string{
		{"delete", "table", "ip", "gtund"},
		{"flush", "chain", "ip", "gtund", "forward"},
		{"delete", "chain", "ip", "gtund", "postrouting"},
		{"flush", "chain", "ip", "gtund", "prerouting"},
		{"flush", "ruleset"},
	} {
		if err := Ensure(s); err != nil {
			t.Fatal(err)
		}
		check(true, "Ensure")
		ns.nft(tamper...)
		check(false, strings.Join(tamper, " "))
	}
	// A table of the same name in another family is not ours.
	ns.nft("add", "table", "inet", "gtund")
	check(false, "an inet table of the same name")
}

// WatchDeletions reports a table deleted, a chain flushed, by someone else
// within moments, and stops when its context ends.
func TestWatchDeletions(t *testing.T) {
	ns := newNS(t)
	s := testSpec(ns)
	s.NetNS = 0 // WatchDeletions works in the caller's namespace: run it on a thread inside ns
	events := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		runtime.LockOSThread() // stays in ns; the thread dies with the goroutine
		if err := netns.Set(ns.h); err != nil {
			done <- err
			close(ready)
			return
		}
		if err := Ensure(s); err != nil {
			done <- err
			close(ready)
			return
		}
		close(ready)
		done <- WatchDeletions(ctx, func() { events <- struct{}{} })
	}()
	<-ready
	// Subscribed once a deletion is reported: a table of no one's, added
	// and deleted until one is (a fixed pause could end before the
	// subscription on a loaded machine, and the first tamper went unseen).
	for deadline := time.Now().Add(10 * time.Second); ; {
		ns.nft("add", "table", "ip", "gtun-probe")
		ns.nft("delete", "table", "ip", "gtun-probe")
		select {
		case <-events:
		case err := <-done:
			t.Fatalf("watch ended: %v", err)
		case <-time.After(time.Second):
			if time.Now().After(deadline) {
				t.Fatal("no deletion reported 10 s into the watch")
			}
			continue
		}
		break
	}
	for _, tamper := range [][]string{
		{"flush", "chain", "ip", "gtund", "forward"},
		{"delete", "table", "ip", "gtund"},
	} {
		for len(events) > 0 {
			<-events
		}
		ns.nft(tamper...)
		select {
		case <-events:
		case err := <-done:
			t.Fatalf("watch ended: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatalf("no event for %s", strings.Join(tamper, " "))
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchDeletions did not return after cancel")
	}
}
