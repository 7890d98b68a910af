package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/server"
)

func hup(t *testing.T, name string, p *testnet.Proc) {
	t.Helper()
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP %s: %v", name, err)
	}
}

func (e *env) routeState(host, prefix string) string {
	out, _ := e.tp.Exec(host, ipRoute(prefix, "show", prefix)...)
	return strings.TrimSpace(out)
}

func (e *env) waitNoRoute(t *testing.T, host, prefix string) {
	t.Helper()
	testnet.Eventually(t, 5*time.Second, func() error {
		if out := e.routeState(host, prefix); out != "" {
			return fmt.Errorf("%s still has %s", host, out)
		}
		return nil
	})
}

// SIGHUP on gtund: routes added and removed reach connected clients live,
// a removed peer is disconnected, a new peer is accepted, a bad file keeps
// the running config, and the other sessions are never dropped.
func TestServerReloadAppliesLive(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tp.MustExec(t, "vm", "sysctl", "-qw", "net.ipv4.ip_forward=1")
	e.tp.MustExec(t, "gw", "ip", "route", "replace", "172.16.0.0/24", "via", "198.51.100.1")
	k1, p1 := e.key(t, "vm")
	k2, p2 := e.key(t, "vm2")
	k3, p3 := e.key(t, "newbie")
	write := func(body string) string {
		path := filepath.Join(e.dir, "gtund.toml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	base := e.serverConfig(t, peer{name: "vm", pub: p1}, peer{name: "vm2", pub: p2})
	orig, _ := os.ReadFile(base)
	onlyPods := strings.Replace(string(orig), `routes = ["10.244.0.0/16", "10.96.0.0/12"]`, `routes = ["10.244.0.0/16"]`, 1)
	cfg := write(onlyPods)
	srv := e.startServer(t, cfg)
	c1 := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", k1, e.serverPub))
	c2 := e.startClient(t, "vm2", "vm2", e.clientConfig(t, "vm2", k2, e.serverPub))
	e.waitRoute(t, "vm", "10.244.0.0/16", c1)
	e.waitRoute(t, "vm2", "10.244.0.0/16", c2)
	if out := e.routeState("vm", "10.96.0.0/12"); out != "" {
		t.Fatalf("route not served yet is installed: %s", out)
	}
	var before server.Status
	status(t, bins.gtund, e.serverSocket(), &before)

	// Serve the ClusterIP range too, drop vm2, add newbie.
	withoutVM2 := strings.Replace(string(orig), fmt.Sprintf("[[peer]]\nname = %q\npublic_key = %q\n", "vm2", p2), "", 1)
	write(withoutVM2 + fmt.Sprintf("\n[[peer]]\nname = \"newbie\"\npublic_key = %q\n", p3))
	hup(t, "gtund", srv)
	start := time.Now()
	e.waitRoute(t, "vm", "10.96.0.0/12", c1)
	t.Logf("RELOAD gtund: added route installed on the client %v after SIGHUP", time.Since(start).Round(time.Millisecond))
	if out, err := e.curl("vm", "http://"+clusterIP+"/"); err != nil || !strings.Contains(out, "hello from pod") {
		t.Fatalf("ClusterIP after reload: %v %q", err, out)
	}
	testnet.Eventually(t, 10*time.Second, func() error {
		var st server.Status
		if err := tryStatus(bins.gtund, e.serverSocket(), &st); err != nil {
			return err
		}
		if st.HandshakeFailures["unknown_peer"] == 0 {
			return fmt.Errorf("vm2 not refused yet: %v", st.HandshakeFailures)
		}
		return nil
	})
	hostile := dialSession(t, e, "vm", k3) // the new peer is accepted
	if !hostile.addr.IsValid() {
		t.Fatal("new peer got no address")
	}

	// Remove the route again.
	withoutVM2 = strings.Replace(withoutVM2, `routes = ["10.244.0.0/16", "10.96.0.0/12"]`, `routes = ["10.244.0.0/16"]`, 1)
	write(withoutVM2 + fmt.Sprintf("\n[[peer]]\nname = \"newbie\"\npublic_key = %q\n", p3))
	hup(t, "gtund", srv)
	e.waitNoRoute(t, "vm", "10.96.0.0/12")

	// A bad file changes nothing.
	write(withoutVM2 + "\nbogus_key = 1\n")
	hup(t, "gtund", srv)
	testnet.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(srv.Log(), "reload failed") {
			return fmt.Errorf("no reload failure logged yet")
		}
		return nil
	})
	if !strings.Contains(srv.Log(), "gtund.toml:") || !strings.Contains(srv.Log(), "bogus_key: unknown key") {
		t.Errorf("reload error does not name file:line and key:\n%s", srv.LogTail(5))
	}
	if srv.Exited() {
		t.Fatal("gtund died on a bad reload")
	}
	if out, err := e.curl("vm", "http://"+podIP+":8080/"); err != nil || !strings.Contains(out, "hello from pod") {
		t.Fatalf("after bad reload: %v %q", err, out)
	}

	// vm's session was never dropped.
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if cst.Servers[0].Reconnects != 0 {
		t.Errorf("vm reconnected %d times during reloads", cst.Servers[0].Reconnects)
	}
	var after server.Status
	status(t, bins.gtund, e.serverSocket(), &after)
	for _, p := range after.Peers {
		if p.Name == "vm" && (p.ConnectedSince == nil || !p.ConnectedSince.Equal(*before.Peers[0].ConnectedSince)) {
			t.Errorf("vm session replaced during reloads: before %v after %v", before.Peers[0].ConnectedSince, p.ConnectedSince)
		}
		if p.Name == "vm2" {
			t.Errorf("removed peer still listed: %+v", p)
		}
	}
}

// SIGHUP on gtun: the server's route subset applies live without a reconnect.
func TestClientReloadRouteSubset(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	e.startServer(t, e.serverConfig(t, peer{name: "vm", pub: cpub}))
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	cli := e.startClient(t, "vm", "vm", ccfg)
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	e.waitRoute(t, "vm", "10.96.0.0/12", cli)

	orig, _ := os.ReadFile(ccfg)
	subset := strings.Replace(string(orig), "transport = \"tcp\"\n", "transport = \"tcp\"\nroutes = [\"10.244.0.0/16\"]\n", 1)
	os.WriteFile(ccfg, []byte(subset), 0o600)
	hup(t, "gtun", cli)
	e.waitNoRoute(t, "vm", "10.96.0.0/12")
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)

	os.WriteFile(ccfg, []byte(subset+"\n[client]\n"), 0o600) // duplicate table: a TOML error
	hup(t, "gtun", cli)
	testnet.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(cli.Log(), "reload failed") {
			return fmt.Errorf("no reload failure logged yet")
		}
		return nil
	})
	os.WriteFile(ccfg, orig, 0o600)
	hup(t, "gtun", cli)
	e.waitRoute(t, "vm", "10.96.0.0/12", cli)

	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if cst.Servers[0].Reconnects != 0 || cli.Exited() {
		t.Fatalf("reloads cost a reconnect (%d) or the process", cst.Servers[0].Reconnects)
	}
}

// Both daemons tell systemd READY=1; gtun only once its routes are in place.
func TestSystemdReadiness(t *testing.T) {
	e := newEnv(t)
	listen := func(name string) *net.UnixConn {
		path := filepath.Join(e.dir, name+".notify")
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		t.Setenv("NOTIFY_SOCKET", path)
		return c
	}
	waitReady := func(c *net.UnixConn) string {
		buf := make([]byte, 4096)
		for {
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("no READY=1: %v", err)
			}
			if msg := string(buf[:n]); strings.Contains(msg, "READY=1") {
				return msg
			}
		}
	}
	ckey, cpub := e.key(t, "vm")
	sn := listen("gtund")
	e.startServer(t, e.serverConfig(t, peer{name: "vm", pub: cpub}))
	if msg := waitReady(sn); !strings.Contains(msg, "STATUS=listening on tcp://") {
		t.Errorf("gtund ready message: %q", msg)
	}
	cn := listen("gtun")
	e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	msg := waitReady(cn)
	// At READY=1 the routes must already be there.
	for _, p := range []string{"10.244.0.0/16", "10.96.0.0/12"} {
		if !strings.Contains(e.routeState("vm", p), "dev gtun0") {
			t.Errorf("READY=1 before route %s was installed", p)
		}
	}
	if !strings.Contains(msg, "connected as 100.64.240.2/24") || !strings.Contains(msg, "2/2 routes installed") {
		t.Errorf("gtun ready message: %q", msg)
	}
}
