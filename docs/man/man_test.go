// Package man holds the man pages: each *.md here is the one source of a
// page, and the page next to it is go-md2man's rendering (make man). The
// tests keep the two in step and the pages free of groff warnings; the
// mains' and pkg/config's tests check that the pages name every command,
// flag and key.
package man

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cpuguy83/go-md2man/v2/md2man"

	"github.com/gtun/gtun/internal/testnet"
)

// Pages are the man pages, each rendered from PAGE.md.
var Pages = []string{"gtun.8", "gtund.8", "gtun.toml.5", "gtund.toml.5"}

func TestPagesAreUpToDate(t *testing.T) {
	sources, _ := filepath.Glob("*.md")
	if len(sources) != len(Pages) {
		t.Errorf("sources %v, want one per page of %v", sources, Pages)
	}
	for _, page := range Pages {
		src, err := os.ReadFile(page + ".md")
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(page)
		if err != nil {
			t.Fatalf("%v (make man renders it)", err)
		}
		if !bytes.Equal(got, md2man.Render(src)) {
			t.Errorf("%s is not the rendering of %s.md: run make man", page, page)
		}
	}
}

var overstrike = regexp.MustCompile(".\x08")

// man --warnings: groff's warnings about the rendered page (bad escapes,
// lines it cannot break, unknown requests) come out on stderr.
func TestPagesHaveNoWarnings(t *testing.T) {
	testnet.RequireTools(t, "man")
	for _, page := range Pages {
		cmd := exec.Command("man", "--warnings", "-l", "-Tutf8", page)
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "LC_ALL=C.UTF-8")
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil || errOut.Len() > 0 {
			t.Errorf("man --warnings %s: %v\n%s", page, err, errOut.String())
		}
		name := page[:strings.LastIndex(page, ".")]           // gtun.toml.5: gtun.toml
		text := overstrike.ReplaceAllString(out.String(), "") // grotty's bold and underline
		if !regexp.MustCompile(`\nNAME\n\s+` + regexp.QuoteMeta(name) + `\s+-\s`).MatchString(text) {
			t.Errorf("man %s renders no NAME section:\n%s", page, out.String())
		}
	}
}
