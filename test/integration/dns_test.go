package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/server"
	"github.com/gtun/gtun/pkg/splitdns"
)

const (
	clusterName = "demo.default.svc.cluster.local"
	otherName   = "www.example.test"
	otherAddr   = "192.0.2.7"
)

// netnsResolvConf makes `ip netns exec NS` (which testnet.Start uses) show
// processes in NS a resolv.conf naming nameserver, and removes it after
// the test.
func netnsResolvConf(t *testing.T, ns, nameserver string) {
	t.Helper()
	dir := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+nameserver+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dig asks server for name's A record and returns the answer section
// (+short) or, with status, the header's status.
func (e *env) dig(host, server, name string, args ...string) (string, error) {
	out, err := e.tp.Exec(host, append([]string{"dig", "@" + server, name, "A", "+time=3", "+tries=1"}, args...)...)
	return strings.TrimSpace(out), err
}

// Split DNS: gtund pushes dns = { servers = ["10.96.0.10"], domains =
// ["cluster.local"] }; with no systemd-resolved in the namespace, gtun runs
// its forwarder on its tunnel address. A cluster name is answered by the
// cluster's DNS server (a pod behind the node's ClusterIP DNAT, which sees
// gtund's address: the query crossed the tunnel), another name by vm's own
// resolver (from /etc/resolv.conf), and after gtun stops nothing listens on
// port 53 of the tunnel address.
func TestSplitDNSForwarder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "dig", "ss")
	poddns := testnet.GoBuild(t, "./tools/poddns")
	kubeDNS := e.tp.Start(t, "pod", filepath.Join(e.dir, "kube-dns.log"), poddns, "-listen", ":53", "-record", clusterName+"="+clusterIP)
	vmDNS := e.tp.Start(t, "vm", filepath.Join(e.dir, "vm-dns.log"), poddns, "-listen", "127.0.0.1:53", "-record", otherName+"="+otherAddr)
	netnsResolvConf(t, e.tp.NS("vm"), "127.0.0.1")
	testnet.Eventually(t, 10*time.Second, func() error {
		if out, err := e.dig("node", clusterIP, clusterName, "+short"); err != nil || out != clusterIP {
			return fmt.Errorf("kube-dns not answering at the ClusterIP yet: %v %q", err, out)
		}
		return nil
	})

	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	b, _ := os.ReadFile(scfg)
	os.WriteFile(scfg, []byte(strings.Replace(string(b), "keepalive = \"1s\"\n",
		"keepalive = \"1s\"\ndns = { servers = [\""+clusterIP+"\"], domains = [\"cluster.local\"] }\n", 1)), 0o600)
	srv := e.startServer(t, scfg)
	// Gateway mode, so that vm2 (VPC A) can use the forwarder too.
	cli := e.startClient(t, "vm", "vm", e.gatewayClientConfig(t, "vm", ckey, "gateway = true\n"))
	e.waitRoute(t, "vm", "10.96.0.0/12", cli)

	const tunAddr = "100.64.240.2"
	var cst client.Status
	testnet.Eventually(t, 10*time.Second, func() error {
		if err := tryStatus(bins.gtun, e.clientSocket("vm"), &cst); err != nil {
			return err
		}
		if cst.DNS == nil || cst.DNS.Mode != splitdns.ModeForwarder || cst.DNS.Listen != tunAddr+":53" {
			return fmt.Errorf("dns status %+v", cst.DNS)
		}
		return nil
	})
	for _, proto := range []string{"+notcp", "+tcp"} {
		if out, err := e.dig("vm", tunAddr, clusterName, "+short", proto); err != nil || out != clusterIP {
			t.Errorf("dig %s %s: %v %q, want %s", proto, clusterName, err, out, clusterIP)
		}
		if out, err := e.dig("vm", tunAddr, otherName, "+short", proto); err != nil || out != otherAddr {
			t.Errorf("dig %s %s: %v %q, want %s (vm's own resolver)", proto, otherName, err, out, otherAddr)
		}
	}
	// A neighbour in gateway mode reaches the forwarder through vm.
	if out, err := e.dig("vm2", tunAddr, clusterName, "+short"); err != nil || out != clusterIP {
		t.Errorf("dig from vm2 %s: %v %q, want %s", clusterName, err, out, clusterIP)
	}
	if out, _ := e.dig("vm", tunAddr, "nothere.default.svc.cluster.local"); !strings.Contains(out, "status: NXDOMAIN") {
		t.Errorf("unknown cluster name: want NXDOMAIN from kube-dns:\n%s", out)
	}
	// The cluster's DNS server saw the queries come from gtund's address,
	// so they went through the tunnel; vm's resolver never saw one.
	if log := kubeDNS.Log(); !strings.Contains(log, "query "+clusterName+". A from "+gwVPCAddr+":") {
		t.Errorf("kube-dns did not see the query from gtund's %s:\n%s", gwVPCAddr, log)
	}
	if log := vmDNS.Log(); strings.Contains(log, "cluster.local") || !strings.Contains(log, otherName) {
		t.Errorf("vm's resolver got the wrong queries:\n%s", log)
	}
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if q := cst.DNS.Queries; q["cluster"] < 4 || q["system"] != 2 {
		t.Errorf("forwarder counted %v, want cluster >= 4, system 2", q)
	}
	out, err := exec.Command(bins.gtun, "status", "--socket", e.clientSocket("vm")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "split dns: cluster.local via "+clusterIP+", forwarder on "+tunAddr+":53") {
		t.Errorf("human status lacks the split dns line (%v):\n%s", err, out)
	}
	var sst server.Status
	status(t, bins.gtund, e.serverSocket(), &sst)
	if sst.DNS == nil || len(sst.DNS.Servers) != 1 || sst.DNS.Servers[0] != clusterIP {
		t.Errorf("gtund status dns = %+v", sst.DNS)
	}

	stop(t, "gtun", cli)
	if out := e.tp.MustExec(t, "vm", "ss", "-Hlnu"); strings.Contains(out, tunAddr+":53") {
		t.Errorf("something still listens on %s:53 (udp) after gtun stopped:\n%s", tunAddr, out)
	}
	if out := e.tp.MustExec(t, "vm", "ss", "-Hlnt"); strings.Contains(out, tunAddr+":53") {
		t.Errorf("something still listens on %s:53 (tcp) after gtun stopped:\n%s", tunAddr, out)
	}
	stop(t, "gtund", srv)
	e.noLeftovers(t)
}

// A server's pushed domains are applied only within what the client
// accepts: gtund pushes cluster.local, com and example.com; by default gtun
// applies cluster.local and refuses the two public ones (logged, in gtun
// status), so www.example.com is still answered by vm's own resolver, not
// by the cluster's DNS (which would answer with an address of its own).
// Listing example.com in the [[server]]'s dns_domains and reloading hands
// it to the cluster; com stays refused.
func TestSplitDNSRefusesPublicDomains(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "dig")
	const hijacked, public = "10.244.66.66", "192.0.2.8"
	poddns := testnet.GoBuild(t, "./tools/poddns")
	kubeDNS := e.tp.Start(t, "pod", filepath.Join(e.dir, "kube-dns.log"), poddns, "-listen", ":53",
		"-record", clusterName+"="+clusterIP, "-record", "www.example.com="+hijacked)
	e.tp.Start(t, "vm", filepath.Join(e.dir, "vm-dns.log"), poddns, "-listen", "127.0.0.1:53", "-record", "www.example.com="+public)
	netnsResolvConf(t, e.tp.NS("vm"), "127.0.0.1")
	testnet.Eventually(t, 10*time.Second, func() error {
		if out, err := e.dig("node", clusterIP, clusterName, "+short"); err != nil || out != clusterIP {
			return fmt.Errorf("kube-dns not answering at the ClusterIP yet: %v %q", err, out)
		}
		return nil
	})

	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	rewrite(t, scfg, "keepalive = \"1s\"\n",
		"keepalive = \"1s\"\ndns = { servers = [\""+clusterIP+"\"], domains = [\"cluster.local\", \"com\", \"example.com\"] }\n")
	e.startServer(t, scfg)
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	cli := e.startClient(t, "vm", "vm", ccfg)
	e.waitRoute(t, "vm", "10.96.0.0/12", cli)

	const tunAddr = "100.64.240.2"
	waitDNS := func(applied ...string) client.ServerStatus {
		t.Helper()
		var cst client.Status
		testnet.Eventually(t, 10*time.Second, func() error {
			if err := tryStatus(bins.gtun, e.clientSocket("vm"), &cst); err != nil {
				return err
			}
			if cst.DNS == nil || cst.DNS.Mode != splitdns.ModeForwarder || !slices.Equal(cst.DNS.Domains, applied) ||
				!slices.Equal(cst.Servers[0].DNSDomains, applied) {
				return fmt.Errorf("dns status %+v, server's domains %v; want %v applied", cst.DNS, cst.Servers[0].DNSDomains, applied)
			}
			return nil
		})
		return cst.Servers[0]
	}
	refused := func(s client.ServerStatus) []string {
		var out []string
		for _, r := range s.DNSRefused {
			out = append(out, r.Domain)
		}
		return out
	}

	s := waitDNS("cluster.local")
	if got := refused(s); !slices.Equal(got, []string{"com", "example.com"}) {
		t.Errorf("refused %v (%+v), want com and example.com", got, s.DNSRefused)
	}
	if out, err := e.dig("vm", tunAddr, "www.example.com", "+short"); err != nil || out != public {
		t.Errorf("www.example.com: %v %q, want %s from vm's own resolver", err, out, public)
	}
	if out, err := e.dig("vm", tunAddr, clusterName, "+short"); err != nil || out != clusterIP {
		t.Errorf("%s: %v %q, want %s", clusterName, err, out, clusterIP)
	}
	if strings.Contains(kubeDNS.Log(), "example.com") {
		t.Errorf("the cluster's DNS saw a query for a refused domain:\n%s", kubeDNS.Log())
	}
	out, err := exec.Command(bins.gtun, "status", "--socket", e.clientSocket("vm")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "split dns REFUSED: com (") || !strings.Contains(string(out), "split dns applied: cluster.local") {
		t.Errorf("human status does not show the refused domains (%v):\n%s", err, out)
	} else {
		t.Logf("gtun status:\n%s", out)
	}
	if !strings.Contains(cli.Log(), "pushed dns domain refused") {
		t.Errorf("the refusal was not logged")
	}

	// The operator trusts this cluster with example.com.
	rewrite(t, ccfg, "transport = \"tcp\"\n", "transport = \"tcp\"\ndns_domains = [\"cluster.local\", \"example.com\"]\n")
	hup(t, "gtun", cli)
	s = waitDNS("cluster.local", "example.com")
	if got := refused(s); !slices.Equal(got, []string{"com"}) {
		t.Errorf("refused %v after the reload, want com", got)
	}
	if out, err := e.dig("vm", tunAddr, "www.example.com", "+short"); err != nil || out != hijacked {
		t.Errorf("www.example.com after dns_domains lists it: %v %q, want %s from the cluster", err, out, hijacked)
	}
}

// A mapped cluster's DNS answers reach the client under the virtual
// prefixes: gtund serves 10.244.0.0/16 as 100.100.0.0/16 and 10.96.0.0/12
// as 100.112.0.0/12, and pushes its own DNS proxy (its tunnel address) as
// the split DNS server. The cluster's DNS answers 10.244.1.20; the client
// gets 100.100.1.20 (TTL kept), over UDP and TCP, through gtun's forwarder
// and asking gtund's proxy directly, and reaches the pod by it; so does
// vm2 behind vm in gateway mode, through vm's forwarder. A large answer
// comes with TC over UDP and whole over TCP; a reverse lookup of the
// virtual address is answered from the real one's.
func TestDNSFollowsTheMap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "dig", "ss")
	const dnsName = "kube-dns.kube-system.svc.cluster.local"
	// A headless Service with 40 pods: an answer larger than 512 bytes.
	const bigName, bigN = "big.default.svc.cluster.local", 40
	poddns := testnet.GoBuild(t, "./tools/poddns")
	args := []string{poddns, "-listen", ":53", "-record", clusterName + "=" + podIP, "-record", dnsName + "=" + clusterIP}
	for i := 1; i <= bigN; i++ {
		args = append(args, "-record", fmt.Sprintf("%s=10.244.2.%d", bigName, i))
	}
	kubeDNS := e.tp.Start(t, "pod", filepath.Join(e.dir, "kube-dns.log"), args...)
	testnet.Eventually(t, 10*time.Second, func() error {
		if out, err := e.dig("node", clusterIP, clusterName, "+short"); err != nil || out != podIP {
			return fmt.Errorf("kube-dns not answering at the ClusterIP yet: %v %q", err, out)
		}
		return nil
	})
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	rewrite(t, scfg, "nat = true", "nat = true\nmap = [\"10.244.0.0/16=100.100.0.0/16\", \"10.96.0.0/12=100.112.0.0/12\"]\n"+
		"dns = { servers = [\""+clusterIP+"\"], domains = [\"cluster.local\", \"244.10.in-addr.arpa\"] }")
	srv := e.startServer(t, scfg)
	// Gateway mode, so that vm2 (VPC A) can use the forwarder too.
	cli := e.startClient(t, "vm", "vm", e.gatewayClientConfig(t, "vm", ckey, "gateway = true\n"))
	e.waitRoute(t, "vm", "100.100.0.0/16", cli)

	const tunAddr, gwTun = "100.64.240.2", "100.64.240.1"
	testnet.Eventually(t, 10*time.Second, func() error {
		var cst client.Status
		if err := tryStatus(bins.gtun, e.clientSocket("vm"), &cst); err != nil {
			return err
		}
		if cst.DNS == nil || !slices.Equal(cst.DNS.Servers, []string{gwTun}) || cst.DNS.Listen != tunAddr+":53" ||
			!slices.Equal(cst.DNS.Domains, []string{"100.100.in-addr.arpa", "cluster.local"}) {
			return fmt.Errorf("dns status %+v, want gtund's proxy %s as the server, the virtual reverse zone", cst.DNS, gwTun)
		}
		return nil
	})
	for _, at := range []string{tunAddr, gwTun} {
		for _, proto := range []string{"+notcp", "+tcp"} {
			if out, err := e.dig("vm", at, clusterName, "+noall", "+answer", proto); err != nil || strings.Join(strings.Fields(out), " ") != clusterName+". 30 IN A 100.100.1.20" {
				t.Errorf("dig @%s %s %s: %v %q, want 100.100.1.20 with its TTL of 30", at, proto, clusterName, err, out)
			}
			if out, err := e.dig("vm", at, dnsName, "+short", proto); err != nil || out != "100.112.0.10" {
				t.Errorf("dig @%s %s %s: %v %q, want 100.112.0.10", at, proto, dnsName, err, out)
			}
		}
	}
	if out, _ := e.dig("vm", tunAddr, "nothere.default.svc.cluster.local"); !strings.Contains(out, "status: NXDOMAIN") {
		t.Errorf("unknown cluster name: want NXDOMAIN from kube-dns:\n%s", out)
	}
	// A large answer: over UDP (512 bytes) it comes truncated with TC;
	// dig then asks again over TCP and gets all 40, every one mapped.
	for _, at := range []string{tunAddr, gwTun} {
		out, _ := e.dig("vm", at, bigName, "+bufsize=512", "+notcp", "+ignore")
		if !regexp.MustCompile(`flags:[a-z ]* tc[ ;]`).MatchString(out) {
			t.Errorf("dig @%s %s over UDP with 512 bytes: want TC\n%s", at, bigName, out)
		}
		out, err := e.dig("vm", at, bigName, "+bufsize=512", "+short")
		addrs := strings.Fields(out)
		if err != nil || len(addrs) != bigN {
			t.Errorf("dig @%s %s with its retry over TCP: %v, %d addresses, want %d:\n%s", at, bigName, err, len(addrs), bigN, out)
		}
		for _, a := range addrs {
			if !strings.HasPrefix(a, "100.100.2.") {
				t.Errorf("dig @%s %s: %s is not mapped", at, bigName, a)
			}
		}
	}
	// A reverse lookup of the virtual address: the pushed reverse zone is
	// the virtual one, and the cluster is asked for the real address.
	for _, proto := range []string{"+notcp", "+tcp"} {
		out, err := e.tp.Exec("vm", "dig", "@"+tunAddr, "-x", "100.100.1.20", "+noall", "+answer", "+time=3", "+tries=1", proto)
		if got := strings.Join(strings.Fields(out), " "); err != nil || got != "20.1.100.100.in-addr.arpa. 30 IN PTR "+clusterName+"." {
			t.Errorf("dig -x 100.100.1.20 %s: %v %q, want %s", proto, err, out, clusterName)
		}
	}
	if log := kubeDNS.Log(); !strings.Contains(log, "query 20.1.244.10.in-addr.arpa. PTR from "+gwVPCAddr+":") {
		t.Errorf("kube-dns was not asked the real reverse name:\n%s", log)
	}
	// The name's address works, from vm and from its neighbour vm2, which
	// asks vm's forwarder.
	e.reach(t, "vm", "http://100.100.1.20:8080/", 10*time.Second)
	if out, err := e.dig("vm2", tunAddr, clusterName, "+short"); err != nil || out != "100.100.1.20" {
		t.Errorf("dig from vm2 %s: %v %q, want 100.100.1.20", clusterName, err, out)
	}
	e.reach(t, "vm2", "http://100.100.1.20:8080/", 10*time.Second)
	// The cluster's DNS saw gtund's proxy ask (from gtund's VPC address).
	if log := kubeDNS.Log(); !strings.Contains(log, "query "+clusterName+". A from "+gwVPCAddr+":") {
		t.Errorf("kube-dns did not see the query from gtund's %s:\n%s", gwVPCAddr, log)
	}
	var sst server.Status
	status(t, bins.gtund, e.serverSocket(), &sst)
	if p := sst.DNS.Proxy; p == nil || p.Listen != gwTun+":53" || p.Rewritten < 12 || p.Records < 8+4*bigN || p.Reversed != 2 || p.Queries["answered"] < 13 {
		t.Errorf("gtund dns proxy status %+v, want at least 12 rewritten answers of 13, %d records, 2 reverse lookups", p, 8+4*bigN)
	}
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if !cst.Servers[0].DNSMapped {
		t.Errorf("gtun status does not say the server's DNS follows its map: %+v", cst.Servers[0])
	}
	if out, err := exec.Command(bins.gtun, "status", "--socket", e.clientSocket("vm")).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "split dns applied: cluster.local, 100.100.in-addr.arpa (via "+gwTun+", the server's proxy: answers follow its map)") {
		t.Errorf("gtun status (human) does not say the answers follow the map (%v):\n%s", err, out)
	}
	out, err := exec.Command(bins.gtund, "status", "--socket", e.serverSocket()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dns proxy on "+gwTun+":53, answers follow the map") {
		t.Errorf("gtund status lacks the dns proxy line (%v):\n%s", err, out)
	} else {
		t.Logf("gtund status:\n%s", out)
	}
	// Nothing else on gtund's host is open to the peer: ssh to the gateway
	// address stays dropped.
	if out, err := e.tp.Exec("vm", "curl", "-sS", "--max-time", "1", "http://"+gwTun+":22/"); err == nil {
		t.Errorf("reached port 22 of gtund's address: %q", out)
	}

	stop(t, "gtun", cli)
	stop(t, "gtund", srv)
	for _, flag := range []string{"-Hlnu", "-Hlnt"} {
		if out := e.tp.MustExec(t, "gw", "ss", flag); strings.Contains(out, gwTun+":53") {
			t.Errorf("something still listens on %s:53 after gtund stopped:\n%s", gwTun, out)
		}
	}
	e.noLeftovers(t)
}

// The same for AAAA on the dual-stack topology: gtund maps the pod's IPv6
// CIDR to fd00:100:244::/56 (and its IPv4 one as before); the cluster's DNS
// answers the pod's name with its real IPv6 and IPv4 addresses, the client
// gets both virtual ones, over UDP and TCP, and reaches the pod over IPv6
// by the AAAA answer.
func TestDNSFollowsTheMapIPv6(t *testing.T) {
	t.Parallel()
	e := newEnv6(t, "dig")
	const (
		virt6 = "fd00:100:244::/56"
		podV6 = "fd00:100:244:1::20"
	)
	poddns := testnet.GoBuild(t, "./tools/poddns")
	e.tp.Start(t, "pod", filepath.Join(e.dir, "kube-dns.log"), poddns, "-listen", ":53",
		"-record", clusterName+"="+podIP, "-record", clusterName+"="+testnet.PodIP6)
	ckey, cpub := e.key(t, "vm")
	mapKey := `map = ["10.244.0.0/16=100.100.0.0/16", "` + testnet.PodCIDR6 + `=` + virt6 + `"]` + "\n" +
		`dns = { servers = ["` + clusterIP + `"], domains = ["cluster.local"] }`
	scfg := e.serverConfig6(t, []string{routesV6, routesV6 + "\n" + mapKey}, peer{name: "vm", pub: cpub})
	srv := e.startServer(t, scfg)
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", virt6, cli)
	const tunAddr = "100.64.240.2"
	testnet.Eventually(t, 10*time.Second, func() error {
		if out, err := e.dig("vm", tunAddr, clusterName, "+short"); err != nil || out != "100.100.1.20" {
			return fmt.Errorf("forwarder not answering with the virtual address yet: %v %q", err, out)
		}
		return nil
	})
	for _, proto := range []string{"+notcp", "+tcp"} {
		out, err := e.tp.Exec("vm", "dig", "@"+tunAddr, clusterName, "AAAA", "+noall", "+answer", "+time=3", "+tries=1", proto)
		if got := strings.Join(strings.Fields(out), " "); err != nil || got != clusterName+". 30 IN AAAA "+podV6 {
			t.Errorf("dig AAAA %s: %v %q, want %s with its TTL", proto, err, out, podV6)
		}
		if out, err := e.dig("vm", tunAddr, clusterName, "+short", proto); err != nil || out != "100.100.1.20" {
			t.Errorf("dig A %s: %v %q, want 100.100.1.20", proto, err, out)
		}
	}
	e.reach(t, "vm", "http://["+podV6+"]:8080/", 10*time.Second)
	var sst server.Status
	status(t, bins.gtund, e.serverSocket(), &sst)
	if p := sst.DNS.Proxy; p == nil || p.Records < 4 {
		t.Errorf("gtund dns proxy status %+v, want at least 4 records rewritten", p)
	}
	stop(t, "gtun", cli)
	stop(t, "gtund", srv)
	e.noLeftovers6(t)
}
