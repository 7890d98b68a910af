package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/server"
)

// gtundPeer runs `gtund peer ARGS -c cfg` in gw's namespace and returns its
// stdout and stderr apart (stdout is the client config).
func (e *env) gtundPeer(t *testing.T, cfg string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := e.tp.Command(ctx, "gw", append([]string{bins.gtund, "peer"}, append(args, "-c", cfg)...)...)
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	err = cmd.Run()
	return o.String(), s.String(), err
}

func peerStatus(t *testing.T, e *env, name string) (server.PeerStatus, bool) {
	t.Helper()
	var st server.Status
	status(t, bins.gtund, e.serverSocket(), &st)
	for _, p := range st.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return server.PeerStatus{}, false
}

// `gtund peer add` while gtund runs: the printed gtun.toml, with the key it
// wrote, brings a new VM up to the pod; the client already connected keeps
// its session throughout; `gtund peer remove` disconnects the new one only.
func TestPeerAddOnboardsAVM(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The client already connected runs in vm2, behind vm; the new VM is vm.
	e.tp.MustExec(t, "vm", "sysctl", "-qw", "net.ipv4.ip_forward=1")
	e.tp.MustExec(t, "gw", "ip", "route", "replace", "172.16.0.0/24", "via", "198.51.100.1")
	oldKey, oldPub := e.key(t, "old")
	cfg := e.serverConfig(t, peer{name: "old", pub: oldPub})
	srv := e.startServer(t, cfg)
	old := e.startClient(t, "vm2", "old", e.clientConfig(t, "old", oldKey, e.serverPub))
	e.waitRoute(t, "vm2", "10.244.0.0/16", old)
	e.reach(t, "vm2", "http://"+podIP+":8080/", 10*time.Second)
	oldSince, ok := peerStatus(t, e, "old")
	if !ok || !oldSince.Connected {
		t.Fatalf("old not connected: %+v", oldSince)
	}

	keyFile := filepath.Join(e.dir, "vm1.key")
	start := time.Now()
	out, errOut, err := e.gtundPeer(t, cfg, "add", "vm1", "--endpoint", gwWAN+":"+port, "--key-out", keyFile, "--key-path", keyFile)
	if err != nil {
		t.Fatalf("peer add: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "gtund reloaded") {
		t.Errorf("peer add did not reload gtund:\n%s", errOut)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	for _, want := range []string{`endpoints = ["` + gwWAN + ":" + port + `"]`, `public_key = "` + e.serverPub + `"`, `transport = "tcp"`,
		`private_key_file = "` + keyFile + `"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("printed config lacks %s:\n%s", want, out)
		}
	}
	// Only the control socket differs from what was printed: other tests
	// run gtun on this machine at the same time.
	sock := regexp.MustCompile(`(?m)^control_socket = .*$`)
	if !sock.MatchString(out) {
		t.Fatalf("no control_socket line:\n%s", out)
	}
	vmCfg := filepath.Join(e.dir, "vm1.toml")
	if err := os.WriteFile(vmCfg, []byte(sock.ReplaceAllLiteralString(out, fmt.Sprintf("control_socket = %q", e.clientSocket("vm1")))), 0o600); err != nil {
		t.Fatal(err)
	}
	vm1 := e.startClient(t, "vm", "vm1", vmCfg)
	e.waitRoute(t, "vm", "10.244.0.0/16", vm1)
	e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
	t.Logf("ONBOARD: peer add to HTTP through the tunnel from the new VM: %v", time.Since(start).Round(time.Millisecond))
	e.tp.MustExec(t, "vm", "ping", "-c", "2", "-i", "0.2", "-W", "2", podIP)

	listOut, listErr, err := e.gtundPeer(t, cfg, "list")
	if err != nil {
		t.Fatalf("peer list: %v %s", err, listErr)
	}
	if !regexp.MustCompile(`(?m)^vm1 .*peers file\s+yes\s*$`).MatchString(listOut) ||
		!regexp.MustCompile(`(?m)^old .*config\s+yes\s*$`).MatchString(listOut) {
		t.Errorf("peer list:\n%s", listOut)
	}

	// Removing it disconnects it and refuses it from then on.
	if _, errOut, err := e.gtundPeer(t, cfg, "remove", "vm1"); err != nil {
		t.Fatalf("peer remove: %v\n%s", err, errOut)
	}
	testnet.Eventually(t, 10*time.Second, func() error {
		if _, ok := peerStatus(t, e, "vm1"); ok {
			return fmt.Errorf("vm1 still known to gtund")
		}
		var st client.Status
		if err := tryStatus(bins.gtun, e.clientSocket("vm1"), &st); err != nil {
			return err
		}
		if s := st.Servers[0]; s.State == "connected" {
			return fmt.Errorf("vm1 still connected")
		}
		return nil
	})
	if out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "2", "http://"+podIP+":8080/"); err == nil {
		t.Fatalf("removed peer still reaches the pod: %q", out)
	}

	// The client that was connected before never lost its session.
	now, ok := peerStatus(t, e, "old")
	if !ok || !now.Connected || now.Sessions != 1 || !now.ConnectedSince.Equal(*oldSince.ConnectedSince) {
		t.Errorf("old's session was replaced: before %+v, now %+v", oldSince, now)
	}
	var ost client.Status
	status(t, bins.gtun, e.clientSocket("old"), &ost)
	if s := ost.Servers[0]; s.State != "connected" || s.Reconnects != 0 {
		t.Errorf("old client: state %s, %d reconnects", s.State, s.Reconnects)
	}
	if out, err := e.curl("vm2", "http://"+podIP+":8080/"); err != nil || !strings.Contains(out, "hello from pod") {
		t.Errorf("old client after add and remove: %v %q", err, out)
	}

	stop(t, "gtun vm1", vm1)
	stop(t, "gtun old", old)
	stop(t, "gtund", srv)
}
