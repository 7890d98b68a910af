package peers

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gtun/gtun/internal/etcdtest"
	"github.com/gtun/gtun/pkg/cli"
	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/ipam"
)

func runStore(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	root := &cli.Command{Name: "gtund", Commands: []*cli.Command{Command(), StoreCommand()}}
	code = cli.Execute(root, args, cli.IO{Stdin: strings.NewReader(""), Stdout: &o, Stderr: &e})
	return code, o.String(), e.String()
}

// A file store moved into etcd and back: peers and leases as they were,
// so nobody is onboarded again; with etcd as the store, peer add and
// remove go there, and list shows them as etcd's; import refuses what
// etcd already has.
func TestStoreImportExport(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	f := newFixture(t, "198.51.100.2:9623")
	// The file store: two peers by peer add, one of them with a lease.
	pubA, pubB := pub(t), pub(t)
	if code, _, errOut := run(t, "add", "a", "-c", f.cfg, "--public-key", pubA); code != 0 {
		t.Fatal(errOut)
	}
	if code, _, errOut := run(t, "add", "b", "-c", f.cfg, "--public-key", pubB, "--address", "100.64.240.20"); code != 0 {
		t.Fatal(errOut)
	}
	leases := fmt.Sprintf(`[{"public_key": %q, "name": "a", "address": "100.64.240.2", "updated": "2026-01-01T00:00:00Z"}]`, pubA)
	if err := os.WriteFile(filepath.Join(f.state, "leases.json"), []byte(leases), 0o600); err != nil {
		t.Fatal(err)
	}
	// Without backend etcd, the store commands say what to do.
	if code, _, errOut := runStore(t, "store", "import", "-c", f.cfg); code != cli.ExitUsage || !strings.Contains(errOut, `backend = "etcd"`) {
		t.Errorf("import with the file store: %d %s", code, errOut)
	}
	b, err := os.ReadFile(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	// [store] before the fixture's [[peer]] (after it, its keys would be the peer's).
	etcdCfg := strings.Replace(string(b), "\n[[peer]]", fmt.Sprintf("\n[store]\nbackend = \"etcd\"\nendpoints = [%q]\nprefix = \"/gtun/t\"\ndial_timeout = \"2s\"\n\n[[peer]]", c.Endpoints()[0]), 1)
	if err := os.WriteFile(f.cfg, []byte(etcdCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runStore(t, "store", "import", "-c", f.cfg)
	if code != 0 || !strings.Contains(out, "imported 2 peers") || !strings.Contains(out, "1 leases") {
		t.Fatalf("import: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := runStore(t, "store", "import", "-c", f.cfg); code != cli.ExitUsage || !strings.Contains(errOut, "nothing imported") {
		t.Errorf("import again: %d %s", code, errOut)
	}
	// Now on etcd: add goes there, list shows etcd's peers.
	if code, _, errOut := run(t, "add", "c", "-c", f.cfg, "--public-key", pub(t)); code != 0 || !strings.Contains(errOut, "added to etcd") {
		t.Fatalf("add on etcd: %d %s", code, errOut)
	}
	if code, _, errOut := run(t, "add", "d", "-c", f.cfg, "--public-key", pub(t), "--address", "100.64.240.2"); code != cli.ExitUsage || !strings.Contains(errOut, "leased") {
		t.Errorf("add with a leased address: %d %s", code, errOut)
	}
	code, out, errOut = run(t, "list", "-c", f.cfg)
	for _, want := range []string{"a ", "b ", "c ", "etcd", "fixed", "config", "replicas running: none"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("list lacks %q: %d\n%s%s", want, code, out, errOut)
		}
	}
	if code, _, errOut := run(t, "remove", "c", "-c", f.cfg); code != 0 || !strings.Contains(errOut, "removed from etcd") {
		t.Errorf("remove on etcd: %d %s", code, errOut)
	}
	if code, _, errOut := run(t, "remove", "fixed", "-c", f.cfg); code != cli.ExitUsage || !strings.Contains(errOut, "not in etcd") {
		t.Errorf("remove a peer of the config: %d %s", code, errOut)
	}
	// Export: what was imported, to another directory; not over files.
	to := t.TempDir()
	code, out, errOut = runStore(t, "store", "export", "-c", f.cfg, "--to", to)
	if code != 0 || !strings.Contains(out, "exported 2 peers") {
		t.Fatalf("export: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := runStore(t, "store", "export", "-c", f.cfg, "--to", to); code != cli.ExitUsage || !strings.Contains(errOut, "--force") {
		t.Errorf("export over files: %d %s", code, errOut)
	}
	src, err := os.ReadFile(filepath.Join(to, config.PeersFileName))
	if err != nil {
		t.Fatal(err)
	}
	list, err := config.ParsePeersFile("x", src)
	if err != nil || len(list) != 2 || list[0].Name != "a" || list[1].Address != "100.64.240.20" {
		t.Errorf("exported peers: %v %+v", err, list)
	}
	ls, err := ipam.ReadLeases(to)
	got := map[string]string{}
	for _, l := range ls {
		got[l.Name] = l.Address
	}
	if err != nil || len(ls) != 2 || got["a"] != "100.64.240.2" || got["b"] != "100.64.240.20" {
		t.Errorf("exported leases (a's, and b's fixed address held like one): %v %+v", err, ls)
	}
}

// With etcd away, peer add fails naming the endpoints and the timeout.
func TestPeerAddEtcdAway(t *testing.T) {
	f := newFixture(t, "198.51.100.2:9623")
	b, err := os.ReadFile(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	// [store] must come before the [[peer]] of the fixture.
	cfg := strings.Replace(string(b), "\n[[peer]]", "\n[store]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:1\"]\ndial_timeout = \"300ms\"\n\n[[peer]]", 1)
	if err := os.WriteFile(f.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, "add", "x", "-c", f.cfg, "--public-key", pub(t))
	if code != cli.ExitRuntime || !strings.Contains(errOut, "http://127.0.0.1:1") || !strings.Contains(errOut, "300ms") {
		t.Errorf("add with etcd away: %d %s", code, errOut)
	}
}
