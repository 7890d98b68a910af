// Package integration runs the real gtun and gtund binaries in the netns
// topology of DESIGN.md (scripts/topology.sh). It needs root; with CI set,
// missing prerequisites fail the tests instead of skipping them.
//
// Each test builds its own topology (namespaces with a prefix of its own),
// so tests can share the machine: most call t.Parallel() and run together,
// as many as go test -parallel allows (make test and make integration: 4).
// A test stays serial (no t.Parallel(), so it runs with no other test of
// this package beside it) when it loads the machine or measures what a
// loaded machine would skew: the floods and attacks, iperf3 flows and
// their stall counts, heal and failover times with tight bounds; or when
// it changes something of the whole process (t.Setenv). A new test that
// is neither may call t.Parallel().
package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/secure"
)

const (
	podIP     = "10.244.1.20"
	clusterIP = "10.96.0.10"
	gwWAN     = "198.51.100.2"
	port      = "9623"
)

var bins struct{ gtun, gtund, podhttp string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gtun-it-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root := testnet.RepoRoot()
	for pkg, out := range map[string]*string{"./gtun": &bins.gtun, "./gtund": &bins.gtund, "./tools/podhttp": &bins.podhttp} {
		*out = filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", *out, pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one topology with a pod HTTP server and a gtund key.
type env struct {
	tp        *testnet.Topology
	dir       string
	serverKey string // path
	serverPub string
}

func newEnv(t *testing.T, tools ...string) *env {
	t.Helper()
	testnet.Require(t, append([]string{"ping", "curl", "/dev/net/tun"}, tools...)...)
	e := &env{tp: testnet.Up(t), dir: t.TempDir()}
	e.serverKey, e.serverPub = e.key(t, "server")
	e.tp.Start(t, "pod", "", bins.podhttp, "-listen", ":8080")
	testnet.Eventually(t, 10*time.Second, func() error {
		_, err := e.tp.Exec("node", "curl", "-fsS", "--max-time", "1", "http://"+podIP+":8080/healthz")
		return err
	})
	return e
}

// key writes a new private key file (mode 0600) and returns it with its public key.
func (e *env) key(t *testing.T, name string) (path, pub string) {
	t.Helper()
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(e.dir, name+".key")
	if err := os.WriteFile(path, []byte(k.Encode()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, k.Public().String()
}

type peer struct{ name, pub, extra string }

func (e *env) serverConfig(t *testing.T, peers ...peer) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `[server]
listen = "%s:%s"
transports = ["tcp"]
private_key_file = %q
tun = "gtund0"
mtu = 1400
pool = "100.64.240.0/24"
routes = ["10.244.0.0/16", "10.96.0.0/12"]
nat = true
state_dir = %q
control_socket = %q
keepalive = "1s"

[log]
level = "debug"
`, gwWAN, port, e.serverKey, filepath.Join(e.dir, "state"), e.serverSocket())
	for _, p := range peers {
		fmt.Fprintf(&b, "\n[[peer]]\nname = %q\npublic_key = %q\n%s\n", p.name, p.pub, p.extra)
	}
	path := filepath.Join(e.dir, "gtund.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (e *env) serverSocket() string { return filepath.Join(e.dir, "gtund.sock") }

// clientConfig writes a gtun config for a client called name.
func (e *env) clientConfig(t *testing.T, name, keyPath, serverPub string) string {
	t.Helper()
	cfg := fmt.Sprintf(`[client]
private_key_file = %q
tun = "gtun0"
control_socket = %q

[[server]]
name = "cluster"
endpoints = ["%s:%s"]
transport = "tcp"
public_key = %q

[log]
level = "debug"
`, keyPath, e.clientSocket(name), gwWAN, port, serverPub)
	path := filepath.Join(e.dir, name+".toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (e *env) clientSocket(name string) string { return filepath.Join(e.dir, name+".sock") }

func (e *env) startServer(t *testing.T, cfg string) *testnet.Proc {
	t.Helper()
	p := e.tp.Start(t, "gw", filepath.Join(e.dir, "gtund.log"), bins.gtund, "-c", cfg)
	testnet.Eventually(t, 10*time.Second, func() error {
		if p.Exited() {
			t.Fatalf("gtund exited:\n%s", p.LogTail(30))
		}
		// The control socket is served once the listeners are up.
		return exec.Command(bins.gtund, "status", "--socket", e.serverSocket()).Run()
	})
	return p
}

func (e *env) startClient(t *testing.T, host, name, cfg string) *testnet.Proc {
	t.Helper()
	return e.tp.Start(t, host, filepath.Join(e.dir, name+".log"), bins.gtun, "-c", cfg)
}

// waitRoute waits until host routes prefix into its tunnel device.
func (e *env) waitRoute(t *testing.T, host, prefix string, p *testnet.Proc) {
	t.Helper()
	testnet.Eventually(t, 15*time.Second, func() error {
		if p.Exited() {
			t.Fatalf("gtun exited:\n%s", p.LogTail(30))
		}
		out, _ := e.tp.Exec(host, ipRoute(prefix, "show", prefix)...)
		if !strings.Contains(out, "dev gtun0") {
			return fmt.Errorf("no route %s via gtun0 in %s: %q", prefix, host, out)
		}
		return nil
	})
}

// ipRoute is the `ip route` command line with args for prefix's family
// (`ip route` alone lists IPv4 routes only).
func ipRoute(prefix string, args ...string) []string {
	if strings.Contains(prefix, ":") {
		return append([]string{"ip", "-6", "route"}, args...)
	}
	return append([]string{"ip", "route"}, args...)
}

// reach waits until host gets the pod's answer from url.
func (e *env) reach(t *testing.T, host, url string, within time.Duration) {
	t.Helper()
	testnet.Eventually(t, within, func() error {
		out, err := e.curl(host, url)
		if err != nil || !strings.Contains(out, "hello from pod") {
			return fmt.Errorf("%s -> %s: %v %q", host, url, err, out)
		}
		return nil
	})
}

func (e *env) curl(host, url string) (string, error) {
	return e.tp.Exec(host, "curl", "-fsS", "--max-time", "5", url)
}

// status runs `<bin> status --json --socket S` and decodes it.
func status(t *testing.T, bin, socket string, v any) {
	t.Helper()
	if err := tryStatus(bin, socket, v); err != nil {
		t.Fatal(err)
	}
}

func tryStatus(bin, socket string, v any) error {
	out, err := exec.Command(bin, "status", "--json", "--socket", socket).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s status: %v\n%s", filepath.Base(bin), err, out)
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("decode status: %v\n%s", err, out)
	}
	return nil
}

// stop sends SIGTERM and requires exit code 0.
func stop(t *testing.T, name string, p *testnet.Proc) {
	t.Helper()
	if err := p.Signal(os.Interrupt); err != nil {
		t.Fatalf("signal %s: %v", name, err)
	}
	code, err := p.Wait(10 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("%s exit code %d (%v), want 0:\n%s", name, code, err, p.LogTail(30))
	}
}

// noLeftovers checks that neither daemon left a device, route or table.
func (e *env) noLeftovers(t *testing.T) {
	t.Helper()
	if out, _ := e.tp.Exec("vm", "ip", "link", "show", "gtun0"); strings.Contains(out, "gtun0:") {
		t.Errorf("gtun0 left in vm: %s", out)
	}
	if out, _ := e.tp.Exec("vm", "ip", "route", "show", "proto", "0x67"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left in vm: %s", out)
	}
	if out, _ := e.tp.Exec("gw", "ip", "link", "show", "gtund0"); strings.Contains(out, "gtund0:") {
		t.Errorf("gtund0 left in gw: %s", out)
	}
	if out, _ := e.tp.Exec("gw", "nft", "list", "tables"); strings.Contains(out, "gtund") {
		t.Errorf("nftables table left in gw: %s", out)
	}
}
