package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/client"
)

// runCLI runs a binary's command and returns its exit code, stdout and
// stderr.
func runCLI(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, o.String(), e.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), o.String(), e.String()
	}
	t.Fatalf("%s %v: %v", bin, args, err)
	return 0, "", ""
}

// The operator's loop on a live gateway: edit, `gtund check`, `gtund
// reload`. A bad edit is caught by check (exit 2, file:line) and refused by
// reload with the same words while the tunnel keeps working; a good one
// applies by the time reload returns, without a reconnect. showconf shows
// the result. The client's side: check, and `gtun reload` of a route
// subset.
func TestCheckAndReloadCommands(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	cfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	onlyPods := strings.Replace(string(orig), `routes = ["10.244.0.0/16", "10.96.0.0/12"]`, `routes = ["10.244.0.0/16"]`, 1)
	if err := os.WriteFile(cfg, []byte(onlyPods), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := e.startServer(t, cfg)
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	cli := e.startClient(t, "vm", "vm", ccfg)
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	if code, out, errOut := runCLI(t, bins.gtun, "check", "-c", ccfg); code != 0 || !strings.Contains(out, ": ok: 1 server (") {
		t.Errorf("gtun check: exit %d\n%s%s", code, out, errOut)
	}

	// A bad edit: check names it, reload refuses it, nothing changes.
	bad := strings.Replace(string(orig), `routes = ["10.244.0.0/16", "10.96.0.0/12"]`, `routes = ["10.244.0.0/16", "10.96.0.0/33"]`, 1)
	if err := os.WriteFile(cfg, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	want := cfg + ":8: server.routes: bad CIDR \"10.96.0.0/33\""
	if code, out, errOut := runCLI(t, bins.gtund, "check", "-c", cfg); code != 2 || out != "" || !strings.Contains(errOut, want) {
		t.Errorf("gtund check of a bad config: exit %d, stdout %q, stderr %q; want 2 and %s", code, out, errOut, want)
	}
	if code, _, errOut := runCLI(t, bins.gtund, "reload", "-c", cfg); code != 2 || !strings.Contains(errOut, "the running config stays") || !strings.Contains(errOut, want) {
		t.Errorf("gtund reload of a bad config: exit %d, stderr %q; want 2 and %s", code, errOut, want)
	}
	if srv.Exited() {
		t.Fatal("gtund exited on a refused reload")
	}
	if out, err := e.curl("vm", "http://"+podIP+":8080/"); err != nil || !strings.Contains(out, "hello from pod") {
		t.Fatalf("pod after a refused reload: %v %q", err, out)
	}

	// The fix: check passes, reload applies it before it returns.
	if err := os.WriteFile(cfg, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI(t, bins.gtund, "check", "-c", cfg); code != 0 || !strings.Contains(out, cfg+": ok: 1 peer (") {
		t.Errorf("gtund check of the fixed config: exit %d\n%s%s", code, out, errOut)
	}
	start := time.Now()
	if code, out, errOut := runCLI(t, bins.gtund, "reload", "-c", cfg); code != 0 || !strings.Contains(out, "reloaded") {
		t.Fatalf("gtund reload: exit %d\n%s%s", code, out, errOut)
	}
	e.waitRoute(t, "vm", "10.96.0.0/12", cli)
	t.Logf("gtund reload: the new route installed on the client %v after the command started", time.Since(start).Round(time.Millisecond))
	if out, err := e.curl("vm", "http://"+clusterIP+"/"); err != nil || !strings.Contains(out, "hello from pod") {
		t.Fatalf("ClusterIP after reload: %v %q", err, out)
	}
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if cst.Servers[0].Reconnects != 0 {
		t.Errorf("the reload cost %d reconnects", cst.Servers[0].Reconnects)
	}
	// A key that applies only at a restart: reload says so.
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(orig), "mtu = 1400", "mtu = 1380", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI(t, bins.gtund, "reload", "-c", cfg); code != 0 || !strings.Contains(out, "apply only at a restart (the running values stay): server.mtu\n") {
		t.Errorf("gtund reload of a restart-only change: exit %d\n%s%s", code, out, errOut)
	}

	// gtun reload: the same on the client, a route subset applied (its
	// routes reconcile right after), a bad file refused.
	corig, err := os.ReadFile(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	subset := strings.Replace(string(corig), "transport = \"tcp\"\n", "transport = \"tcp\"\nroutes = [\"10.244.0.0/16\"]\n", 1)
	if err := os.WriteFile(ccfg, []byte(subset+"\nbogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, bins.gtun, "reload", "-c", ccfg); code != 2 || !strings.Contains(errOut, "bogus: unknown key") {
		t.Errorf("gtun reload of a bad config: exit %d, stderr %q", code, errOut)
	}
	subset = strings.Replace(subset, "[client]\n", "[client]\noffload = false\n", 1) // applies only at a restart
	if err := os.WriteFile(ccfg, []byte(subset), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI(t, bins.gtun, "reload", "-c", ccfg); code != 0 || !strings.Contains(out, "gtun: reloaded; these changes apply only at a restart (the running values stay): client.offload\n") {
		t.Fatalf("gtun reload: exit %d\n%s%s", code, out, errOut)
	}
	e.waitNoRoute(t, "vm", "10.96.0.0/12")
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if cst.Servers[0].Reconnects != 0 || cli.Exited() {
		t.Errorf("gtun reload cost %d reconnects (or the process)", cst.Servers[0].Reconnects)
	}

	code, out, errOut := runCLI(t, bins.gtund, "showconf", "-c", cfg)
	key, _ := os.ReadFile(e.serverKey)
	if code != 0 || !strings.Contains(out, `routes = ["10.244.0.0/16", "10.96.0.0/12"]`) || !strings.Contains(out, e.serverPub) ||
		len(key) < 40 || strings.Contains(out, strings.TrimSpace(string(key))) {
		t.Errorf("gtund showconf: exit %d (private key shown: %v)\n%s%s", code, strings.Contains(out, strings.TrimSpace(string(key))), out, errOut)
	}
}
