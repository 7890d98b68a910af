// Package release tests what `make dist` ships: the tarball's contents,
// modes and owners, its reproducibility, and the version the binaries print.
package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/secure"
)

// mdLink is a Markdown link's target.
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// relativeLinks are the targets of page's links to files beside it, as
// written and without their #fragment: not URLs, not anchors in the page.
func relativeLinks(page []byte) (written, file []string) {
	for _, m := range mdLink.FindAllSubmatch(page, -1) {
		target := string(m[1])
		if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		f, _, _ := strings.Cut(target, "#")
		written, file = append(written, target), append(file, f)
	}
	return written, file
}

func build(t *testing.T, pkg string, flags ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", append(append([]string{"build"}, flags...), "-o", out, pkg)...)
	cmd.Dir = testnet.RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func version(t *testing.T, bin string) string {
	t.Helper()
	b, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, b)
	}
	return strings.TrimSpace(string(b))
}

// `gtun version` and `gtund version` print what the build set with
// -ldflags (make build, make dist), and something sensible without it.
func TestVersion(t *testing.T) {
	proto := secure.ProtocolVersion
	ld := "-X github.com/gtun/gtun/pkg/cli.Version=1.2.3-rc1 -X github.com/gtun/gtun/pkg/cli.Commit=0123abc"
	for _, name := range []string{"gtun", "gtund"} {
		if got, want := version(t, build(t, "./"+name, "-ldflags", ld)), fmt.Sprintf("%s 1.2.3-rc1 (commit 0123abc, protocol %d)", name, proto); got != want {
			t.Errorf("with -ldflags: %q, want %q", got, want)
		}
		// No -ldflags and no VCS stamp (outside a checkout, or
		// -buildvcs=false as in a tarball build without make).
		if got, want := version(t, build(t, "./"+name, "-buildvcs=false")), fmt.Sprintf("%s dev (commit unknown, protocol %d)", name, proto); got != want {
			t.Errorf("plain go build: %q, want %q", got, want)
		}
	}
}

// What the release tests build: for this machine's architecture (so the
// binaries run), with a fixed version, commit and time.
const (
	releaseVersion = "9.8.7-test"
	releaseCommit  = "feedc0de"
	releaseEpoch   = 1767225600 // 2026-01-01T00:00:00Z
)

// buildRelease runs a release script (dist.sh, deb.sh) into dir.
func buildRelease(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(testnet.RepoRoot(), "scripts", script))
	cmd.Env = append(os.Environ(), "DISTDIR="+dir, "ARCHES="+runtime.GOARCH, "VERSION="+releaseVersion, "COMMIT="+releaseCommit,
		fmt.Sprintf("SOURCE_DATE_EPOCH=%d", releaseEpoch))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

// shared is one dist.sh build for the package's tests (two builds of the
// Go binaries cost half a minute on the test machine), removed by TestMain.
var shared struct {
	once sync.Once
	dir  string
	ok   bool
}

func sharedDist(t *testing.T) string {
	t.Helper()
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "gtun-release")
		if err != nil {
			t.Fatal(err)
		}
		shared.dir = dir
		buildRelease(t, dir, "dist.sh")
		shared.ok = true
	})
	if !shared.ok {
		t.Fatal("the shared dist.sh build failed (see the first test that ran it)")
	}
	return shared.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// distFile is one entry of a tarball.
type distFile struct {
	mode     int64
	uid, gid int
	mtime    time.Time
	body     []byte
}

func readTarball(t *testing.T, path string) map[string]distFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("%s: gzip header stores name %q, time %v (want neither: gzip -n)", path, zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	out := map[string]distFile{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner names %q/%q stored", h.Name, h.Uname, h.Gname)
		}
		out[h.Name] = distFile{mode: h.Mode, uid: h.Uid, gid: h.Gid, mtime: h.ModTime, body: body}
	}
	return out
}

// make dist's script, for one architecture (the host's, so the binaries
// run): the tarball holds exactly the release files with fixed modes,
// owner 0 and the given time, its binaries print the version, SHA256SUMS
// matches, and a second build gives the same bytes. (make dist-check goes
// further: both architectures, the second build from another directory with
// an empty build cache.)
func TestDistTarball(t *testing.T) {
	root := testnet.RepoRoot()
	epoch := int64(releaseEpoch)
	arch := runtime.GOARCH
	dist := func(dir string) (string, string) {
		buildRelease(t, dir, "dist.sh")
		sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		return dir, string(sums)
	}
	dir, sums := dist(sharedDist(t))
	name := "gtun-9.8.7-test-linux-" + arch
	tarball := filepath.Join(dir, name+".tar.gz")

	b, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if want := hex.EncodeToString(sum[:]) + "  " + name + ".tar.gz\n"; sums != want {
		t.Errorf("SHA256SUMS = %q, want %q", sums, want)
	}

	files := readTarball(t, tarball)
	want := map[string]int64{
		name + "/":                       0o755,
		name + "/LICENSE":                0o644,
		name + "/README.md":              0o644,
		name + "/bench/":                 0o755,
		name + "/bench/RESULTS.md":       0o644,
		name + "/bin/":                   0o755,
		name + "/bin/gtun":               0o755,
		name + "/bin/gtund":              0o755,
		name + "/docs/":                  0o755,
		name + "/docs/grafana/":          0o755,
		name + "/docs/grafana/gtun.json": 0o644,
		name + "/docs/man/":              0o755,
		name + "/docs/man/gtun.8":        0o644,
		name + "/docs/man/gtund.8":       0o644,
		name + "/docs/man/gtun.toml.5":   0o644,
		name + "/docs/man/gtund.toml.5":  0o644,
		name + "/etc/":                   0o755,
		name + "/etc/gtun.toml":          0o644,
		name + "/etc/gtund.toml":         0o644,
		name + "/scripts/":               0o755,
		name + "/scripts/install.sh":     0o755,
		name + "/scripts/uninstall.sh":   0o755,
		name + "/systemd/":               0o755,
		name + "/systemd/gtun.service":   0o644,
		name + "/systemd/gtun@.service":  0o644,
		name + "/systemd/gtund.service":  0o644,
	}
	// The manual, which README.md links into: every page of docs/.
	manual, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(manual) == 0 {
		t.Fatalf("no manual pages in %s/docs: %v", root, err)
	}
	for _, page := range manual {
		want[name+"/docs/"+filepath.Base(page)] = 0o644
	}
	for p, mode := range want {
		f, ok := files[p]
		if !ok {
			t.Errorf("%s missing from the tarball", p)
			continue
		}
		if f.mode != mode || f.uid != 0 || f.gid != 0 || f.mtime.Unix() != epoch {
			t.Errorf("%s: mode %o uid %d gid %d mtime %v, want %o 0 0 %v", p, f.mode, f.uid, f.gid, f.mtime.UTC(), mode, time.Unix(epoch, 0).UTC())
		}
		if strings.HasSuffix(p, "/") || strings.Contains(p, "/bin/") {
			continue
		}
		src, err := os.ReadFile(filepath.Join(root, strings.TrimPrefix(p, name+"/")))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(src, f.body) {
			t.Errorf("%s differs from the source tree", p)
		}
	}
	for p := range files {
		if _, ok := want[p]; !ok {
			t.Errorf("unexpected %s in the tarball", p)
		}
	}
	// Every relative link of the shipped pages leads to a shipped file.
	for p, f := range files {
		if !strings.HasSuffix(p, ".md") {
			continue
		}
		written, targets := relativeLinks(f.body)
		for i, target := range targets {
			target = path.Join(path.Dir(p), target)
			_, file := files[target]
			if _, dir := files[target+"/"]; !file && !dir {
				t.Errorf("%s links to %s, which the tarball lacks", p, written[i])
			}
		}
	}

	// The shipped binaries: static, and they say what they are.
	bin := t.TempDir()
	for _, b := range []string{"gtun", "gtund"} {
		path := filepath.Join(bin, b)
		if err := os.WriteFile(path, files[name+"/bin/"+b].body, 0o755); err != nil {
			t.Fatal(err)
		}
		if got, want := version(t, path), fmt.Sprintf("%s 9.8.7-test (commit feedc0de, protocol %d)", b, secure.ProtocolVersion); got != want {
			t.Errorf("shipped %s version: %q, want %q", b, got, want)
		}
		if out, _ := exec.Command("file", path).Output(); len(out) > 0 && !regexp.MustCompile(`statically linked`).Match(out) {
			t.Errorf("%s is not static: %s", b, out)
		}
	}

	if _, again := dist(t.TempDir()); again != sums {
		t.Errorf("a second build differs:\n%s\n%s", sums, again)
	}
}
