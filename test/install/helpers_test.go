// Package install tests scripts/install.sh, scripts/uninstall.sh and the
// systemd units they install, in temporary roots (DESTDIR): every file and
// its mode, the keys, idempotency, and `systemd-analyze verify` on the
// installed units.
package install

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gtun/gtun/internal/testnet"
)

// bins holds gtun and gtund, built once for the package.
var bins = map[string]string{}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gtun-install-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, name := range []string{"gtun", "gtund"} {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, "./"+name)
		cmd.Dir = testnet.RepoRoot()
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build ./%s: %v\n%s", name, err, b)
			os.Exit(1)
		}
		bins[name] = out
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sourceTree lays out what install.sh expects next to it, as in a release
// tarball: scripts/, docs/man/, etc/, systemd/ and (withBins) bin/ with the freshly
// built binaries. There is no go.mod, so install.sh cannot fall back to
// building.
func sourceTree(t *testing.T, withBins bool) string {
	t.Helper()
	root := testnet.RepoRoot()
	dir := t.TempDir()
	for _, rel := range []string{
		"scripts/install.sh", "scripts/uninstall.sh",
		"docs/man/gtun.8", "docs/man/gtund.8", "docs/man/gtun.toml.5", "docs/man/gtund.toml.5",
		"etc/gtun.toml", "etc/gtund.toml",
		"systemd/gtun.service", "systemd/gtun@.service", "systemd/gtund.service",
	} {
		copyFile(t, filepath.Join(root, rel), filepath.Join(dir, rel))
	}
	if withBins {
		for name, path := range bins {
			copyFile(t, path, filepath.Join(dir, "bin", name))
		}
	}
	return dir
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, st.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}

// run runs a script of tree with the environment env (plus PATH and HOME)
// and returns its combined output and exit code.
func run(t *testing.T, tree, script string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(tree, "scripts", script), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", script, err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

func mustRun(t *testing.T, tree, script string, env []string, args ...string) string {
	t.Helper()
	out, code := run(t, tree, script, env, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s", script, strings.Join(args, " "), code, out)
	}
	return out
}

// entry is what a test knows about one path under a root.
type entry struct {
	Mode  fs.FileMode // type bits and permissions
	Sum   string      // sha256 of a regular file
	MTime int64       // nanoseconds
}

func (e entry) String() string {
	s := e.Mode.String()
	if e.Sum != "" {
		s += " " + e.Sum[:12]
	}
	return s
}

// snapshot walks root and returns every path below it (relative, with a
// leading "/"), directories included.
func snapshot(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{Mode: info.Mode(), MTime: info.ModTime().UnixNano()}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			e.Sum = hex.EncodeToString(sum[:])
		}
		out["/"+filepath.ToSlash(strings.TrimPrefix(path, root+"/"))] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// modes renders a snapshot as "path mode" lines, for comparing layouts.
func modes(s map[string]entry) string {
	var b strings.Builder
	for _, k := range sortedKeys(s) {
		fmt.Fprintf(&b, "%s %s\n", s[k].Mode, k)
	}
	return b.String()
}

func sumOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
