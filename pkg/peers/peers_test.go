package peers

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gtun/gtun/pkg/cli"
	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/secure"
)

type fixture struct {
	dir, cfg, state string
	serverPub       string
	configPub       string // of the peer defined in gtund.toml
}

func newFixture(t *testing.T, listen string) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.state = filepath.Join(f.dir, "state")
	k := genKey(t)
	f.serverPub = k.Public().String()
	keyPath := filepath.Join(f.dir, "server.key")
	if err := os.WriteFile(keyPath, []byte(k.Encode()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.configPub = genKey(t).Public().String()
	f.cfg = filepath.Join(f.dir, "gtund.toml")
	src := fmt.Sprintf(`[server]
listen = %q
transports = ["tcp", "udp", "kcp"]
fec_data = 10
fec_parity = 3
private_key_file = %q
pool = "100.64.240.0/24"
routes = ["10.244.0.0/16", "10.96.0.0/12"]
state_dir = %q
control_socket = %q

[[peer]]
name = "fixed"
public_key = %q
address = "100.64.240.10"
`, listen, keyPath, f.state, filepath.Join(f.dir, "gtund.sock"), f.configPub)
	if err := os.WriteFile(f.cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func genKey(t *testing.T) secure.PrivateKey {
	t.Helper()
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(t *testing.T) string { return genKey(t).Public().String() }

func (f *fixture) peersFile() string { return filepath.Join(f.state, config.PeersFileName) }

func (f *fixture) load(t *testing.T) *config.Server {
	t.Helper()
	cfg, err := config.LoadServer(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func names(cfg *config.Server) string {
	var out []string
	for _, p := range cfg.Peers {
		out = append(out, p.Name)
	}
	return strings.Join(out, ",")
}

func TestAddListRemove(t *testing.T) {
	f := newFixture(t, "198.51.100.2:9623")
	cfg, err := Add(f.cfg, config.PeerSection{Name: "vm1", PublicKey: pub(t), Address: "100.64.240.7", Allowed: []string{"10.244.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	if names(cfg) != "fixed,vm1" {
		t.Fatalf("peers %s", names(cfg))
	}
	if _, err := Add(f.cfg, config.PeerSection{Name: "vm2", PublicKey: pub(t)}); err != nil {
		t.Fatal(err)
	}
	cfg = f.load(t) // what gtund reads: the config and the peers file
	if names(cfg) != "fixed,vm1,vm2" {
		t.Fatalf("peers %s", names(cfg))
	}
	vm1 := cfg.Peers[1]
	if vm1.Source != f.peersFile() || cfg.Peers[0].Source != f.cfg || vm1.Address.String() != "100.64.240.7" ||
		len(vm1.Allowed) != 1 || vm1.Allowed[0].String() != "10.244.0.0/16" {
		t.Errorf("vm1 = %+v", vm1)
	}
	if len(cfg.Peers[2].Allowed) != 2 { // default: every served route
		t.Errorf("vm2 allowed %v", cfg.Peers[2].Allowed)
	}
	st, err := os.Stat(f.peersFile())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("peers file: %v %v", st.Mode(), err)
	}
	b, _ := os.ReadFile(f.peersFile())
	if strings.Contains(string(b), `= ""`) || strings.Contains(string(b), "= []") {
		t.Errorf("empty keys written:\n%s", b)
	}

	if _, err := Remove(f.cfg, "vm1"); err != nil {
		t.Fatal(err)
	}
	if got := names(f.load(t)); got != "fixed,vm2" {
		t.Fatalf("after remove: %s", got)
	}
	if _, err := Remove(f.cfg, "vm2"); err != nil {
		t.Fatal(err)
	}
	if got := names(f.load(t)); got != "fixed" {
		t.Fatalf("after removing all: %s", got)
	}
}

func TestAddRefuses(t *testing.T) {
	f := newFixture(t, "198.51.100.2:9623")
	taken := pub(t)
	if _, err := Add(f.cfg, config.PeerSection{Name: "vm1", PublicKey: taken, Address: "100.64.240.7"}); err != nil {
		t.Fatal(err)
	}
	leaseHolder := pub(t)
	leases := fmt.Sprintf(`[{"public_key": %q, "name": "other", "address": "100.64.240.2", "updated": "2026-11-21T00:00:00Z"}]`, leaseHolder)
	if err := os.WriteFile(filepath.Join(f.state, "leases.json"), []byte(leases), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(f.peersFile())
	cases := []struct {
		name string
		peer config.PeerSection
		want string
	}{
		{"name in the config", config.PeerSection{Name: "fixed", PublicKey: pub(t)}, `peer "fixed" already exists`},
		{"name in the peers file", config.PeerSection{Name: "vm1", PublicKey: pub(t)}, `peer "vm1" already exists`},
		{"key of another peer", config.PeerSection{Name: "vm9", PublicKey: taken}, `already peer "vm1"'s`},
		{"bad name", config.PeerSection{Name: "vm 9", PublicKey: pub(t)}, "bad peer name"},
		{"bad key", config.PeerSection{Name: "vm9", PublicKey: "AAAA"}, "bad public key"},
		{"fixed address of another peer", config.PeerSection{Name: "vm9", PublicKey: pub(t), Address: "100.64.240.10"}, `fixed address of peer "fixed"`},
		{"address leased to another peer", config.PeerSection{Name: "vm9", PublicKey: pub(t), Address: "100.64.240.2"}, `leased to peer "other"`},
		{"address outside the pool", config.PeerSection{Name: "vm9", PublicKey: pub(t), Address: "100.64.241.2"}, "not a client address of pool"},
		{"address is gtund's", config.PeerSection{Name: "vm9", PublicKey: pub(t), Address: "100.64.240.1"}, "not a client address of pool"},
		{"bad address", config.PeerSection{Name: "vm9", PublicKey: pub(t), Address: "100.64.240.x"}, "bad address"},
		{"allowed outside the routes", config.PeerSection{Name: "vm9", PublicKey: pub(t), Allowed: []string{"10.0.0.0/8"}}, "not within the routes gtund serves"},
		{"allowed with host bits", config.PeerSection{Name: "vm9", PublicKey: pub(t), Allowed: []string{"10.244.1.1/24"}}, "host bits"},
		{"allowed not a CIDR", config.PeerSection{Name: "vm9", PublicKey: pub(t), Allowed: []string{"pods"}}, "not a CIDR"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Add(f.cfg, c.peer)
			if err == nil || !strings.Contains(err.Error(), c.want) || !IsUsage(err) {
				t.Fatalf("err = %v, want a usage error containing %q", err, c.want)
			}
			if after, _ := os.ReadFile(f.peersFile()); !bytes.Equal(before, after) {
				t.Fatal("a refused add changed the peers file")
			}
		})
	}
	// The lease holder itself may take its own address as a fixed one.
	if _, err := Add(f.cfg, config.PeerSection{Name: "other", PublicKey: leaseHolder, Address: "100.64.240.2"}); err != nil {
		t.Fatal(err)
	}
}

func TestRemoveRefuses(t *testing.T) {
	f := newFixture(t, "198.51.100.2:9623")
	if _, err := Remove(f.cfg, "fixed"); err == nil || !IsUsage(err) || !strings.Contains(err.Error(), "remove it there") {
		t.Fatalf("removing a peer of the config: %v", err)
	}
	if _, err := Remove(f.cfg, "nobody"); err == nil || !IsUsage(err) || !strings.Contains(err.Error(), `no peer "nobody"`) {
		t.Fatalf("removing an unknown peer: %v", err)
	}
}

// Two `peer add`s at once must not lose each other's peer: each re-reads
// the file under the lock before it writes.
func TestConcurrentAdds(t *testing.T) {
	f := newFixture(t, "198.51.100.2:9623")
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := Add(f.cfg, config.PeerSection{Name: fmt.Sprintf("vm%02d", i), PublicKey: pub(t)})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := len(f.load(t).Peers); got != n+1 {
		t.Fatalf("%d peers after %d concurrent adds, want %d", got, n, n+1)
	}
}

// The peers file is read as strictly as the config, and errors name it.
func TestBadPeersFile(t *testing.T) {
	f := newFixture(t, "198.51.100.2:9623")
	if err := os.MkdirAll(f.state, 0o700); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, src, want string }{
		{"unknown key", "[[peer]]\nname = \"a\"\npublic_key = \"" + pub(t) + "\"\nadress = \"100.64.240.9\"\n", ":4: peer.0.adress: unknown key"},
		{"name also in the config", "\n[[peer]]\nname = \"fixed\"\npublic_key = \"" + pub(t) + "\"\n", `:3: peer.0.name: peer "fixed" is also defined in ` + f.cfg},
		{"key also in the config", "[[peer]]\nname = \"b\"\npublic_key = \"" + f.configPub + "\"\n", `:3: peer.0.public_key: same key as peer "fixed"`},
		{"other tables", "[server]\npool = \"10.0.0.0/8\"\n", ":1: server: unknown key"},
		{"syntax", "[[peer]\n", ":2: expected end of table array name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(f.peersFile(), []byte(c.src), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := config.LoadServer(f.cfg)
			if err == nil || !config.IsConfigError(err) || !strings.Contains(err.Error(), f.peersFile()+c.want) {
				t.Fatalf("err = %v, want %s%s", err, f.peersFile(), c.want)
			}
			// And peer add refuses to build on it.
			if _, err := Add(f.cfg, config.PeerSection{Name: "new", PublicKey: pub(t)}); err == nil {
				t.Fatal("added to a bad peers file")
			}
		})
	}
}

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	root := &cli.Command{Name: "gtund", Commands: []*cli.Command{Command()}}
	code = cli.Execute(root, append([]string{"peer"}, args...), cli.IO{Stdin: strings.NewReader(""), Stdout: &o, Stderr: &e})
	return code, o.String(), e.String()
}

// `gtund peer add` prints a gtun.toml that loads as it is, with the key it
// wrote, the server's public key, the endpoint and the transport.
func TestCommandAddPrintsClientConfig(t *testing.T) {
	f := newFixture(t, "198.51.100.2:9623")
	keyOut := filepath.Join(f.dir, "vm1.key")
	code, out, errOut := run(t, "add", "vm1", "-c", f.cfg, "--key-out", keyOut, "--key-path", keyOut, "--allowed", "10.244.0.0/16")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, "not running") {
		t.Errorf("stderr does not say gtund is not running: %s", errOut)
	}
	clientCfg := filepath.Join(f.dir, "gtun.toml")
	if err := os.WriteFile(clientCfg, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.LoadClient(clientCfg)
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, out)
	}
	s := c.Servers[0]
	if s.PublicKey.String() != f.serverPub || s.Endpoints[0] != "198.51.100.2:9623" || s.Transport != "auto" ||
		s.FECData != 10 || s.FECParity != 3 {
		t.Errorf("server entry %+v", s)
	}
	cfg := f.load(t)
	if p := cfg.Peers[1]; p.Name != "vm1" || p.PublicKey != c.PrivateKey.Public() {
		t.Errorf("the added peer's key is not the printed config's: %+v", p)
	}
	if st, _ := os.Stat(keyOut); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", st.Mode())
	}
	// The key is never overwritten, and a refused add leaves no key behind.
	if code, _, errOut := run(t, "add", "vm2", "-c", f.cfg, "--key-out", keyOut); code != 2 || !strings.Contains(errOut, "refusing to overwrite") {
		t.Errorf("exit %d: %s", code, errOut)
	}
	k2 := filepath.Join(f.dir, "vm1-again.key")
	if code, _, errOut := run(t, "add", "vm1", "-c", f.cfg, "--key-out", k2); code != 2 || !strings.Contains(errOut, "already exists") {
		t.Errorf("exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(k2); err == nil {
		t.Error("key of a refused peer left behind")
	}

	// With the VM's own public key nothing secret is made here.
	vmKey := genKey(t)
	code, out, errOut = run(t, "add", "--public-key", vmKey.Public().String(), "vm3", "-c", f.cfg, "--endpoint", "gw.example.com:443", "--transport", "tcp")
	if code != 0 || !strings.Contains(out, `private_key_file = "/etc/gtun/private.key"`) || !strings.Contains(out, `endpoints = ["gw.example.com:443"]`) ||
		!strings.Contains(out, `transport = "tcp"`) || strings.Contains(out, "fec_data") {
		t.Errorf("exit %d:\n%s\n%s", code, out, errOut)
	}

	code, out, _ = run(t, "list", "-c", f.cfg)
	if code != 0 || !strings.Contains(out, "vm1") || !strings.Contains(out, "peers file") || !strings.Contains(out, "config") {
		t.Errorf("list: exit %d\n%s", code, out)
	}
	if code, _, errOut := run(t, "remove", "vm1", "-c", f.cfg); code != 0 {
		t.Errorf("remove: exit %d: %s", code, errOut)
	}
	if got := names(f.load(t)); got != "fixed,vm3" {
		t.Errorf("peers after remove: %s", got)
	}
}

func TestCommandUsageErrors(t *testing.T) {
	f := newFixture(t, "0.0.0.0:9623")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"add", "vm1", "-c", f.cfg}, "--endpoint"}, // gtund listens on a wildcard address
		{[]string{"add", "-c", f.cfg}, "NAME is missing"},
		{[]string{"add", "vm1", "extra", "-c", f.cfg}, "unexpected argument"},
		{[]string{"add", "vm1", "-c", f.cfg, "--endpoint", "x:99999"}, "--endpoint"},
		{[]string{"add", "vm1", "-c", f.cfg, "--endpoint", "x:1", "--transport", "quic"}, "tcp, udp, kcp or auto"},
		{[]string{"add", "vm1", "-c", f.cfg, "--endpoint", "x:1", "--public-key", "AAAA"}, "--public-key"},
		{[]string{"add", "vm1", "-c", filepath.Join(f.dir, "missing.toml"), "--endpoint", "x:1"}, "bad config"},
		{[]string{"frobnicate"}, "unknown command"},
		{nil, "which command? (add, list, remove)"},
	} {
		code, _, errOut := run(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errOut, c.want)
		}
	}
	if _, err := os.Stat(f.peersFile()); err == nil {
		t.Error("a refused command wrote the peers file")
	}
}
