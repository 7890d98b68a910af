package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
)

// clusters is the two-cluster topology (testnet.UpWithCluster2): gtund on gw
// and on gw2, each with its own key, and podhttp in both pods, named
// "cluster1" and "cluster2" so an answer says where it came from. Both pods
// are 10.244.1.20 and both ClusterIPs 10.96.0.10.
type clusters struct {
	*env
	key2, pub2 string // gtund on gw2
}

func newClusters(t *testing.T) *clusters {
	t.Helper()
	testnet.Require(t, "ping", "curl", "/dev/net/tun")
	c := &clusters{env: &env{tp: testnet.UpWithCluster2(t), dir: t.TempDir()}}
	c.serverKey, c.serverPub = c.key(t, "server")
	c.key2, c.pub2 = c.key(t, "server2")
	for _, p := range []struct{ host, name, node string }{{"pod", "cluster1", "node"}, {"pod2", "cluster2", "node2"}} {
		c.tp.Start(t, p.host, "", bins.podhttp, "-listen", ":8080", "-name", p.name)
		testnet.Eventually(t, 10*time.Second, func() error {
			_, err := c.tp.Exec(p.node, "curl", "-fsS", "--max-time", "1", "http://"+podIP+":8080/healthz")
			return err
		})
	}
	return c
}

// gtund describes one cluster's gtund: its host, wan address, and the
// [server] lines that differ between the tests (pool, routes, map).
type gtund struct {
	host, wan, key, pool string
	extra                string // more [server] lines, e.g. routes and map
}

func (c *clusters) gtund1(extra string) gtund {
	return gtund{"gw", gwWAN, c.serverKey, "100.64.240.0/24", extra}
}

func (c *clusters) gtund2(pool, extra string) gtund {
	return gtund{"gw2", testnet.GW2Wan, c.key2, pool, extra}
}

func (c *clusters) socket(g gtund) string { return filepath.Join(c.dir, g.host+".sock") }

// writeServer writes g's config with one peer, the vm.
func (c *clusters) writeServer(t *testing.T, g gtund, vmPub string) string {
	t.Helper()
	cfg := fmt.Sprintf(`[server]
listen = "%s:%s"
private_key_file = %q
pool = %q
state_dir = %q
control_socket = %q
keepalive = "1s"
%s

[[peer]]
name = "vm"
public_key = %q

[log]
level = "debug"
`, g.wan, port, g.key, g.pool, filepath.Join(c.dir, g.host+"-state"), c.socket(g), g.extra, vmPub)
	path := filepath.Join(c.dir, g.host+".toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (c *clusters) startGtund(t *testing.T, g gtund, cfg string) *testnet.Proc {
	t.Helper()
	p := c.tp.Start(t, g.host, filepath.Join(c.dir, g.host+"-gtund.log"), bins.gtund, "-c", cfg)
	testnet.Eventually(t, 10*time.Second, func() error {
		if p.Exited() {
			t.Fatalf("gtund on %s exited:\n%s", g.host, p.LogTail(30))
		}
		var st map[string]any
		return tryStatus(bins.gtund, c.socket(g), &st)
	})
	return p
}

// writeClient writes a gtun config with one [[server]] per cluster.
func (c *clusters) writeClient(t *testing.T, key string, servers ...string) string {
	t.Helper()
	cfg := fmt.Sprintf("[client]\nprivate_key_file = %q\ntun = \"gtun0\"\ncontrol_socket = %q\n\n%s\n[log]\nlevel = \"debug\"\n",
		key, c.clientSocket("vm"), strings.Join(servers, "\n"))
	path := filepath.Join(c.dir, "gtun.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func serverBlock(name, wan, pub, extra string) string {
	return fmt.Sprintf("[[server]]\nname = %q\nendpoints = [\"%s:%s\"]\npublic_key = %q\n%s\n", name, wan, port, pub, extra)
}

// clientStatus returns gtun's status of each server by name.
func (c *clusters) clientStatus(t *testing.T) map[string]client.ServerStatus {
	t.Helper()
	var st client.Status
	status(t, bins.gtun, c.clientSocket("vm"), &st)
	out := map[string]client.ServerStatus{}
	for _, s := range st.Servers {
		out[s.Name] = s
	}
	return out
}

// waitServers polls gtun's status until ok accepts it.
func (c *clusters) waitServers(t *testing.T, limit time.Duration, what string, ok func(map[string]client.ServerStatus) bool) time.Duration {
	t.Helper()
	start := time.Now()
	var last client.Status
	for time.Since(start) < limit {
		if tryStatus(bins.gtun, c.clientSocket("vm"), &last) == nil {
			m := map[string]client.ServerStatus{}
			for _, s := range last.Servers {
				m[s.Name] = s
			}
			if ok(m) {
				return time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not %s within %v; last status %+v", what, limit, last)
	return 0
}

func connected(names ...string) func(map[string]client.ServerStatus) bool {
	return func(m map[string]client.ServerStatus) bool {
		for _, n := range names {
			s := m[n]
			if s.State != "connected" || len(s.Routes) == 0 {
				return false
			}
			for _, r := range s.Routes {
				if !r.Installed {
					return false
				}
			}
		}
		return true
	}
}

// answer waits until url, fetched from vm, names the cluster want.
func (c *clusters) answer(t *testing.T, url, want string) {
	t.Helper()
	testnet.Eventually(t, 10*time.Second, func() error {
		out, err := c.curl("vm", url)
		if err != nil || strings.TrimSpace(out) != want {
			return fmt.Errorf("%s: %v %q, want %q", url, err, out, want)
		}
		return nil
	})
}

// Two clusters serving different CIDRs, one gtun: the pod CIDR is served by
// cluster 1's gtund, the service CIDR by cluster 2's. Both gtunds use the
// default pool, so the client gets the same address from each; packets still
// go to the session whose routes match.
func TestManyClustersDisjointRoutes(t *testing.T) {
	t.Parallel()
	c := newClusters(t)
	ckey, cpub := c.key(t, "vm")
	g1 := c.gtund1(`routes = ["10.244.0.0/16"]`)
	g2 := c.gtund2("100.64.240.0/24", `routes = ["10.96.0.0/12"]`)
	c.startGtund(t, g1, c.writeServer(t, g1, cpub))
	c.startGtund(t, g2, c.writeServer(t, g2, cpub))
	cli := c.startClient(t, "vm", "vm", c.writeClient(t, ckey,
		serverBlock("cluster1", gwWAN, c.serverPub, ""),
		serverBlock("cluster2", testnet.GW2Wan, c.pub2, "")))
	c.waitRoute(t, "vm", "10.244.0.0/16", cli)
	c.waitRoute(t, "vm", "10.96.0.0/12", cli)

	c.answer(t, "http://"+podIP+":8080/name", "cluster1")
	c.answer(t, "http://"+clusterIP+"/name", "cluster2") // node2's DNAT to pod2
	if out, err := c.tp.Exec("vm", "ping", "-c", "2", "-i", "0.2", "-W", "2", podIP); err != nil {
		t.Fatalf("ping cluster 1's pod: %v\n%s", err, out)
	}
	st := c.clientStatus(t)
	for name, want := range map[string]string{"cluster1": "10.244.0.0/16", "cluster2": "10.96.0.0/12"} {
		s := st[name]
		if s.State != "connected" || len(s.Routes) != 1 || s.Routes[0].Prefix != want || !s.Routes[0].Installed || s.Address == "" {
			t.Errorf("%s: %+v, want connected with %s installed", name, s, want)
		}
		if s.TxPackets == 0 {
			t.Errorf("%s carried no packets", name)
		}
	}
	stop(t, "gtun", cli)
	if out, _ := c.tp.Exec("vm", "ip", "route", "show", "proto", "0x67"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left: %s", out)
	}
}

// Both clusters push 10.244.0.0/16 (no map): the prefix stays with the
// server that had it first; the other shows the conflict in status and
// installs nothing for it; gtun does not flip between them.
func TestManyClustersSameRouteIsAConflict(t *testing.T) {
	t.Parallel()
	c := newClusters(t)
	ckey, cpub := c.key(t, "vm")
	g1 := c.gtund1(`routes = ["10.244.0.0/16"]`)
	g2 := c.gtund2("100.64.241.0/24", `routes = ["10.244.0.0/16"]`)
	c.startGtund(t, g1, c.writeServer(t, g1, cpub))
	c.startClient(t, "vm", "vm", c.writeClient(t, ckey,
		serverBlock("cluster1", gwWAN, c.serverPub, ""),
		serverBlock("cluster2", testnet.GW2Wan, c.pub2, "")))
	c.waitServers(t, 15*time.Second, "cluster1 connected", connected("cluster1"))
	c.answer(t, "http://"+podIP+":8080/name", "cluster1")

	c.startGtund(t, g2, c.writeServer(t, g2, cpub))
	c.waitServers(t, 15*time.Second, "cluster2 connected with a conflict", func(m map[string]client.ServerStatus) bool {
		s := m["cluster2"]
		return s.State == "connected" && len(s.Routes) == 1 && !s.Routes[0].Installed &&
			strings.Contains(s.Routes[0].Note, `conflict: server "cluster1" has it`)
	})
	for range 5 {
		c.answer(t, "http://"+podIP+":8080/name", "cluster1")
	}
	if s := c.clientStatus(t)["cluster1"]; len(s.Routes) != 1 || !s.Routes[0].Installed {
		t.Errorf("cluster1 lost its route: %+v", s)
	}
	out, err := exec.Command(bins.gtun, "status", "--socket", c.clientSocket("vm")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `MISSING (conflict: server "cluster1" has it)`) {
		t.Errorf("human status does not show the conflict: %v\n%s", err, out)
	}
}

// The scenario: two clusters that both use 10.244.0.0/16 and
// 10.96.0.0/16, one gtun. Each gtund serves its cluster under its own
// virtual prefixes (map, 1:1 DNAT in its nftables table), and gives the
// client an address from its own pool; the client reaches cluster 1's pod
// at 100.100.1.20 and cluster 2's at 100.101.1.20 at the same time. Then
// gtund on gw2 is killed: cluster 1's session and a download on it carry
// on, cluster 2's routes stay, and it reconnects when gtund2 is back.
func TestManyClustersOverlappingCIDRs(t *testing.T) {
	t.Parallel()
	c := newClusters(t)
	ckey, cpub := c.key(t, "vm")
	const routes = `routes = ["10.244.0.0/16", "10.96.0.0/16"]`
	g1 := c.gtund1(routes + "\n" + `map = ["10.244.0.0/16=100.100.0.0/16", "10.96.0.0/16=100.110.0.0/16"]`)
	g2 := c.gtund2("100.64.241.0/24", routes+"\n"+`map = ["10.244.0.0/16=100.101.0.0/16", "10.96.0.0/16=100.111.0.0/16"]`)
	srv1 := c.startGtund(t, g1, c.writeServer(t, g1, cpub))
	cfg2 := c.writeServer(t, g2, cpub)
	srv2 := c.startGtund(t, g2, cfg2)
	cli := c.startClient(t, "vm", "vm", c.writeClient(t, ckey,
		serverBlock("cluster1", gwWAN, c.serverPub, ""),
		serverBlock("cluster2", testnet.GW2Wan, c.pub2, "")))
	for _, p := range []string{"100.100.0.0/16", "100.110.0.0/16", "100.101.0.0/16", "100.111.0.0/16"} {
		c.waitRoute(t, "vm", p, cli)
	}
	c.waitServers(t, 15*time.Second, "both connected, all routes installed", connected("cluster1", "cluster2"))

	// Each server's routes leave with the address that server gave.
	st := c.clientStatus(t)
	if st["cluster1"].Address != "100.64.240.2/24" || st["cluster2"].Address != "100.64.241.2/24" {
		t.Fatalf("addresses %q and %q, want one from each pool", st["cluster1"].Address, st["cluster2"].Address)
	}
	for dst, src := range map[string]string{"100.100.1.20": "100.64.240.2", "100.111.0.10": "100.64.241.2"} {
		if out := c.tp.MustExec(t, "vm", "ip", "route", "get", dst); !strings.Contains(out, "dev gtun0") || !strings.Contains(out, "src "+src) {
			t.Errorf("route to %s: %s, want dev gtun0 src %s", dst, out, src)
		}
	}

	for _, ip := range []string{"100.100.1.20", "100.101.1.20"} {
		if out, err := c.tp.Exec("vm", "ping", "-c", "3", "-i", "0.2", "-W", "2", ip); err != nil {
			t.Fatalf("ping %s: %v\n%s", ip, err, out)
		}
	}
	for url, want := range map[string]string{
		"http://100.100.1.20:8080/name": "cluster1",
		"http://100.101.1.20:8080/name": "cluster2",
		"http://100.110.0.10/name":      "cluster1", // ClusterIP, through node's DNAT
		"http://100.111.0.10/name":      "cluster2",
	} {
		c.answer(t, url, want)
	}
	// The pods see their own gateway (masquerade after the map).
	for url, want := range map[string]string{"http://100.100.1.20:8080/whoami": " cluster1", "http://100.101.1.20:8080/whoami": " cluster2"} {
		if out, err := c.curl("vm", url); err != nil || !strings.HasPrefix(out, "10.0.0.2:") || !strings.HasSuffix(strings.TrimSpace(out), want) {
			t.Errorf("%s = %q (%v)", url, out, err)
		}
	}
	// The real addresses are not reachable from vm: no route, and gtund's
	// ACL knows only the virtual names.
	if out, err := c.tp.Exec("vm", "curl", "-fsS", "--max-time", "2", "http://"+podIP+":8080/name"); err == nil {
		t.Errorf("vm reached the real pod address: %q", out)
	}
	if out, err := exec.Command(bins.gtun, "status", "--socket", c.clientSocket("vm")).CombinedOutput(); err != nil {
		t.Errorf("gtun status: %v\n%s", err, out)
	} else {
		t.Logf("gtun status:\n%s", out)
	}
	if out, err := exec.Command(bins.gtund, "status", "--socket", c.socket(g2)).CombinedOutput(); err != nil || !strings.Contains(string(out), "map 10.244.0.0/16=100.101.0.0/16, 10.96.0.0/16=100.111.0.0/16") {
		t.Errorf("gtund status on gw2 does not show the map: %v\n%s", err, out)
	} else {
		t.Logf("gtund status on gw2:\n%s", out)
	}
	for g, want := range map[gtund]string{g1: "10.244.0.0/16=100.100.0.0/16", g2: "10.244.0.0/16=100.101.0.0/16"} {
		var sst struct{ Map []string }
		status(t, bins.gtund, c.socket(g), &sst)
		if !slices.Contains(sst.Map, want) {
			t.Errorf("gtund on %s status map %v, want %s", g.host, sst.Map, want)
		}
	}
	if out := c.tp.MustExec(t, "gw2", "nft", "list", "chain", "ip", "gtund", "prerouting"); !strings.Contains(out, `iifname "gtund0" ip daddr 100.101.0.0/16 dnat prefix to 10.244.0.0/16`) {
		t.Errorf("gw2's gtund table lacks the map:\n%s", out)
	}

	// A download from cluster 1 runs (about 16 s) while cluster 2's gtund dies.
	const size = 16 << 20
	dl := c.tp.Start(t, "vm", "", "curl", "-fsS", "--max-time", "60", "--limit-rate", "1M", "-o", "/dev/null",
		"-w", "%{size_download}", fmt.Sprintf("http://100.100.1.20:8080/bytes?n=%d", size))
	time.Sleep(time.Second)
	srv2.Kill9()
	if dl.Exited() {
		t.Fatalf("the download ended before gtund2 died (the test proves nothing): %q", dl.Log())
	}
	c.waitServers(t, 10*time.Second, "cluster2 reconnecting", func(m map[string]client.ServerStatus) bool {
		return m["cluster2"].State != "connected"
	})
	// Its routes stay in place while it is away; cluster 1 is untouched.
	for _, p := range []string{"100.101.0.0/16", "100.111.0.0/16"} {
		if out := c.tp.MustExec(t, "vm", "ip", "route", "show", p); !strings.Contains(out, "dev gtun0") {
			t.Errorf("route %s gone while cluster2 reconnects: %q", p, out)
		}
	}
	c.answer(t, "http://100.100.1.20:8080/name", "cluster1")
	if out, err := c.tp.Exec("vm", "curl", "-fsS", "--max-time", "2", "http://100.101.1.20:8080/name"); err == nil {
		t.Errorf("cluster2 answered with its gtund dead: %q", out)
	}

	srv2 = c.startGtund(t, g2, cfg2)
	d := c.waitServers(t, 15*time.Second, "cluster2 back", connected("cluster2"))
	t.Logf("CLUSTERS gtund2 restarted: cluster2 connected again %v after it listened", d.Round(time.Millisecond))
	c.answer(t, "http://100.101.1.20:8080/name", "cluster2")
	c.answer(t, "http://100.100.1.20:8080/name", "cluster1")
	// The download may finish before or after cluster2 is back (that
	// depends on the machine's load): what matters is that it crossed
	// gtund2's death and its absence intact.
	if code, err := dl.Wait(60 * time.Second); err != nil || code != 0 || strings.TrimSpace(dl.Log()) != fmt.Sprint(size) {
		t.Fatalf("download from cluster1 across gtund2's death: exit %d (%v), output %q", code, err, dl.Log())
	}
	st = c.clientStatus(t)
	if st["cluster1"].Reconnects != 0 || st["cluster2"].Reconnects != 1 {
		t.Errorf("reconnects cluster1 %d, cluster2 %d; want 0 and 1", st["cluster1"].Reconnects, st["cluster2"].Reconnects)
	}
	if st["cluster2"].Address != "100.64.241.2/24" {
		t.Errorf("cluster2 address after its restart %q, want the sticky 100.64.241.2/24", st["cluster2"].Address)
	}

	stop(t, "gtun", cli)
	stop(t, "gtund on gw", srv1)
	stop(t, "gtund on gw2", srv2)
	for _, h := range []string{"gw", "gw2"} {
		if out, _ := c.tp.Exec(h, "nft", "list", "tables"); strings.Contains(out, "gtund") {
			t.Errorf("nftables table left in %s: %s", h, out)
		}
	}
	if out, _ := c.tp.Exec("vm", "ip", "link", "show", "gtun0"); strings.Contains(out, "gtun0:") {
		t.Errorf("gtun0 left in vm: %s", out)
	}
}

// A map change applies on SIGHUP: the table is rebuilt, clients get the new
// virtual routes pushed (the old ones go), and the ACL follows.
func TestMapReload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	rewrite(t, scfg, "nat = true", "nat = true\nmap = [\"10.244.0.0/16=100.100.0.0/16\"]")
	srv := e.startServer(t, scfg)
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", "100.100.0.0/16", cli)
	e.waitRoute(t, "vm", "10.96.0.0/12", cli) // not mapped: served as it is
	e.reach(t, "vm", "http://100.100.1.20:8080/", 10*time.Second)
	e.reach(t, "vm", "http://"+clusterIP+"/", 10*time.Second)

	rewrite(t, scfg, `map = ["10.244.0.0/16=100.100.0.0/16"]`, `map = ["10.244.0.0/16=100.102.0.0/16"]`)
	if err := srv.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.waitRoute(t, "vm", "100.102.0.0/16", cli)
	testnet.Eventually(t, 10*time.Second, func() error {
		if out, _ := e.tp.Exec("vm", "ip", "route", "show", "100.100.0.0/16"); strings.TrimSpace(out) != "" {
			return fmt.Errorf("old virtual route still there: %q", out)
		}
		return nil
	})
	e.reach(t, "vm", "http://100.102.1.20:8080/", 10*time.Second)
	if out := e.tp.MustExec(t, "gw", "nft", "list", "chain", "ip", "gtund", "prerouting"); !strings.Contains(out, "100.102.0.0/16 dnat prefix to 10.244.0.0/16") ||
		strings.Contains(out, "100.100.0.0/16") {
		t.Errorf("table after reload:\n%s", out)
	}
	// The old virtual name is gone: even routed into the tunnel by hand,
	// gtun has no session for it (and gtund's ACL, see pkg/server's tests,
	// would refuse it).
	e.tp.MustExec(t, "vm", "ip", "route", "add", "100.100.1.20/32", "dev", "gtun0")
	if out, err := e.tp.Exec("vm", "ping", "-c", "1", "-W", "1", "100.100.1.20"); err == nil {
		t.Errorf("the old virtual name still answers:\n%s", out)
	}
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if cst.Drops["no_route"] == 0 {
		t.Errorf("gtun counted no no_route drop: %v", cst.Drops)
	}
	e.tp.MustExec(t, "vm", "ip", "route", "del", "100.100.1.20/32", "dev", "gtun0")
	stop(t, "gtun", cli)
	stop(t, "gtund", srv)
	e.noLeftovers(t)
}

// Two clusters that both call themselves cluster.local, one VM: the client
// names them c1 and c2 (dns_suffix). web.default.svc.c1 is asked of
// cluster 1's DNS as web.default.svc.cluster.local and answered back under
// c1, with cluster 1's virtual address (gtund's proxy follows its map);
// web.default.svc.c2 the same of cluster 2, over UDP and TCP, both
// configured at once; and each address reaches its own cluster's pod.
func TestManyClustersSameDomainBySuffix(t *testing.T) {
	t.Parallel()
	testnet.Require(t, "dig")
	c := newClusters(t)
	poddns := testnet.GoBuild(t, "./tools/poddns")
	const web = "web.default.svc.cluster.local"
	kube := map[string]*testnet.Proc{}
	for pod, node := range map[string]string{"pod": "node", "pod2": "node2"} {
		kube[pod] = c.tp.Start(t, pod, filepath.Join(c.dir, pod+"-dns.log"), poddns, "-listen", ":53", "-record", web+"="+podIP)
		testnet.Eventually(t, 10*time.Second, func() error {
			if out, err := c.dig(node, clusterIP, web, "+short"); err != nil || out != podIP {
				return fmt.Errorf("kube-dns of %s not answering yet: %v %q", pod, err, out)
			}
			return nil
		})
	}
	ckey, cpub := c.key(t, "vm")
	const dnsLine = `dns = { servers = ["10.96.0.10"], domains = ["cluster.local"] }`
	const routes = `routes = ["10.244.0.0/16", "10.96.0.0/16"]`
	g1 := c.gtund1(routes + "\n" + `map = ["10.244.0.0/16=100.100.0.0/16", "10.96.0.0/16=100.110.0.0/16"]` + "\n" + dnsLine)
	g2 := c.gtund2("100.64.241.0/24", routes+"\n"+`map = ["10.244.0.0/16=100.101.0.0/16", "10.96.0.0/16=100.111.0.0/16"]`+"\n"+dnsLine)
	c.startGtund(t, g1, c.writeServer(t, g1, cpub))
	c.startGtund(t, g2, c.writeServer(t, g2, cpub))
	c.startClient(t, "vm", "vm", c.writeClient(t, ckey,
		serverBlock("cluster1", gwWAN, c.serverPub, `dns_suffix = "c1"`),
		serverBlock("cluster2", testnet.GW2Wan, c.pub2, `dns_suffix = "c2"`)))
	c.waitServers(t, 15*time.Second, "both connected with the suffixes applied", func(m map[string]client.ServerStatus) bool {
		return connected("cluster1", "cluster2")(m) && slices.Equal(m["cluster1"].DNSDomains, []string{"cluster.local"}) &&
			slices.Equal(m["cluster2"].DNSDomains, []string{"cluster.local"})
	})
	const fwd = "100.64.240.2" // the forwarder, on the first server's tunnel address
	testnet.Eventually(t, 10*time.Second, func() error {
		var st client.Status
		if err := tryStatus(bins.gtun, c.clientSocket("vm"), &st); err != nil {
			return err
		}
		if st.DNS == nil || st.DNS.Listen != fwd+":53" || !slices.Equal(st.DNS.Domains, []string{"c1", "c2"}) {
			return fmt.Errorf("dns status %+v, want c1 and c2 routed by the forwarder on %s", st.DNS, fwd)
		}
		return nil
	})
	for _, proto := range []string{"+notcp", "+tcp"} {
		for suffix, want := range map[string]string{"c1": "100.100.1.20", "c2": "100.101.1.20"} {
			name := "web.default.svc." + suffix
			out, err := c.dig("vm", fwd, name, "+noall", "+answer", proto)
			if got := strings.Join(strings.Fields(out), " "); err != nil || got != name+". 30 IN A "+want {
				t.Errorf("dig %s %s: %v %q, want %s under its own name", proto, name, err, out, want)
			}
		}
	}
	c.answer(t, "http://100.100.1.20:8080/name", "cluster1")
	c.answer(t, "http://100.101.1.20:8080/name", "cluster2")
	// Each cluster's DNS was asked the cluster.local name, by its gtund.
	for pod, proc := range kube {
		if n := strings.Count(proc.Log(), "query "+web+". A from "+gwVPCAddr+":"); n != 2 {
			t.Errorf("kube-dns of %s got %d queries for %s from its gtund, want 2:\n%s", pod, n, web, proc.Log())
		}
		if strings.Contains(proc.Log(), ".c1.") || strings.Contains(proc.Log(), ".c2.") {
			t.Errorf("kube-dns of %s saw a suffixed name:\n%s", pod, proc.Log())
		}
	}
	st := c.clientStatus(t)
	for name, suffix := range map[string]string{"cluster1": "c1", "cluster2": "c2"} {
		if s := st[name]; s.DNSSuffix != suffix || s.DNSCluster != "cluster.local" || s.DNSRenamed != 2 || s.DNSSuffixNote != "" {
			t.Errorf("%s: dns suffix %q of %q, %d renamed, note %q; want %s, 2 renamed", name, s.DNSSuffix, s.DNSCluster, s.DNSRenamed, s.DNSSuffixNote, suffix)
		}
	}
	out, err := exec.Command(bins.gtun, "status", "--socket", c.clientSocket("vm")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dns suffix: c2 names are asked as cluster.local (2 answers renamed)") {
		t.Errorf("human status lacks the suffix line (%v):\n%s", err, out)
	} else {
		t.Logf("gtun status:\n%s", out)
	}
}

// [[server]] blocks are live: while a download from cluster 1 runs, a
// SIGHUP with cluster 2 added connects it (its routes, address, split DNS
// under its suffix and, in gateway mode, its SNAT rules appear), and a
// SIGHUP with its dns_suffix and transport changed reconnects it alone
// (the new suffix applies, the old one goes), and a SIGHUP with it removed
// takes all of that away again and ends its session at its gtund; the
// download arrives intact and cluster 1 never reconnects.
func TestServerAddedAndRemovedLive(t *testing.T) {
	t.Parallel()
	testnet.Require(t, "dig", "sha256sum")
	c := newClusters(t)
	poddns := testnet.GoBuild(t, "./tools/poddns")
	const web = "web.default.svc.cluster.local"
	c.tp.Start(t, "pod2", filepath.Join(c.dir, "pod2-dns.log"), poddns, "-listen", ":53", "-record", web+"="+podIP)
	ckey, cpub := c.key(t, "vm")
	const routes = `routes = ["10.244.0.0/16", "10.96.0.0/16"]`
	g1 := c.gtund1(routes + "\n" + `map = ["10.244.0.0/16=100.100.0.0/16", "10.96.0.0/16=100.110.0.0/16"]`)
	g2 := c.gtund2("100.64.241.0/24", routes+"\n"+`map = ["10.244.0.0/16=100.101.0.0/16", "10.96.0.0/16=100.111.0.0/16"]`+"\n"+
		`dns = { servers = ["10.96.0.10"], domains = ["cluster.local"] }`+"\n"+`transports = ["tcp", "udp"]`)
	c.startGtund(t, g1, c.writeServer(t, g1, cpub))
	c.startGtund(t, g2, c.writeServer(t, g2, cpub))
	one := serverBlock("cluster1", gwWAN, c.serverPub, "")
	two := serverBlock("cluster2", testnet.GW2Wan, c.pub2, `dns_suffix = "c2"`)
	writeClient := func(servers ...string) string { // in gateway mode, with masquerade
		p := c.writeClient(t, ckey, servers...)
		rewrite(t, p, "tun = \"gtun0\"\n", "tun = \"gtun0\"\ngateway = true\n")
		return p
	}
	postrouting := func() string {
		return c.tp.MustExec(t, "vm", "nft", "list", "chain", "ip", "gtun-gtun0", "postrouting")
	}
	const snat1, snat2 = "ip daddr 100.100.0.0/16 snat to 100.64.240.2", "ip daddr 100.101.0.0/16 snat to 100.64.241.2"
	cli := c.startClient(t, "vm", "vm", writeClient(one))
	c.waitServers(t, 15*time.Second, "cluster1 connected", connected("cluster1"))
	c.answer(t, "http://100.100.1.20:8080/name", "cluster1")

	// About 20 s at 1 MB/s: it runs across the three reloads.
	const size = 20_000_000
	want := patternSHA256(size)
	dl := make(chan error, 1)
	go func() {
		out, err := c.tp.Exec("vm", "sh", "-c", fmt.Sprintf("curl -fsS --max-time 60 --limit-rate 1M http://100.100.1.20:8080/bytes?n=%d | sha256sum", size))
		if err == nil && !strings.HasPrefix(out, want) {
			err = fmt.Errorf("sha256 %q, want %s", out, want)
		}
		dl <- err
	}()
	time.Sleep(time.Second)

	writeClient(one, two)
	hup(t, "gtun", cli)
	took := c.waitServers(t, 15*time.Second, "cluster2 added and connected", connected("cluster1", "cluster2"))
	t.Logf("LIVE cluster2 added: connected with its routes %v after the SIGHUP", took.Round(time.Millisecond))
	c.answer(t, "http://100.101.1.20:8080/name", "cluster2")
	const fwd = "100.64.240.2"
	testnet.Eventually(t, 10*time.Second, func() error {
		if out, err := c.dig("vm", fwd, "web.default.svc.c2", "+short"); err != nil || out != "100.101.1.20" {
			return fmt.Errorf("web.default.svc.c2: %v %q", err, out)
		}
		return nil
	})
	if out := c.tp.MustExec(t, "vm", "ip", "-4", "addr", "show", "gtun0"); !strings.Contains(out, "100.64.241.2/24") {
		t.Errorf("gtun0 lacks cluster2's address:\n%s", out)
	}
	testnet.Eventually(t, 10*time.Second, func() error {
		if out := postrouting(); !strings.Contains(out, snat1) || !strings.Contains(out, snat2) {
			return fmt.Errorf("gateway SNAT rules of both servers missing:\n%s", out)
		}
		return nil
	})

	// cluster2 changed: another suffix, another transport. It alone
	// reconnects; its new suffix resolves, the old one no longer does.
	writeClient(one, serverBlock("cluster2", testnet.GW2Wan, c.pub2, "dns_suffix = \"k2\"\ntransport = \"udp\""))
	hup(t, "gtun", cli)
	c.waitServers(t, 15*time.Second, "cluster2 reconnected over udp", func(m map[string]client.ServerStatus) bool {
		return connected("cluster2")(m) && m["cluster2"].Transport == "udp" && m["cluster2"].Reconnects == 1
	})
	testnet.Eventually(t, 10*time.Second, func() error {
		if out, err := c.dig("vm", fwd, "web.default.svc.k2", "+short"); err != nil || out != "100.101.1.20" {
			return fmt.Errorf("web.default.svc.k2: %v %q", err, out)
		}
		return nil
	})
	if out, _ := c.dig("vm", fwd, "web.default.svc.c2", "+short"); out == "100.101.1.20" {
		t.Errorf("the old suffix c2 still answers after the reload")
	}
	if s := c.clientStatus(t)["cluster1"]; s.Reconnects != 0 {
		t.Errorf("cluster1 reconnected (%d) when cluster2 changed", s.Reconnects)
	}

	writeClient(one)
	hup(t, "gtun", cli)
	c.waitServers(t, 10*time.Second, "cluster2 removed", func(m map[string]client.ServerStatus) bool {
		_, there := m["cluster2"]
		return !there
	})
	select {
	case err := <-dl:
		t.Fatalf("the download ended before cluster2 was removed (the test proves nothing): %v", err)
	default:
	}
	testnet.Eventually(t, 10*time.Second, func() error {
		for _, p := range []string{"100.101.0.0/16", "100.111.0.0/16"} {
			if out, _ := c.tp.Exec("vm", "ip", "route", "show", p); strings.TrimSpace(out) != "" {
				return fmt.Errorf("route %s still there: %q", p, out)
			}
		}
		if out := c.tp.MustExec(t, "vm", "ip", "-4", "addr", "show", "gtun0"); strings.Contains(out, "100.64.241.2") {
			return fmt.Errorf("cluster2's address still on gtun0:\n%s", out)
		}
		if out := postrouting(); strings.Contains(out, snat2) || !strings.Contains(out, snat1) {
			return fmt.Errorf("gateway SNAT rules after cluster2's removal, want cluster1's alone:\n%s", out)
		}
		var st client.Status
		if err := tryStatus(bins.gtun, c.clientSocket("vm"), &st); err != nil {
			return err
		}
		if st.DNS != nil && slices.Contains(st.DNS.Domains, "k2") {
			return fmt.Errorf("split dns still routes c2: %+v", st.DNS)
		}
		var sst struct {
			Peers []struct {
				Name      string `json:"name"`
				Connected bool   `json:"connected"`
			} `json:"peers"`
		}
		if err := tryStatus(bins.gtund, c.socket(g2), &sst); err != nil {
			return err
		}
		for _, p := range sst.Peers {
			if p.Connected {
				return fmt.Errorf("gtund2 still has a session of %s", p.Name)
			}
		}
		return nil
	})
	if out, _ := c.dig("vm", fwd, "web.default.svc.k2", "+short"); out == "100.101.1.20" {
		t.Errorf("web.default.svc.k2 still answered after cluster2 was removed")
	}
	if err := <-dl; err != nil {
		t.Fatalf("download from cluster1 across the add and the removal of cluster2: %v", err)
	}
	if st := c.clientStatus(t)["cluster1"]; st.Reconnects != 0 || st.State != "connected" {
		t.Errorf("cluster1: %s, %d reconnects; want connected throughout", st.State, st.Reconnects)
	}
	if !strings.Contains(cli.Log(), `msg="reload: server removed; closing its session, its routes and split dns are gone" server=cluster2`) {
		t.Errorf("the removal was not logged")
	}
}
