package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/server"
)

// IPv6 inside the tunnel and outside: the topology is dual-stack
// (testnet.Options.IPv6), gtund has pool6 and serves the cluster's IPv6 pod
// and Service CIDRs besides the IPv4 ones.

const (
	pool6      = "fd64:240::/64"
	gateway6   = "fd64:240::1"
	vmTunnel6  = "fd64:240::2" // vm's IPv6 tunnel address: 100.64.240.2's host bits
	serverV6   = `pool6 = "` + pool6 + `"` + "\n"
	routesV6   = `routes = ["10.244.0.0/16", "10.96.0.0/12", "` + testnet.PodCIDR6 + `", "` + testnet.SvcCIDR6 + `"]`
	routesV4   = `routes = ["10.244.0.0/16", "10.96.0.0/12"]`
	podURL6    = "http://[" + testnet.PodIP6 + "]:8080/"
	serviceURL = "http://[" + testnet.ClusterIP6 + "]/"
)

// newEnv6 is newEnv on the dual-stack topology: the pod's HTTP server
// answers on its IPv4 and IPv6 addresses.
func newEnv6(t *testing.T, tools ...string) *env {
	t.Helper()
	testnet.Require(t, append([]string{"ping", "curl", "/dev/net/tun"}, tools...)...)
	e := &env{tp: testnet.UpWith(t, testnet.Options{IPv6: true}), dir: t.TempDir()}
	e.serverKey, e.serverPub = e.key(t, "server")
	e.tp.Start(t, "pod", "", bins.podhttp, "-listen", ":8080")
	testnet.Eventually(t, 10*time.Second, func() error {
		_, err := e.tp.Exec("node", "curl", "-fsS", "--max-time", "1", podURL6+"healthz")
		return err
	})
	return e
}

// serverConfig6 is serverConfig with pool6, the IPv6 routes, and the
// replacements of edits (old, new pairs) made in the file.
func (e *env) serverConfig6(t *testing.T, edits []string, peers ...peer) string {
	t.Helper()
	path := e.serverConfig(t, peers...)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), routesV4, serverV6+routesV6, 1)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(s, edits[i]) {
			t.Fatalf("server config has no %q", edits[i])
		}
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// editFile replaces old by new in the file at path.
func editFile(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// noLeftovers6 is noLeftovers for IPv6: no IPv6 route of gtun's, no ip6
// table of either daemon.
func (e *env) noLeftovers6(t *testing.T) {
	t.Helper()
	e.noLeftovers(t)
	for _, h := range []string{"vm", "gw"} {
		if out, _ := e.tp.Exec(h, "ip", "-6", "route", "show", "proto", "0x67"); strings.TrimSpace(out) != "" {
			t.Errorf("IPv6 routes left in %s: %s", h, out)
		}
		if out, _ := e.tp.Exec(h, "nft", "list", "tables", "ip6"); strings.Contains(out, "gtun") {
			t.Errorf("ip6 table left in %s: %s", h, out)
		}
	}
}

// ping6 waits until host gets an answer from dst.
func (e *env) ping6(t *testing.T, host, dst string) {
	t.Helper()
	testnet.Eventually(t, 10*time.Second, func() error {
		_, err := e.tp.Exec(host, "ping", "-6", "-c1", "-W1", dst)
		return err
	})
}

// IPv6 inside the tunnel, over an IPv6 outer path: gtund listens on [::]
// with tcp, udp and kcp; for each transport gtun dials gtund's IPv6 wan
// address, gets both tunnel addresses on gtun0 and routes both families;
// ping, HTTP to the pod's IPv6 address and the IPv6 ClusterIP, and DNS
// (AAAA, over UDP and TCP) to the cluster's DNS at its IPv6 ClusterIP all
// cross, the cluster seeing gtund's IPv6 address (masquerade, ip6 table);
// IPv4 works beside it over the same session. Status shows both
// addresses; a stop leaves no IPv6 route or ip6 table.
func TestIPv6ThroughTunnel(t *testing.T) {
	t.Parallel()
	e := newEnv6(t, "dig")
	poddns := testnet.GoBuild(t, "./tools/poddns")
	e.tp.Start(t, "pod", filepath.Join(e.dir, "kube-dns.log"), poddns, "-listen", ":53",
		"-record", clusterName+"="+clusterIP, "-record", clusterName+"="+testnet.ClusterIP6)
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig6(t, []string{
		`listen = "` + gwWAN + `:` + port + `"`, `listen = "[::]:` + port + `"`,
		`transports = ["tcp"]`, `transports = ["tcp", "udp", "kcp"]`,
	}, peer{name: "vm", pub: cpub})
	srv := e.startServer(t, scfg)
	if out := e.tp.MustExec(t, "gw", "ip", "-6", "addr", "show", "dev", "gtund0"); !strings.Contains(out, gateway6+"/64") {
		t.Errorf("gtund0 lacks %s/64:\n%s", gateway6, out)
	}
	if out := e.tp.MustExec(t, "gw", "nft", "list", "table", "ip6", "gtund"); !strings.Contains(out, "ip6 saddr "+pool6+` oifname != "gtund0" masquerade`) ||
		!strings.Contains(out, "maxseg size set rt mtu") {
		t.Errorf("ip6 table of gtund:\n%s", out)
	}
	// Someone deletes the ip6 table: gtund puts it back, as the ip one.
	e.tp.MustExec(t, "gw", "nft", "delete", "table", "ip6", "gtund")
	testnet.Eventually(t, 5*time.Second, func() error {
		out, _ := e.tp.Exec("gw", "nft", "list", "table", "ip6", "gtund")
		if !strings.Contains(out, "masquerade") {
			return fmt.Errorf("ip6 table not restored: %q", out)
		}
		return nil
	})

	// Over IPv6 with each transport; and over IPv4 to the same [::]
	// sockets (a dual-stack listener sees IPv4-mapped sources).
	for _, c := range []struct{ tr, server, client string }{
		{"tcp", "[" + testnet.GWWan6 + "]", testnet.VMWan6},
		{"udp", "[" + testnet.GWWan6 + "]", testnet.VMWan6},
		{"kcp", "[" + testnet.GWWan6 + "]", testnet.VMWan6},
		{"udp", gwWAN, testnet.VMWan},
		{"tcp", gwWAN, testnet.VMWan},
	} {
		tr := c.tr
		t.Run(tr+" to "+c.server, func(t *testing.T) {
			ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
			editFile(t, ccfg, `endpoints = ["`+gwWAN+`:`+port+`"]`, `endpoints = ["`+c.server+`:`+port+`"]`)
			editFile(t, ccfg, `transport = "tcp"`, `transport = "`+tr+`"`)
			cli := e.startClient(t, "vm", "vm", ccfg)
			e.waitRoute(t, "vm", testnet.PodCIDR6, cli)
			e.waitRoute(t, "vm", "10.244.0.0/16", cli)
			addrs := e.tp.MustExec(t, "vm", "ip", "addr", "show", "dev", "gtun0")
			if !strings.Contains(addrs, "100.64.240.2/24") || !strings.Contains(addrs, vmTunnel6+"/64") {
				t.Errorf("gtun0 lacks an address:\n%s", addrs)
			}
			e.ping6(t, "vm", testnet.PodIP6)
			e.ping6(t, "vm", gateway6) // gtund's own address answers pings
			e.reach(t, "vm", podURL6, 10*time.Second)
			e.reach(t, "vm", serviceURL, 10*time.Second)
			e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
			if who := e.whoami(t, "vm", podURL6+"whoami"); !strings.HasPrefix(who, "["+testnet.GWVpc6+"]:") {
				t.Errorf("pod saw %q, want gtund's masqueraded [%s]", who, testnet.GWVpc6)
			}
			for _, proto := range []string{"+notcp", "+tcp"} {
				out, err := e.tp.Exec("vm", "dig", "@"+testnet.ClusterIP6, clusterName, "AAAA", "+short", "+time=3", "+tries=1", proto)
				if err != nil || strings.TrimSpace(out) != testnet.ClusterIP6 {
					t.Errorf("dig AAAA %s over the tunnel: %v %q, want %s", proto, err, out, testnet.ClusterIP6)
				}
			}
			// gtund sees vm's wan address of the outer path's family.
			var sst server.Status
			status(t, bins.gtund, e.serverSocket(), &sst)
			if len(sst.Peers) != 1 || !sst.Peers[0].Connected || sst.Peers[0].Address6 != vmTunnel6 ||
				!strings.Contains(sst.Peers[0].Endpoint, c.client) || sst.Pool6 != pool6 || sst.Gateway6 != gateway6 {
				t.Errorf("gtund status: pool6 %q gateway6 %q peers %+v", sst.Pool6, sst.Gateway6, sst.Peers)
			}
			var cst client.Status
			status(t, bins.gtun, e.clientSocket("vm"), &cst)
			if s := cst.Servers[0]; s.Address6 != vmTunnel6+"/64" || s.Gateway6 != gateway6 || s.Transport != tr {
				t.Errorf("gtun status: %+v", s)
			}
			if len(cst.Drops) != 0 {
				t.Errorf("gtun drops %v", cst.Drops)
			}
			// The human status shows both addresses too.
			if out, err := exec.Command(bins.gtun, "status", "--socket", e.clientSocket("vm")).CombinedOutput(); err != nil ||
				!strings.Contains(string(out), "100.64.240.2/24,"+vmTunnel6+"/64") {
				t.Errorf("gtun status (%v):\n%s", err, out)
			}
			if out, err := exec.Command(bins.gtund, "status", "--socket", e.serverSocket()).CombinedOutput(); err != nil ||
				!strings.Contains(string(out), "pool6 "+pool6+"  gateway6 "+gateway6) || !strings.Contains(string(out), "100.64.240.2,"+vmTunnel6) {
				t.Errorf("gtund status (%v):\n%s", err, out)
			}
			stop(t, "gtun", cli)
		})
	}
	stop(t, "gtund", srv)
	e.noLeftovers6(t)
}

// Gateway mode over IPv6: vm2, whose IPv6 default route is vm, pings the
// pod's IPv6 address, reaches it and the IPv6 ClusterIP over HTTP and asks
// the cluster's DNS at the IPv6 ClusterIP for AAAA (UDP and TCP), through
// vm's tunnel, directly and through gtun's split DNS forwarder (gtund
// pushes the IPv6 ClusterIP as the cluster's DNS server); vm's ip6
// table rewrites vm2's source to vm's IPv6 tunnel address (and gtund's
// masquerades it again into the cluster), and gtun turned IPv6 forwarding
// on. A stop leaves no table of either family.
func TestIPv6GatewayMode(t *testing.T) {
	t.Parallel()
	e := newEnv6(t, "dig")
	poddns := testnet.GoBuild(t, "./tools/poddns")
	e.tp.Start(t, "pod", filepath.Join(e.dir, "kube-dns.log"), poddns, "-listen", ":53", "-record", clusterName+"="+testnet.ClusterIP6)
	e.tp.MustExec(t, "vm", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
	ckey, cpub := e.key(t, "vm")
	srv := e.startServer(t, e.serverConfig6(t, []string{`keepalive = "1s"`,
		`keepalive = "1s"` + "\n" + `dns = { servers = ["` + testnet.ClusterIP6 + `"], domains = ["cluster.local"] }`}, peer{name: "vm", pub: cpub}))
	cli := e.startClient(t, "vm", "vm", e.gatewayClientConfig(t, "vm", ckey, "gateway = true\n"))
	e.waitRoute(t, "vm", testnet.PodCIDR6, cli)
	e.ping6(t, "vm2", testnet.PodIP6)
	e.reach(t, "vm2", podURL6, 10*time.Second)
	e.reach(t, "vm2", serviceURL, 10*time.Second)
	e.reach(t, "vm2", "http://"+podIP+":8080/", 10*time.Second)
	const forwarder = "100.64.240.2" // gtun's split DNS forwarder, on its tunnel address
	testnet.Eventually(t, 10*time.Second, func() error {
		var cst client.Status
		if err := tryStatus(bins.gtun, e.clientSocket("vm"), &cst); err != nil {
			return err
		}
		if cst.DNS == nil || cst.DNS.Listen != forwarder+":53" {
			return fmt.Errorf("dns status %+v", cst.DNS)
		}
		return nil
	})
	for _, host := range []string{"vm", "vm2"} {
		for _, server := range []string{testnet.ClusterIP6, forwarder} {
			for _, proto := range []string{"+notcp", "+tcp"} {
				out, err := e.tp.Exec(host, "dig", "@"+server, clusterName, "AAAA", "+short", "+time=3", "+tries=1", proto)
				if err != nil || strings.TrimSpace(out) != testnet.ClusterIP6 {
					t.Errorf("dig AAAA @%s %s from %s: %v %q, want %s", server, proto, host, err, out, testnet.ClusterIP6)
				}
			}
		}
	}
	if got := strings.TrimSpace(e.tp.MustExec(t, "vm", "sysctl", "-n", "net.ipv6.conf.all.forwarding")); got != "1" {
		t.Errorf("vm's IPv6 forwarding %s, want 1 (gateway mode with an IPv6 server)", got)
	}
	table := e.tp.MustExec(t, "vm", "nft", "list", "table", "ip6", "gtun-gtun0")
	for _, want := range []string{`oifname "gtun0" ip6 daddr ` + testnet.PodCIDR6 + ` snat to ` + vmTunnel6, "maxseg size set rt mtu"} {
		if !strings.Contains(table, want) {
			t.Errorf("vm's ip6 table lacks %q:\n%s", want, table)
		}
	}
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if cst.Gateway == nil || !strings.Contains(strings.Join(cst.Gateway.SNAT, " "), testnet.PodCIDR6+" from "+vmTunnel6) {
		t.Errorf("gtun status gateway %+v", cst.Gateway)
	}
	stop(t, "gtun", cli)
	stop(t, "gtund", srv)
	e.noLeftovers6(t)
}

// Site-to-site with IPv6 subnets: vm is a gateway without masquerade and
// its peer has subnets = [VPC A's IPv6 prefix]; vm2's own IPv6 address
// reaches the pod, and the pod opens a connection to vm2 (the cluster routes
// VPC A's prefix to gtund, which routes it into its TUN toward vm).
func TestIPv6SiteToSite(t *testing.T) {
	t.Parallel()
	e := newEnv6(t)
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig6(t, nil, peer{name: "vm", pub: cpub, extra: `subnets = ["` + vpcA + `", "` + testnet.LanCIDR6 + `"]`})
	srv := e.startServer(t, scfg)
	cli := e.startClient(t, "vm", "vm", e.gatewayClientConfig(t, "vm", ckey, "gateway = true\nmasquerade = false\n"))
	e.waitRoute(t, "vm", testnet.PodCIDR6, cli)
	e.tp.MustExec(t, "node", "ip", "route", "add", testnet.LanCIDR6, "via", testnet.GWVpc6)
	e.tp.Start(t, "vm2", filepath.Join(e.dir, "vm2-http.log"), bins.podhttp, "-listen", ":8080")
	testnet.Eventually(t, 10*time.Second, func() error {
		out, _ := e.tp.Exec("gw", "ip", "-6", "route", "show", testnet.LanCIDR6)
		if !strings.Contains(out, "dev gtund0") {
			return fmt.Errorf("gw has no route %s into gtund0: %q", testnet.LanCIDR6, out)
		}
		return nil
	})
	e.reach(t, "vm2", podURL6, 10*time.Second)
	if who := e.whoami(t, "vm2", podURL6+"whoami"); !strings.HasPrefix(who, "["+testnet.VM2Lan6+"]:") {
		t.Errorf("pod saw %q, want vm2's own [%s]", who, testnet.VM2Lan6)
	}
	testnet.Eventually(t, 10*time.Second, func() error {
		out, err := e.curl("pod", "http://["+testnet.VM2Lan6+"]:8080/whoami")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(strings.TrimSpace(out), "["+testnet.PodIP6+"]:") {
			return fmt.Errorf("vm2 saw %q, want the pod's [%s]", out, testnet.PodIP6)
		}
		return nil
	})
	var sst server.Status
	status(t, bins.gtund, e.serverSocket(), &sst)
	routed := 0
	for _, sn := range sst.Peers[0].Subnets {
		if sn.Routed {
			routed++
		}
	}
	if routed != 2 || len(sst.Peers[0].Drops) != 0 {
		t.Errorf("gtund status peer %+v", sst.Peers[0])
	}
	stop(t, "gtun", cli)
	editFile(t, scfg, `, "`+testnet.LanCIDR6+`"]`, `]`)
	hup(t, "gtund", srv)
	testnet.Eventually(t, 5*time.Second, func() error {
		if out, _ := e.tp.Exec("gw", "ip", "-6", "route", "show", testnet.LanCIDR6); strings.TrimSpace(out) != "" {
			return fmt.Errorf("gw still routes %s: %s", testnet.LanCIDR6, out)
		}
		return nil
	})
	stop(t, "gtund", srv)
	e.noLeftovers6(t)
}

// map with IPv6 prefixes: gtund serves the cluster's IPv6 pod CIDR under a
// virtual prefix of the same length (NPTv6-style, dnat ip6 prefix to);
// vm routes and reaches the virtual address, the pod answers, and the real
// prefix is not pushed. The cluster's DNS answers the pod's real IPv6
// address; gtund's DNS proxy gives the AAAA under the virtual prefix (UDP
// and TCP, through gtun's forwarder too). A reload changes the mapping
// live.
func TestIPv6Map(t *testing.T) {
	t.Parallel()
	e := newEnv6(t, "dig")
	poddns := testnet.GoBuild(t, "./tools/poddns")
	e.tp.Start(t, "pod", filepath.Join(e.dir, "kube-dns.log"), poddns, "-listen", ":53", "-record", clusterName+"="+testnet.PodIP6)
	const (
		virt   = "fd00:100:244::/56"
		virt2  = "fd00:200:244::/56"
		podV   = "fd00:100:244:1::20"
		podV2  = "fd00:200:244:1::20"
		mapKey = `map = ["` + testnet.PodCIDR6 + `=` + virt + `"]`
	)
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig6(t, []string{routesV6, routesV6 + "\n" + mapKey + "\n" +
		`dns = { servers = ["` + testnet.ClusterIP6 + `"], domains = ["cluster.local"] }`}, peer{name: "vm", pub: cpub})
	srv := e.startServer(t, scfg)
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", virt, cli)
	if out, _ := e.tp.Exec("vm", "ip", "-6", "route", "show", testnet.PodCIDR6); strings.TrimSpace(out) != "" {
		t.Errorf("the real prefix is routed too: %s", out)
	}
	e.ping6(t, "vm", podV)
	e.reach(t, "vm", "http://["+podV+"]:8080/", 10*time.Second)
	if out := e.tp.MustExec(t, "gw", "nft", "list", "chain", "ip6", "gtund", "prerouting"); !strings.Contains(out, `iifname "gtund0" ip6 daddr `+virt+` dnat prefix to `+testnet.PodCIDR6) {
		t.Errorf("gtund's ip6 prerouting:\n%s", out)
	}
	// The service's IPv6 CIDR is not mapped: reached under its own name.
	e.reach(t, "vm", serviceURL, 10*time.Second)
	const forwarder, proxy = "100.64.240.2", "100.64.240.1" // gtun's forwarder, gtund's DNS proxy
	testnet.Eventually(t, 10*time.Second, func() error {
		var cst client.Status
		if err := tryStatus(bins.gtun, e.clientSocket("vm"), &cst); err != nil {
			return err
		}
		if cst.DNS == nil || cst.DNS.Listen != forwarder+":53" {
			return fmt.Errorf("dns status %+v", cst.DNS)
		}
		return nil
	})
	for _, at := range []string{forwarder, proxy} {
		for _, proto := range []string{"+notcp", "+tcp"} {
			out, err := e.tp.Exec("vm", "dig", "@"+at, clusterName, "AAAA", "+short", "+time=3", "+tries=1", proto)
			if err != nil || strings.TrimSpace(out) != podV {
				t.Errorf("dig AAAA @%s %s: %v %q, want the virtual %s", at, proto, err, out, podV)
			}
		}
	}

	editFile(t, scfg, virt, virt2)
	hup(t, "gtund", srv)
	e.waitRoute(t, "vm", virt2, cli)
	e.waitNoRoute(t, "vm", virt)
	e.reach(t, "vm", "http://["+podV2+"]:8080/", 10*time.Second)
	if _, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "2", "http://["+podV+"]:8080/"); err == nil {
		t.Errorf("the old virtual address still answers after the reload")
	}
	stop(t, "gtun", cli)
	stop(t, "gtund", srv)
	e.noLeftovers6(t)
}

// A client whose host has IPv6 off on its tun device (disable_ipv6) leaves
// a dual-stack server's IPv6 address and routes out and carries IPv4 as
// before, instead of failing to configure the device.
func TestIPv6OffOnClient(t *testing.T) {
	t.Parallel()
	e := newEnv6(t)
	e.tp.MustExec(t, "vm", "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
	ckey, cpub := e.key(t, "vm")
	srv := e.startServer(t, e.serverConfig6(t, nil, peer{name: "vm", pub: cpub}))
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if s := cst.Servers[0]; s.Address6 != "" || len(s.Routes) != 2 {
		t.Errorf("gtun status with IPv6 off: address6 %q, routes %+v", s.Address6, s.Routes)
	}
	if !strings.Contains(cli.Log(), "IPv6 is off on the tun device") {
		t.Errorf("gtun did not say IPv6 is off:\n%s", cli.LogTail(20))
	}
	stop(t, "gtun", cli)
	stop(t, "gtund", srv)
	e.noLeftovers6(t)
}

// The IPv6 side is kept in place like the IPv4 one: the kernel drops a
// link's IPv6 addresses and routes when it goes down, and someone may
// delete them; gtun puts its IPv6 tunnel address and routes back.
func TestIPv6HealsAfterLinkFlap(t *testing.T) {
	t.Parallel()
	e := newEnv6(t)
	ckey, cpub := e.key(t, "vm")
	srv := e.startServer(t, e.serverConfig6(t, nil, peer{name: "vm", pub: cpub}))
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", testnet.PodCIDR6, cli)
	e.reach(t, "vm", podURL6, 10*time.Second)
	healed := func(what string) {
		t.Helper()
		testnet.Eventually(t, 10*time.Second, func() error {
			addrs, _ := e.tp.Exec("vm", "ip", "-6", "addr", "show", "dev", "gtun0")
			routes, _ := e.tp.Exec("vm", "ip", "-6", "route", "show", testnet.PodCIDR6)
			if !strings.Contains(addrs, vmTunnel6+"/64") || !strings.Contains(routes, "dev gtun0") {
				return fmt.Errorf("after %s: addresses %q routes %q", what, addrs, routes)
			}
			return nil
		})
		e.reach(t, "vm", podURL6, 10*time.Second)
	}
	e.tp.MustExec(t, "vm", "ip", "-6", "addr", "del", vmTunnel6+"/64", "dev", "gtun0")
	healed("the address deleted")
	e.tp.MustExec(t, "vm", "ip", "-6", "route", "del", testnet.PodCIDR6, "dev", "gtun0")
	healed("the route deleted")
	e.tp.MustExec(t, "vm", "ip", "link", "set", "gtun0", "down")
	healed("the link flapped")
	stop(t, "gtun", cli)
	stop(t, "gtund", srv)
	e.noLeftovers6(t)
}

// gtund with pool6 on a host whose IPv6 is off (the plain topology turns
// it off everywhere) stops at start with a message that says so (exit 1),
// leaving no device or table behind.
func TestIPv6PoolOnHostWithoutIPv6(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, cpub := e.key(t, "vm")
	cfg := e.serverConfig6(t, nil, peer{name: "vm", pub: cpub})
	p := e.tp.Start(t, "gw", filepath.Join(e.dir, "gtund.log"), bins.gtund, "-c", cfg)
	code, err := p.Wait(10 * time.Second)
	if err != nil || code != 1 {
		t.Fatalf("gtund exit %d (%v), want 1:\n%s", code, err, p.LogTail(20))
	}
	if !strings.Contains(p.Log(), "server.pool6 is set but IPv6 is off on gtund0") {
		t.Errorf("gtund's message does not say why:\n%s", p.LogTail(20))
	}
	e.noLeftovers(t)
}
