package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/server"
)

// Someone deletes gtund's nftables table, flushes its forward chain, or
// turns net.ipv4.ip_forward off: gtund puts each back within seconds, logs
// it and counts it, and the tunnel keeps working.
func TestGtundRestoresNFTablesAndForwarding(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	srv := e.startServer(t, e.serverConfig(t, peer{name: "vm", pub: cpub}))
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	e.reach(t, "vm", "http://"+clusterIP+"/", 10*time.Second)

	for i, tamper := range [][]string{
		{"nft", "delete", "table", "ip", "gtund"},
		{"nft", "flush", "chain", "ip", "gtund", "postrouting"},
	} {
		start := time.Now()
		e.tp.MustExec(t, "gw", tamper...)
		testnet.Eventually(t, 15*time.Second, func() error {
			out, _ := e.tp.Exec("gw", "nft", "list", "table", "ip", "gtund")
			if !strings.Contains(out, "masquerade") {
				return fmt.Errorf("table not restored after %s: %q", strings.Join(tamper, " "), out)
			}
			return nil
		})
		t.Logf("%s: restored after %v", strings.Join(tamper, " "), time.Since(start).Round(10*time.Millisecond))
		if n := gtundStatus(t, e).Heals[server.HealNFTables]; n != uint64(i+1) {
			t.Errorf("nftables heals %d, want %d", n, i+1)
		}
		e.reach(t, "vm", "http://"+clusterIP+"/", 10*time.Second)
	}

	e.tp.MustExec(t, "gw", "sysctl", "-qw", "net.ipv4.ip_forward=0")
	testnet.Eventually(t, 15*time.Second, func() error {
		if out := e.tp.MustExec(t, "gw", "sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(out) != "1" {
			return fmt.Errorf("ip_forward %q", out)
		}
		return nil
	})
	if n := gtundStatus(t, e).Heals[server.HealIPForward]; n != 1 {
		t.Errorf("ip_forward heals %d, want 1", n)
	}
	e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
	log := srv.Log()
	for _, want := range []string{"nftables table was deleted or changed by someone else; restored", "net.ipv4.ip_forward was turned off"} {
		if !strings.Contains(log, want) {
			t.Errorf("gtund log lacks %q", want)
		}
	}
}

// state_dir becomes unwritable while gtund runs: a new peer still connects
// (its address lives in memory), the failure is a clear error in the log
// and in status, sessions carry on, and once the directory is writable
// again the lease reaches the disk without another connection.
func TestStateDirUnwritable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "chattr")
	ckey, cpub := e.key(t, "vm")
	rkey, rpub := e.key(t, "late")
	srv := e.startServer(t, e.serverConfig(t, peer{name: "vm", pub: cpub}, peer{name: "late", pub: rpub}))
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	state := filepath.Join(e.dir, "state")

	// Root ignores permission bits; the immutable attribute stops it too.
	e.tp.MustExec(t, "gw", "chattr", "+i", state)
	t.Cleanup(func() { _, _ = e.tp.Exec("gw", "chattr", "-i", state) })
	late := dialRecorded(t, e, "vm", rkey)
	st := gtundStatus(t, e)
	if st.LeaseError == "" || !strings.Contains(st.LeaseError, state) {
		t.Errorf("status lease_error %q does not name %s", st.LeaseError, state)
	}
	if !strings.Contains(srv.Log(), "cannot persist leases") {
		t.Error("no error logged for the failed lease write")
	}
	if leases := readLeaseFile(t, state); leases[rpub] != "" {
		t.Fatalf("lease of late written while state_dir was immutable: %v", leases)
	}
	e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)

	e.tp.MustExec(t, "gw", "chattr", "-i", state)
	testnet.Eventually(t, 15*time.Second, func() error {
		if st := gtundStatus(t, e); st.LeaseError != "" || st.Heals[server.HealLeases] != 1 {
			return fmt.Errorf("lease_error %q, heals %v", st.LeaseError, st.Heals)
		}
		return nil
	})
	if got := readLeaseFile(t, state)[rpub]; got != late.addr.String() {
		t.Errorf("lease of late on disk: %q, want %s", got, late.addr)
	}
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if cst.Servers[0].Reconnects != 0 {
		t.Errorf("the running session was disturbed: %d reconnects", cst.Servers[0].Reconnects)
	}
	select {
	case <-late.ended:
		t.Fatalf("late's session ended: %v", late.err)
	default:
	}
}

func readLeaseFile(t *testing.T, dir string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "leases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ls []ipam.Lease
	if err := json.Unmarshal(b, &ls); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range ls {
		m[l.PublicKey] = l.Address
	}
	return m
}

// kill -9 of either daemon while packets flow: the next start cleans up
// what the dead one left and serves again.
func TestKill9DuringTraffic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	cfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	srv := e.startServer(t, cfg)
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	cli := e.startClient(t, "vm", "vm", ccfg)
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	// 200 pings a second through the tunnel for the whole test.
	e.tp.Start(t, "vm", "", "ping", "-i", "0.005", "-q", podIP)
	time.Sleep(500 * time.Millisecond)

	srv.Kill9()
	srv = e.startServer(t, cfg)
	e.reach(t, "vm", "http://"+clusterIP+"/", 15*time.Second)
	if n := strings.Count(e.tp.MustExec(t, "gw", "nft", "list", "tables"), "gtund"); n != 1 {
		t.Errorf("%d gtund tables after restart, want 1", n)
	}

	time.Sleep(500 * time.Millisecond)
	cli.Kill9()
	cli = e.startClient(t, "vm", "vm", ccfg)
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	e.reach(t, "vm", "http://"+podIP+":8080/", 15*time.Second)
	if out := e.tp.MustExec(t, "vm", "ip", "-o", "link", "show", "type", "tun"); strings.Count(out, "gtun0") != 1 {
		t.Errorf("tun devices in vm after restart: %q", out)
	}
	stop(t, "gtun", cli)
	stop(t, "gtund", srv)
}

// A second gtund, or gtun, configured with a TUN name already in use in its
// namespace refuses to start, says who holds it, and leaves the running
// daemon's device, routes and table alone.
func TestSecondDaemonSameTunRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	cfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	srv := e.startServer(t, cfg)
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)

	second := func(host, name, bin, cfg, socket string, first *testnet.Proc) {
		t.Helper()
		b, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		other := filepath.Join(e.dir, name+"-second.toml")
		src := strings.Replace(string(b), socket, filepath.Join(e.dir, name+"-second.sock"), 1)
		if err := os.WriteFile(other, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		p := e.tp.Start(t, host, filepath.Join(e.dir, name+"-second.log"), bin, "-c", other)
		code, err := p.Wait(15 * time.Second)
		if err != nil || code != 1 {
			t.Fatalf("second %s: exit %d (%v), want 1:\n%s", name, code, err, p.LogTail(20))
		}
		if msg := p.Log(); !strings.Contains(msg, "in use by another process") || !strings.Contains(msg, fmt.Sprintf("pid %d ", first.Pid())) {
			t.Errorf("second %s does not say the tun is in use and by whom:\n%s", name, msg)
		}
	}
	second("gw", "gtund", bins.gtund, cfg, e.serverSocket(), srv)
	second("vm", "gtun", bins.gtun, filepath.Join(e.dir, "vm.toml"), e.clientSocket("vm"), cli)

	e.reach(t, "vm", "http://"+clusterIP+"/", 10*time.Second)
	if out, _ := e.tp.Exec("gw", "nft", "list", "table", "ip", "gtund"); !strings.Contains(out, "masquerade") {
		t.Errorf("the first gtund's table was touched: %q", out)
	}
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if cst.Servers[0].Reconnects != 0 {
		t.Errorf("the first gtun reconnected %d times", cst.Servers[0].Reconnects)
	}
	stop(t, "gtun", cli)
	stop(t, "gtund", srv)
	e.noLeftovers(t)
}
