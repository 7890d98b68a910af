// Package docs holds the user manual (docs/*.md, with README.md as its
// front page), the man page sources (docs/man) and the Grafana dashboard.
// The tests here keep the manual navigable and written for its readers:
// the front page stays short, every relative link and anchor leads
// somewhere, and no page speaks of internal planning documents or issue
// numbers that a user has never seen.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// frontPageLimit bounds README.md: it is a front page (what and why, the
// first commands, a quick start, links); the manual lives in docs/.
const frontPageLimit = 30_000

// userDocs are the files a user reads: the front page, the manual, the man
// page sources, the annotated example configs, and the bench's results.
func userDocs(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"../README.md", "*.md", "man/*.md", "../etc/*.toml", "../bench/*.md"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 5 {
		t.Fatalf("found only %v: run the test from docs/", files)
	}
	return files
}

func TestFrontPageIsShort(t *testing.T) {
	fi, err := os.Stat("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > frontPageLimit {
		t.Errorf("README.md is %d bytes, more than %d: it is the front page; move details into a docs/ page and link it", fi.Size(), frontPageLimit)
	}
}

var (
	// Words that point at what users do not have: the internal design
	// document, the brief, and issue numbers (#13, issue 6).
	internalWords = []*regexp.Regexp{
		regexp.MustCompile(`DESIGN(\.md)?\b`),
		regexp.MustCompile(`(?i)\bthe brief\b`),
		regexp.MustCompile(`(?i)\bissues?\s+#?\d+`),
		regexp.MustCompile(`(?:^|[\s(\[,;])#\d+\b`),
	}
)

func TestDocsMentionNoInternalDocumentsOrIssues(t *testing.T) {
	for _, f := range userDocs(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, re := range internalWords {
				if m := re.FindString(line); m != "" {
					t.Errorf("%s:%d: %q: users have no such document or issue tracker; say what it means instead", f, i+1, strings.TrimSpace(m))
				}
			}
		}
	}
}

var (
	fence      = regexp.MustCompile("(?ms)^\\s*```.*?^\\s*```[^\\n]*$")
	codeSpan   = regexp.MustCompile("`[^`\\n]*`")
	mdLink     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdHeading  = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)
	schemeLike = regexp.MustCompile(`^[a-z][a-z0-9+.-]*:`)
)

// prose is a Markdown file without its code blocks and code spans, where a
// "[x](y)" or a "# comment" is not a link or a heading.
func prose(md string) string {
	return codeSpan.ReplaceAllString(fence.ReplaceAllString(md, ""), "")
}

// anchors are the fragment names GitHub gives a Markdown file's headings:
// lower case, punctuation dropped, spaces made hyphens, "-1", "-2" on
// repeats.
func anchors(md string) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	for _, m := range mdHeading.FindAllStringSubmatch(fence.ReplaceAllString(md, ""), -1) {
		text := regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`).ReplaceAllString(m[1], "$1") // a link's text only
		var b strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			out[a+"-"+itoa(n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func TestLinksLeadSomewhere(t *testing.T) {
	cache := map[string]map[string]bool{}
	anchorsOf := func(path string) (map[string]bool, error) {
		if a, ok := cache[path]; ok {
			return a, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		cache[path] = anchors(string(b))
		return cache[path], nil
	}
	checked := 0
	for _, f := range userDocs(t) {
		if !strings.HasSuffix(f, ".md") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(prose(string(b)), "\n") {
			for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if schemeLike.MatchString(target) {
					continue // http:, https:, mailto:
				}
				checked++
				path, anchor, _ := strings.Cut(target, "#")
				file := f
				if path != "" {
					file = filepath.Join(filepath.Dir(f), path)
					if _, err := os.Stat(file); err != nil {
						t.Errorf("%s: link %q: %s does not exist", f, target, file)
						continue
					}
				}
				if anchor == "" {
					continue
				}
				if !strings.HasSuffix(file, ".md") {
					t.Errorf("%s: link %q: an anchor into a file that is not Markdown", f, target)
					continue
				}
				a, err := anchorsOf(file)
				if err != nil {
					t.Fatal(err)
				}
				if !a[anchor] {
					t.Errorf("%s: link %q: %s has no heading #%s", f, target, file, anchor)
				}
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d relative links checked: the link pattern no longer matches the docs", checked)
	}
}

// The anchor rules, on headings the manual has.
func TestAnchors(t *testing.T) {
	a := anchors("# gtun\n## Lossy and distant links: KCP, auto, failover\n### Adding a VM (gtund peer add)\n```\n# not a heading\n```\n## Metrics\n## Metrics\n## The `udp` transport\n")
	for _, want := range []string{"gtun", "lossy-and-distant-links-kcp-auto-failover", "adding-a-vm-gtund-peer-add", "metrics", "metrics-1", "the-udp-transport"} {
		if !a[want] {
			t.Errorf("no anchor %q in %v", want, a)
		}
	}
	if a["not-a-heading"] {
		t.Error("a comment in a code block made an anchor")
	}
}

// Every page of the manual is linked from the front page's list, so that a
// new page cannot land where no reader finds it.
func TestFrontPageLinksEveryPage(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	linked := map[string]bool{}
	for _, m := range mdLink.FindAllStringSubmatch(prose(string(b)), -1) {
		path, _, _ := strings.Cut(m[1], "#")
		linked[filepath.Clean(path)] = true
	}
	pages, err := filepath.Glob("*.md")
	if err != nil || len(pages) == 0 {
		t.Fatalf("no pages in docs/: %v", err)
	}
	for _, p := range pages {
		if !linked[filepath.Join("docs", p)] {
			t.Errorf("docs/%s is not linked from README.md: add it to the Documentation list", p)
		}
	}
}
