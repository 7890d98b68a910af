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

// vm2 (172.16.0.2) is a neighbour of vm in VPC A. Its default route via vm
// (172.16.0.1) plays the cloud route table entry "cluster CIDRs -> the gtun
// VM" of gateway mode.
const (
	vm2IP     = "172.16.0.2"
	vpcA      = "172.16.0.0/24"
	gwVPCAddr = "10.0.0.2"
)

// gatewayClientConfig is clientConfig with extra keys in [client].
func (e *env) gatewayClientConfig(t *testing.T, name, keyPath, extra string) string {
	t.Helper()
	path := e.clientConfig(t, name, keyPath, e.serverPub)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), "[client]\n", "[client]\n"+extra, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// whoami asks the HTTP server at url who it saw connecting.
func (e *env) whoami(t *testing.T, host, url string) string {
	t.Helper()
	out, err := e.curl(host, url)
	if err != nil {
		t.Fatalf("%s -> %s: %v", host, url, err)
	}
	return strings.TrimSpace(out)
}

// noGatewayLeftovers checks vm has no table of gtun's left after a stop.
func (e *env) noGatewayLeftovers(t *testing.T) {
	t.Helper()
	if out, _ := e.tp.Exec("vm", "nft", "list", "tables"); strings.Contains(out, "gtun") {
		t.Errorf("nftables table left in vm: %s", out)
	}
	if out, _ := e.tp.Exec("gw", "ip", "route", "show", "proto", "0x67"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left in gw: %s", out)
	}
}

// Gateway mode with masquerade (the default): vm2, which only has a route
// via vm, reaches the pod IP and the ClusterIP through vm's tunnel; the pod
// sees gtund's address; gtun switched forwarding on and keeps its nftables
// table, restoring it when deleted; a stop removes it.
func TestGatewayMasquerade(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	srv := e.startServer(t, e.serverConfig(t, peer{name: "vm", pub: cpub}))
	if out := e.tp.MustExec(t, "vm", "sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(out) != "0" {
		t.Fatalf("vm forwards before gtun runs (%s): the test would prove nothing", out)
	}
	cli := e.startClient(t, "vm", "vm", e.gatewayClientConfig(t, "vm", ckey, "gateway = true\n"))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	e.waitRoute(t, "vm", "10.96.0.0/12", cli)

	if out := e.tp.MustExec(t, "vm", "sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(out) != "1" {
		t.Errorf("gtun did not enable ip_forward: %s", out)
	}
	if !strings.Contains(cli.Log(), "enabled net.ipv4.ip_forward") {
		t.Errorf("enabling ip_forward was not logged")
	}
	e.reach(t, "vm2", "http://"+podIP+":8080/", 10*time.Second)
	e.reach(t, "vm2", "http://"+clusterIP+"/", 10*time.Second)
	if who := e.whoami(t, "vm2", "http://"+podIP+":8080/whoami"); !strings.HasPrefix(who, gwVPCAddr+":") {
		t.Errorf("pod saw %q, want gtund's %s", who, gwVPCAddr)
	}
	table := e.tp.MustExec(t, "vm", "nft", "list", "table", "ip", "gtun-gtun0")
	for _, want := range []string{`oifname "gtun0" ip daddr 10.244.0.0/16 snat to 100.64.240.2`, "maxseg size set rt mtu"} {
		if !strings.Contains(table, want) {
			t.Errorf("gtun-gtun0 lacks %q:\n%s", want, table)
		}
	}
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if cst.Gateway == nil || !cst.Gateway.Masquerade || len(cst.Gateway.SNAT) != 2 {
		t.Errorf("status gateway = %+v", cst.Gateway)
	}

	// Someone flushes the firewall: the table comes back, traffic flows.
	deletedAt := time.Now()
	e.tp.MustExec(t, "vm", "nft", "delete", "table", "ip", "gtun-gtun0")
	testnet.Eventually(t, 10*time.Second, func() error {
		if err := tryStatus(bins.gtun, e.clientSocket("vm"), &cst); err != nil {
			return err
		}
		if cst.Gateway == nil || cst.Gateway.TableHeals == 0 {
			return fmt.Errorf("table not restored yet: %+v", cst.Gateway)
		}
		return nil
	})
	t.Logf("GATEWAY table deleted -> restored (seen in status) in %v", time.Since(deletedAt).Round(time.Millisecond))
	e.tp.MustExec(t, "vm", "nft", "list", "table", "ip", "gtun-gtun0")
	e.reach(t, "vm2", "http://"+clusterIP+"/", 10*time.Second)
	// A flushed chain and forwarding turned off are put back too.
	heals := cst.Gateway.TableHeals
	e.tp.MustExec(t, "vm", "nft", "flush", "chain", "ip", "gtun-gtun0", "postrouting")
	e.tp.MustExec(t, "vm", "sysctl", "-qw", "net.ipv4.ip_forward=0")
	testnet.Eventually(t, 10*time.Second, func() error {
		if err := tryStatus(bins.gtun, e.clientSocket("vm"), &cst); err != nil {
			return err
		}
		if cst.Gateway.TableHeals <= heals || cst.Gateway.ForwardHeals == 0 {
			return fmt.Errorf("not restored yet: %+v", cst.Gateway)
		}
		return nil
	})
	if out := e.tp.MustExec(t, "vm", "nft", "list", "chain", "ip", "gtun-gtun0", "postrouting"); !strings.Contains(out, "snat to 100.64.240.2") {
		t.Errorf("postrouting not restored:\n%s", out)
	}
	e.reach(t, "vm2", "http://"+podIP+":8080/", 10*time.Second)
	out, err := exec.Command(bins.gtun, "status", "--socket", e.clientSocket("vm")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "gateway mode: nftables table gtun-gtun0, masquerade on") {
		t.Errorf("human status lacks the gateway line (%v):\n%s", err, out)
	}

	stop(t, "gtun", cli)
	stop(t, "gtund", srv)
	e.noLeftovers(t)
	e.noGatewayLeftovers(t)
}

// Site-to-site, both directions: gtun in gateway mode without masquerade,
// gtund with the peer's subnets. vm2's own address reaches the pod, and the
// pod opens a connection to vm2 and is seen with its own address. The
// cluster side needs one route: VPC A's CIDR via gtund's host.
func TestSiteToSite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub, extra: `subnets = ["` + vpcA + `"]`})
	srv := e.startServer(t, scfg)
	cli := e.startClient(t, "vm", "vm", e.gatewayClientConfig(t, "vm", ckey, "gateway = true\nmasquerade = false\n"))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	// The cluster side's route table: VPC A via the gateway node.
	e.tp.MustExec(t, "node", "ip", "route", "add", vpcA, "via", gwVPCAddr)
	e.tp.Start(t, "vm2", filepath.Join(e.dir, "vm2-http.log"), bins.podhttp, "-listen", ":8080")

	testnet.Eventually(t, 10*time.Second, func() error {
		out, _ := e.tp.Exec("gw", "ip", "route", "show", vpcA)
		if !strings.Contains(out, "dev gtund0") || !strings.Contains(out, "proto 103") && !strings.Contains(out, "proto 0x67") {
			return fmt.Errorf("gw has no route %s into gtund0: %q", vpcA, out)
		}
		return nil
	})
	// VPC A -> cluster: vm2's real address crosses.
	e.reach(t, "vm2", "http://"+podIP+":8080/", 10*time.Second)
	if who := e.whoami(t, "vm2", "http://"+podIP+":8080/whoami"); !strings.HasPrefix(who, vm2IP+":") {
		t.Errorf("pod saw %q, want vm2's own %s", who, vm2IP)
	}
	// cluster -> VPC A: the pod opens the connection.
	testnet.Eventually(t, 10*time.Second, func() error {
		out, err := e.curl("pod", "http://"+vm2IP+":8080/whoami")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(strings.TrimSpace(out), podIP+":") {
			return fmt.Errorf("vm2 saw %q, want the pod's %s", out, podIP)
		}
		return nil
	})
	if table := e.tp.MustExec(t, "vm", "nft", "list", "table", "ip", "gtun-gtun0"); strings.Contains(table, "snat") {
		t.Errorf("masquerade = false but the table has SNAT rules:\n%s", table)
	}

	var sst server.Status
	status(t, bins.gtund, e.serverSocket(), &sst)
	if p := sst.Peers[0]; len(p.Subnets) != 1 || p.Subnets[0].Prefix != vpcA || !p.Subnets[0].Routed || len(p.Drops) != 0 {
		t.Errorf("server status peer = %+v", p)
	}
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if len(cst.Servers[0].Subnets) != 1 || cst.Servers[0].Subnets[0] != vpcA || cst.Gateway == nil || cst.Gateway.Masquerade {
		t.Errorf("client status: subnets %v gateway %+v", cst.Servers[0].Subnets, cst.Gateway)
	}

	// The peer leaves: its subnet route stays for a reconnect (linger)...
	stop(t, "gtun", cli)
	if out := e.tp.MustExec(t, "gw", "ip", "route", "show", vpcA); !strings.Contains(out, "dev gtund0") {
		t.Errorf("subnet route withdrawn at once on disconnect: %q", out)
	}
	// ...and goes at once when the peer's subnets are removed from the config.
	orig, _ := os.ReadFile(scfg)
	os.WriteFile(scfg, []byte(strings.Replace(string(orig), `subnets = ["`+vpcA+`"]`, "", 1)), 0o600)
	hup(t, "gtund", srv)
	e.waitNoRoute(t, "gw", vpcA)
	stop(t, "gtund", srv)
	e.noLeftovers(t)
	e.noGatewayLeftovers(t)
}
