package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gtun/gtun/internal/testnet"
)

// The layout of a default install (both roles, PREFIX=/usr/local, units
// under a DESTDIR in /lib/systemd/system), every path and its mode.
const wantLayout = `drwxr-xr-x /etc
drwx------ /etc/gtun
-rw------- /etc/gtun/gtun.toml
-rw------- /etc/gtun/private.key
drwx------ /etc/gtund
-rw------- /etc/gtund/gtund.toml
-rw------- /etc/gtund/private.key
drwxr-xr-x /lib
drwxr-xr-x /lib/systemd
drwxr-xr-x /lib/systemd/system
-rw-r--r-- /lib/systemd/system/gtun.service
-rw-r--r-- /lib/systemd/system/gtun@.service
-rw-r--r-- /lib/systemd/system/gtund.service
drwxr-xr-x /usr
drwxr-xr-x /usr/local
drwxr-xr-x /usr/local/bin
-rwxr-xr-x /usr/local/bin/gtun
-rwxr-xr-x /usr/local/bin/gtund
drwxr-xr-x /usr/local/share
drwxr-xr-x /usr/local/share/man
drwxr-xr-x /usr/local/share/man/man5
-rw-r--r-- /usr/local/share/man/man5/gtun.toml.5
-rw-r--r-- /usr/local/share/man/man5/gtund.toml.5
drwxr-xr-x /usr/local/share/man/man8
-rw-r--r-- /usr/local/share/man/man8/gtun.8
-rw-r--r-- /usr/local/share/man/man8/gtund.8
`

func TestInstallIntoDestdir(t *testing.T) {
	t.Parallel()
	tree := sourceTree(t, true)
	dest := t.TempDir()
	env := []string{"DESTDIR=" + dest}
	out := mustRun(t, tree, "install.sh", env)

	got := snapshot(t, dest)
	if m := modes(got); m != wantLayout {
		t.Fatalf("installed layout:\n%s\nwant:\n%s\ninstall.sh said:\n%s", m, wantLayout, out)
	}
	root := testnet.RepoRoot()
	for _, c := range []struct{ path, from string }{
		{"/usr/local/bin/gtun", bins["gtun"]},
		{"/usr/local/bin/gtund", bins["gtund"]},
		{"/lib/systemd/system/gtun.service", filepath.Join(root, "systemd/gtun.service")},
		{"/lib/systemd/system/gtun@.service", filepath.Join(root, "systemd/gtun@.service")},
		{"/lib/systemd/system/gtund.service", filepath.Join(root, "systemd/gtund.service")},
		{"/etc/gtun/gtun.toml", filepath.Join(root, "etc/gtun.toml")},
		{"/etc/gtund/gtund.toml", filepath.Join(root, "etc/gtund.toml")},
		{"/usr/local/share/man/man8/gtun.8", filepath.Join(root, "docs/man/gtun.8")},
		{"/usr/local/share/man/man8/gtund.8", filepath.Join(root, "docs/man/gtund.8")},
		{"/usr/local/share/man/man5/gtun.toml.5", filepath.Join(root, "docs/man/gtun.toml.5")},
		{"/usr/local/share/man/man5/gtund.toml.5", filepath.Join(root, "docs/man/gtund.toml.5")},
	} {
		if got[c.path].Sum != sumOf(t, c.from) {
			t.Errorf("%s differs from %s", c.path, c.from)
		}
	}

	// Each key is a valid private key, its public key printed for the
	// operator, and the two daemons got different keys.
	pubs := map[string]string{}
	for _, name := range []string{"gtun", "gtund"} {
		key := filepath.Join(dest, "etc", name, "private.key")
		pub := pubkey(t, filepath.Join(dest, "usr/local/bin", name), key)
		if !strings.Contains(out, name+" public key: "+pub+"\n") {
			t.Errorf("install.sh did not print %q\n%s", name+" public key: "+pub, out)
		}
		pubs[name] = pub
	}
	if pubs["gtun"] == pubs["gtund"] {
		t.Errorf("gtun and gtund got the same key")
	}

	// A second run changes nothing: same paths, modes, contents, mtimes.
	out2 := mustRun(t, tree, "install.sh", env)
	if again := snapshot(t, dest); !equalSnapshots(t, got, again) {
		t.Errorf("second run changed the tree; it said:\n%s", out2)
	}
	if !strings.Contains(out2, "nothing changed") {
		t.Errorf("second run does not say nothing changed:\n%s", out2)
	}
	for name, pub := range pubs {
		if !strings.Contains(out2, name+" public key: "+pub+"\n") {
			t.Errorf("second run does not print the existing %s public key:\n%s", name, out2)
		}
	}
}

func equalSnapshots(t *testing.T, a, b map[string]entry) bool {
	t.Helper()
	ok := true
	for _, k := range sortedKeys(a) {
		if a[k] != b[k] {
			t.Errorf("%s: %v (mtime %d) -> %v (mtime %d)", k, a[k], a[k].MTime, b[k], b[k].MTime)
			ok = false
		}
	}
	for _, k := range sortedKeys(b) {
		if _, seen := a[k]; !seen {
			t.Errorf("%s: new", k)
			ok = false
		}
	}
	return ok
}

func pubkey(t *testing.T, bin, keyFile string) string {
	t.Helper()
	f, err := os.Open(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, "pubkey")
	cmd.Stdin = f
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s pubkey < %s: %v", bin, keyFile, err)
	}
	return strings.TrimSpace(string(b))
}

// An operator's config and key are never touched; a newer binary or unit
// replaces the installed one.
func TestInstallKeepsOperatorFilesAndUpdatesOurs(t *testing.T) {
	t.Parallel()
	tree := sourceTree(t, true)
	dest := t.TempDir()
	env := []string{"DESTDIR=" + dest, "PREFIX=/usr"}
	mustRun(t, tree, "install.sh", env, "--client")

	conf := filepath.Join(dest, "etc/gtun/gtun.toml")
	key := filepath.Join(dest, "etc/gtun/private.key")
	mine := "# the operator's own\n"
	if err := os.WriteFile(conf, []byte(mine), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(conf, 0o640); err != nil {
		t.Fatal(err)
	}
	keyBefore := sumOf(t, key)
	// A new build: the binary gains bytes, the unit a line.
	appendTo(t, filepath.Join(tree, "bin/gtun"), "\x00new build")
	appendTo(t, filepath.Join(tree, "systemd/gtun.service"), "# new line\n")

	out := mustRun(t, tree, "install.sh", env, "--client")
	if b, _ := os.ReadFile(conf); string(b) != mine {
		t.Errorf("the operator's config was changed:\n%s", b)
	}
	if st, _ := os.Stat(conf); st.Mode().Perm() != 0o640 {
		t.Errorf("the operator's config mode changed to %v", st.Mode())
	}
	if sumOf(t, key) != keyBefore {
		t.Errorf("the existing key was replaced")
	}
	if sumOf(t, filepath.Join(dest, "usr/bin/gtun")) != sumOf(t, filepath.Join(tree, "bin/gtun")) {
		t.Errorf("the binary was not updated:\n%s", out)
	}
	if st, _ := os.Stat(filepath.Join(dest, "usr/bin/gtun")); st.Mode().Perm() != 0o755 {
		t.Errorf("updated binary has mode %v", st.Mode())
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "lib/systemd/system/gtun.service"))
	if !strings.HasSuffix(string(unit), "# new line\n") {
		t.Errorf("the unit was not updated:\n%s", out)
	}
	for _, want := range []string{"updated   " + dest + "/usr/bin/gtun", "kept      " + conf} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "nothing changed") {
		t.Errorf("says nothing changed after an update:\n%s", out)
	}
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// --client and --server install only their own files; PREFIX moves the
// binaries and every unit's ExecStart with them.
func TestInstallRolesAndPrefix(t *testing.T) {
	t.Parallel()
	tree := sourceTree(t, true)
	execStart := regexp.MustCompile(`(?m)^ExecStart=(\S+)`)
	for _, c := range []struct {
		arg, prefix string
		want, not   []string
	}{
		{"--client", "/usr", []string{"/usr/bin/gtun", "/usr/share/man/man8/gtun.8", "/usr/share/man/man5/gtun.toml.5",
			"/lib/systemd/system/gtun.service", "/lib/systemd/system/gtun@.service", "/etc/gtun/private.key"},
			[]string{"/usr/bin/gtund", "/usr/share/man/man8/gtund.8", "/lib/systemd/system/gtund.service", "/etc/gtund"}},
		{"--server", "/opt/gtun", []string{"/opt/gtun/bin/gtund", "/opt/gtun/share/man/man8/gtund.8", "/opt/gtun/share/man/man5/gtund.toml.5",
			"/lib/systemd/system/gtund.service", "/etc/gtund/private.key"},
			[]string{"/opt/gtun/bin/gtun", "/opt/gtun/share/man/man8/gtun.8", "/lib/systemd/system/gtun.service", "/lib/systemd/system/gtun@.service", "/etc/gtun"}},
	} {
		t.Run(c.arg, func(t *testing.T) {
			dest := t.TempDir()
			out := mustRun(t, tree, "install.sh", []string{"DESTDIR=" + dest, "PREFIX=" + c.prefix}, c.arg)
			got := snapshot(t, dest)
			for _, p := range c.want {
				if _, ok := got[p]; !ok {
					t.Errorf("%s not installed\n%s", p, out)
				}
			}
			for _, p := range c.not {
				if _, ok := got[p]; ok {
					t.Errorf("%s installed by %s", p, c.arg)
				}
			}
			units, _ := filepath.Glob(filepath.Join(dest, "lib/systemd/system/*.service"))
			for _, u := range units {
				b, _ := os.ReadFile(u)
				m := execStart.FindStringSubmatch(string(b))
				if m == nil || filepath.Dir(m[1]) != c.prefix+"/bin" {
					t.Errorf("%s: ExecStart %v, want the binary in %s/bin", u, m, c.prefix)
				}
			}
		})
	}
}

// --enable never touches systemd when DESTDIR is set: a systemctl first in
// PATH would record any call.
func TestInstallEnableIgnoredUnderDestdir(t *testing.T) {
	t.Parallel()
	tree := sourceTree(t, true)
	dest := t.TempDir()
	fake := t.TempDir()
	calls := filepath.Join(fake, "calls")
	script := "#!/bin/sh\necho \"$@\" >> " + calls + "\n"
	if err := os.WriteFile(filepath.Join(fake, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(tree, "scripts/install.sh"), "--enable")
	cmd.Env = []string{"PATH=" + fake + ":" + os.Getenv("PATH"), "DESTDIR=" + dest}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh --enable: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--enable ignored: DESTDIR is set") {
		t.Errorf("no word about --enable being ignored:\n%s", out)
	}
	if b, err := os.ReadFile(calls); err == nil {
		t.Errorf("systemctl was called under DESTDIR: %s", b)
	}
}

// Without binaries and without a source tree to build them in, install.sh
// says what to do and installs nothing.
func TestInstallRefusesWithoutBinaries(t *testing.T) {
	t.Parallel()
	tree := sourceTree(t, false)
	dest := t.TempDir()
	out, code := run(t, tree, "install.sh", []string{"DESTDIR=" + dest})
	if code == 0 {
		t.Fatalf("install.sh succeeded without binaries:\n%s", out)
	}
	if !strings.Contains(out, "make build") {
		t.Errorf("the refusal does not say how to get binaries:\n%s", out)
	}
	if got := snapshot(t, dest); len(got) != 0 {
		t.Errorf("installed something anyway:\n%s", modes(got))
	}
	if out, code := run(t, tree, "install.sh", []string{"DESTDIR=" + dest}, "--bogus"); code != 2 {
		t.Errorf("unknown argument: exit %d, want 2\n%s", code, out)
	}
}

// uninstall.sh removes binaries and units and keeps configs and keys;
// --purge removes those too. Both are idempotent.
func TestUninstall(t *testing.T) {
	t.Parallel()
	tree := sourceTree(t, true)
	dest := t.TempDir()
	env := []string{"DESTDIR=" + dest}
	mustRun(t, tree, "install.sh", env)
	// gtund's state dir, as systemd's StateDirectory= would have made it.
	if err := os.MkdirAll(filepath.Join(dest, "var/lib/gtund"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dest, "var/lib/gtund/leases.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dest)

	for range 2 {
		mustRun(t, tree, "uninstall.sh", env)
		got := snapshot(t, dest)
		var files []string
		for _, k := range sortedKeys(got) {
			if got[k].Mode.IsRegular() {
				files = append(files, k)
				if got[k] != before[k] {
					t.Errorf("%s changed by uninstall", k)
				}
			}
		}
		want := []string{"/etc/gtun/gtun.toml", "/etc/gtun/private.key", "/etc/gtund/gtund.toml", "/etc/gtund/private.key", "/var/lib/gtund/leases.json"}
		if strings.Join(files, " ") != strings.Join(want, " ") {
			t.Errorf("after uninstall: %v, want %v", files, want)
		}
	}

	for range 2 {
		mustRun(t, tree, "uninstall.sh", env, "--purge")
		got := snapshot(t, dest)
		for _, k := range sortedKeys(got) {
			if got[k].Mode.IsRegular() || strings.HasPrefix(k, "/etc/gtun") || strings.HasPrefix(k, "/var/lib/gtund") {
				t.Errorf("left after --purge: %s", k)
			}
		}
	}
}

// --no-keys (packaging) stages everything but the keys, and runs neither
// binary (they may be for another architecture).
func TestInstallNoKeys(t *testing.T) {
	tree := sourceTree(t, true)
	for name := range bins {
		// A binary that cannot run here, as an arm64 build on amd64.
		if err := os.WriteFile(filepath.Join(tree, "bin", name), []byte("not for this machine\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dest := t.TempDir()
	out := mustRun(t, tree, "install.sh", []string{"DESTDIR=" + dest, "PREFIX=/usr"}, "--no-keys")
	got := snapshot(t, dest)
	for _, p := range []string{"/etc/gtun/gtun.toml", "/etc/gtund/gtund.toml", "/usr/bin/gtun", "/usr/share/man/man8/gtund.8"} {
		if _, ok := got[p]; !ok {
			t.Errorf("%s not installed:\n%s", p, out)
		}
	}
	for p := range got {
		if strings.HasSuffix(p, ".key") {
			t.Errorf("%s made with --no-keys", p)
		}
	}
	if strings.Contains(out, "public key") {
		t.Errorf("--no-keys printed a public key:\n%s", out)
	}
}
