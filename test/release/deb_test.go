package release

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/gtun/gtun/internal/testnet"
)

// debs builds the two Debian packages for this machine's architecture
// from the shared release tarball (make deb's script) and returns their
// paths by package name.
func debs(t *testing.T) map[string]string {
	t.Helper()
	testnet.RequireTools(t, "dpkg-deb", "dpkg")
	dir := t.TempDir()
	tarball := "gtun-" + releaseVersion + "-linux-" + runtime.GOARCH + ".tar.gz"
	if err := os.Link(filepath.Join(sharedDist(t), tarball), filepath.Join(dir, tarball)); err != nil {
		t.Fatal(err)
	}
	buildRelease(t, dir, "deb.sh")
	out := map[string]string{}
	for _, name := range []string{"gtun", "gtund"} {
		// VERSION 9.8.7-test as a Debian version: 9.8.7+test.
		out[name] = filepath.Join(dir, name+"_9.8.7+test_"+runtime.GOARCH+".deb")
		if _, err := os.Stat(out[name]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dpkgRoot is a fresh root with an empty dpkg database: `dpkg --root`
// installs into it with the real maintainer scripts, which run outside a
// chroot with DPKG_ROOT set (--force-script-chrootless), as Debian's
// bootstrap tools do.
func dpkgRoot(t *testing.T) (string, func(args ...string) string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testnet.Missing(t, "root (dpkg --root installs files owned by root)")
	}
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return root, func(args ...string) string {
		t.Helper()
		return run(t, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--log=/dev/null"}, args...)...)
	}
}

// layout lists every path under root but the dpkg database, with its mode.
func layout(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel := "/" + strings.TrimPrefix(p, root+"/")
		if rel == "/var" || rel == "/var/lib" || strings.HasPrefix(rel, "/var/lib/dpkg") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		lines = append(lines, info.Mode().String()+" "+rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(lines, func(i, j int) bool { return strings.Fields(lines[i])[1] < strings.Fields(lines[j])[1] })
	return strings.Join(lines, "\n") + "\n"
}

const wantDebLayout = `drwxr-xr-x /etc
drwx------ /etc/gtund
-rw------- /etc/gtund/gtund.toml
-rw------- /etc/gtund/private.key
drwxr-xr-x /lib
drwxr-xr-x /lib/systemd
drwxr-xr-x /lib/systemd/system
-rw-r--r-- /lib/systemd/system/gtund.service
drwxr-xr-x /usr
drwxr-xr-x /usr/bin
-rwxr-xr-x /usr/bin/gtund
drwxr-xr-x /usr/share
drwxr-xr-x /usr/share/doc
drwxr-xr-x /usr/share/doc/gtund
-rw-r--r-- /usr/share/doc/gtund/changelog.gz
-rw-r--r-- /usr/share/doc/gtund/copyright
drwxr-xr-x /usr/share/doc/gtund/examples
-rw-r--r-- /usr/share/doc/gtund/examples/gtund.toml
drwxr-xr-x /usr/share/lintian
drwxr-xr-x /usr/share/lintian/overrides
-rw-r--r-- /usr/share/lintian/overrides/gtund
drwxr-xr-x /usr/share/man
drwxr-xr-x /usr/share/man/man5
-rw-r--r-- /usr/share/man/man5/gtund.toml.5.gz
drwxr-xr-x /usr/share/man/man8
-rw-r--r-- /usr/share/man/man8/gtund.8.gz
`

// manualFiles are the pages of the manual a package ships under
// /usr/share/doc/NAME, as the tarball lays them out: README.md, docs/*.md,
// the Grafana dashboard, bench/RESULTS.md and the example configs the
// pages link to (paths relative to the repository and to that directory
// alike).
func manualFiles(t *testing.T) []string {
	t.Helper()
	root := testnet.RepoRoot()
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("docs/*.md: %v (%d pages)", err, len(pages))
	}
	files := []string{"README.md", "docs/grafana/gtun.json", "bench/RESULTS.md", "etc/gtun.toml", "etc/gtund.toml"}
	for _, p := range pages {
		files = append(files, "docs/"+filepath.Base(p))
	}
	return files
}

// withManual is layout lines plus the manual's files and directories
// under /usr/share/doc/NAME, in layout's order.
func withManual(t *testing.T, base, name string) string {
	t.Helper()
	doc := "/usr/share/doc/" + name + "/"
	lines := strings.Split(strings.TrimSpace(base), "\n")
	for _, d := range []string{"bench", "docs", "docs/grafana", "etc"} {
		lines = append(lines, "drwxr-xr-x "+doc+d)
	}
	// Links to what Debian keeps elsewhere: the license (in copyright) and
	// the man pages.
	lines = append(lines, "Lrwxrwxrwx "+doc+"LICENSE", "Lrwxrwxrwx "+doc+"docs/man")
	for _, f := range manualFiles(t) {
		lines = append(lines, "-rw-r--r-- "+doc+f)
	}
	sort.Slice(lines, func(i, j int) bool { return strings.Fields(lines[i])[1] < strings.Fields(lines[j])[1] })
	return strings.Join(lines, "\n") + "\n"
}

// checkManual: the installed manual in dir is the source tree's, and every
// relative link of its pages leads to an installed file.
func checkManual(t *testing.T, dir string) {
	t.Helper()
	root := testnet.RepoRoot()
	for _, f := range manualFiles(t) {
		got := readFile(t, filepath.Join(dir, f))
		if !bytes.Equal(got, readFile(t, filepath.Join(root, f))) {
			t.Errorf("%s differs from the source tree's", filepath.Join(dir, f))
		}
		if !strings.HasSuffix(f, ".md") {
			continue
		}
		written, targets := relativeLinks(got)
		for i, target := range targets {
			if _, err := os.Stat(filepath.Join(dir, filepath.Dir(f), target)); err != nil {
				t.Errorf("installed %s links to %s: %v", f, written[i], err)
			}
		}
	}
}

// make deb's packages, installed into a fresh root with dpkg: every file
// where the docs say with its mode, the config a conffile, a key made by
// the postinst (and kept on reinstall, as is an edited config), the units
// running /usr/bin; removal keeps config and key, purge removes them and
// gtund's state. The gtun package installs beside it.
func TestDebPackages(t *testing.T) {
	pkgs := debs(t)
	root := testnet.RepoRoot()

	for name, deb := range pkgs {
		info := run(t, "dpkg-deb", "--info", deb)
		for _, want := range []string{"Package: " + name + "\n", "Version: 9.8.7+test\n", "Architecture: " + runtime.GOARCH + "\n",
			"Section: net\n", "of an encrypted layer-3 tunnel", "systemctl enable --now " + name + "\n"} {
			if !strings.Contains(info, want) {
				t.Errorf("%s control lacks %q:\n%s", name, want, info)
			}
		}
		if got := run(t, "dpkg-deb", "--field", deb, "Depends"); strings.TrimSpace(got) != "" {
			t.Errorf("%s depends on %s (the binaries are static)", name, got)
		}
		conffiles := run(t, "sh", "-c", fmt.Sprintf("dpkg-deb --ctrl-tarfile %s | tar -xOf - ./conffiles", deb))
		if conffiles != "/etc/"+name+"/"+name+".toml\n" {
			t.Errorf("%s conffiles: %q", name, conffiles)
		}
		// Owner root for every file, one mtime (SOURCE_DATE_EPOCH).
		for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", deb)), "\n") {
			if f := strings.Fields(line); len(f) < 6 || f[1] != "root/root" || f[3]+" "+f[4] != "2026-01-01 00:00" {
				t.Errorf("%s: %s (want root/root, 2026-01-01 00:00)", name, line)
			}
		}
	}

	r, dpkg := dpkgRoot(t)
	out := dpkg("-i", pkgs["gtund"])
	if got, want := layout(t, r), withManual(t, wantDebLayout, "gtund"); got != want {
		t.Errorf("installed gtund:\n%s\nwant:\n%s", got, want)
	}
	checkManual(t, filepath.Join(r, "usr/share/doc/gtund"))
	key := filepath.Join(r, "etc/gtund/private.key")
	pub := strings.TrimSpace(run(t, "sh", "-c", filepath.Join(r, "usr/bin/gtund")+" pubkey < "+key))
	if !strings.Contains(out, "gtund: made the private key /etc/gtund/private.key; its public key is "+pub+"\n") {
		t.Errorf("postinst did not say which key it made (%s):\n%s", pub, out)
	}
	for rel, src := range map[string]string{"etc/gtund/gtund.toml": "etc/gtund.toml", "usr/share/doc/gtund/examples/gtund.toml": "etc/gtund.toml"} {
		if a, b := readFile(t, filepath.Join(r, rel)), readFile(t, filepath.Join(root, src)); !bytes.Equal(a, b) {
			t.Errorf("/%s differs from %s", rel, src)
		}
	}
	unit := string(readFile(t, filepath.Join(r, "lib/systemd/system/gtund.service")))
	if !strings.Contains(unit, "\nExecStart=/usr/bin/gtund -c /etc/gtund/gtund.toml\n") {
		t.Errorf("gtund.service does not run /usr/bin/gtund:\n%s", unit)
	}
	man := run(t, "sh", "-c", "zcat "+filepath.Join(r, "usr/share/man/man8/gtund.8.gz"))
	if man != string(readFile(t, filepath.Join(root, "docs/man/gtund.8"))) {
		t.Error("gtund.8.gz is not docs/man/gtund.8")
	}
	if v := run(t, filepath.Join(r, "usr/bin/gtund"), "version"); !strings.HasPrefix(v, "gtund 9.8.7-test (commit feedc0de") {
		t.Errorf("installed gtund version: %s", v)
	}

	// Reinstall (an upgrade): the operator's config and the key stay.
	conf := filepath.Join(r, "etc/gtund/gtund.toml")
	edited := append(readFile(t, conf), "# the operator's edit\n"...)
	if err := os.WriteFile(conf, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	keyBefore := readFile(t, key)
	if out := dpkg("-i", pkgs["gtund"]); strings.Contains(out, "made the private key") {
		t.Errorf("reinstall made another key:\n%s", out)
	}
	if !bytes.Equal(readFile(t, conf), edited) || !bytes.Equal(readFile(t, key), keyBefore) {
		t.Error("reinstall changed the operator's config or key")
	}

	// gtun beside it, with its own key.
	dpkg("-i", pkgs["gtun"])
	for _, p := range []string{"usr/bin/gtun", "lib/systemd/system/gtun@.service", "usr/share/man/man5/gtun.toml.5.gz", "etc/gtun/private.key"} {
		if _, err := os.Stat(filepath.Join(r, p)); err != nil {
			t.Errorf("gtun package: %v", err)
		}
	}
	if bytes.Equal(readFile(t, filepath.Join(r, "etc/gtun/private.key")), keyBefore) {
		t.Error("gtun and gtund got the same key")
	}
	checkManual(t, filepath.Join(r, "usr/share/doc/gtun"))

	// Remove keeps config and key; purge removes them and the state.
	state := filepath.Join(r, "var/lib/gtund")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "peers.toml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dpkg("-r", "gtund")
	if _, err := os.Stat(filepath.Join(r, "usr/bin/gtund")); err == nil {
		t.Error("remove left /usr/bin/gtund")
	}
	if !bytes.Equal(readFile(t, conf), edited) || !bytes.Equal(readFile(t, key), keyBefore) {
		t.Error("remove did not keep the config and the key")
	}
	dpkg("-P", "gtund")
	for _, p := range []string{"etc/gtund", "var/lib/gtund"} {
		if _, err := os.Stat(filepath.Join(r, p)); err == nil {
			t.Errorf("purge left /%s", p)
		}
	}
	if _, err := os.Stat(filepath.Join(r, "usr/bin/gtun")); err != nil {
		t.Errorf("purging gtund touched gtun: %v", err)
	}
}

// lintian, Debian's package checker, finds nothing to warn about (the
// deliberate exceptions are overridden in packaging/deb/lintian-overrides,
// each with its reason).
func TestDebPackagesLintian(t *testing.T) {
	testnet.RequireTools(t, "lintian")
	pkgs := debs(t)
	cmd := exec.Command("lintian", "--tag-display-limit", "0", "--fail-on", "error,warning", pkgs["gtun"], pkgs["gtund"])
	out, err := cmd.CombinedOutput()
	var tags []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.Contains(line, "running with root privileges") {
			tags = append(tags, line)
		}
	}
	if err != nil || len(tags) > 0 {
		t.Errorf("lintian: %v\n%s", err, strings.Join(tags, "\n"))
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
