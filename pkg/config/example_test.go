package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The annotated examples in etc/ are what operators copy: they must load
// once their key file paths point at real keys, and document every key.

var keyFileLine = regexp.MustCompile(`(?m)^(private_key_file\s*=\s*)"[^"]*"`)

// loadableExample copies etc/name with private_key_file pointing at a fresh
// 0600 key file and returns the copy's path and the original text.
func loadableExample(t *testing.T, name string) (string, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "etc", name))
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	if n := len(keyFileLine.FindAllString(src, -1)); n != 1 {
		t.Fatalf("%s sets private_key_file %d times, want once", name, n)
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "private.key")
	writeKey(t, key, genKey(t), 0o600)
	path := filepath.Join(dir, name)
	out := keyFileLine.ReplaceAllLiteralString(src, `private_key_file = "`+key+`"`)
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, src
}

func TestExampleServerConfigLoads(t *testing.T) {
	path, _ := loadableExample(t, "gtund.toml")
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	// The DESIGN config contract: names and values that scripts rely on.
	if s.Listen != "0.0.0.0:9623" || s.Tun != "gtund0" || s.MTU != 1400 || !s.NAT ||
		s.StateDir != "/var/lib/gtund" || s.ControlSocket != "/run/gtund/gtund.sock" ||
		s.Pool != netip.MustParsePrefix("100.64.240.0/24") || s.Keepalive != 2*time.Second || s.DeadAfter != 3 {
		t.Errorf("server = %+v", s)
	}
	wantRoutes := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")}
	if !slices.Equal(s.Routes, wantRoutes) {
		t.Errorf("routes = %v, want %v", s.Routes, wantRoutes)
	}
	if len(s.Peers) == 0 || s.Peers[0].Name != "sz-ecs-1" || s.Peers[0].Address != netip.MustParseAddr("100.64.240.10") {
		t.Errorf("peers = %+v", s.Peers)
	}
	if s.Log != (Log{Level: "info", Format: "text"}) {
		t.Errorf("log = %+v", s.Log)
	}
}

func TestExampleClientConfigLoads(t *testing.T) {
	path, _ := loadableExample(t, "gtun.toml")
	c, err := LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Tun != "gtun0" || c.ControlSocket != "/run/gtun/gtun.sock" || c.Log != (Log{Level: "info", Format: "text"}) {
		t.Errorf("client = %+v", c)
	}
	if len(c.Servers) != 1 {
		t.Fatalf("servers = %+v", c.Servers)
	}
	e := c.Servers[0]
	if e.Name != "hk-cluster" || e.Transport != "tcp" || !slices.Equal(e.Endpoints, []string{"203.0.113.10:9623"}) || len(e.Routes) != 0 {
		t.Errorf("server = %+v", e)
	}
}

// tables splits a TOML text into the bodies of its tables, lines trimmed
// (array tables: their first occurrence).
func tables(src string) map[string]string {
	out := map[string]string{}
	cur := ""
	var body strings.Builder
	flush := func() {
		if _, seen := out[cur]; !seen {
			out[cur] = body.String()
		}
		body.Reset()
	}
	for line := range strings.Lines(src) {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "[") {
			flush()
			cur = strings.Trim(strings.TrimSpace(stripComment(l)), "[]")
			continue
		}
		body.WriteString(l + "\n")
	}
	flush()
	return out
}

// Every key of the config structs (keyList: keys added later included) is
// in the annotated example, set or commented out, with a comment line
// right above it; a key of an inline table (server.dns.servers) is named
// on its parent's line.
func TestExamplesDocumentEveryKey(t *testing.T) {
	for _, c := range []struct {
		file string
		keys []key
	}{
		{"gtund.toml", keyList(ServerFile{})},
		{"gtun.toml", keyList(ClientFile{})},
	} {
		b, err := os.ReadFile(filepath.Join("..", "..", "etc", c.file))
		if err != nil {
			t.Fatal(err)
		}
		got := tables(string(b))
		for _, k := range c.keys {
			top, inline, nested := strings.Cut(k.Table, ".")
			body, ok := got[top]
			if !ok {
				t.Errorf("%s: no [%s] table", c.file, top)
				continue
			}
			re := regexp.MustCompile(`(?m)^#.*\n(?:# )?` + regexp.QuoteMeta(k.Name) + `\s*=`)
			if nested {
				re = regexp.MustCompile(`(?m)^(?:# )?` + regexp.QuoteMeta(inline) + `\s*=.*\b` + regexp.QuoteMeta(k.Name) + `\s*=`)
			}
			if !re.MatchString(body) {
				t.Errorf("%s: [%s] %s is missing or has no comment above it", c.file, top, k.Path())
			}
		}
	}
}

// docs/configuration.md, the manual's page on configuration, explains the
// keys by task; the annotated examples above are the reference. It must
// still name every key (in a code span), so that a new key cannot land
// undocumented there.
func TestManualConfigurationNamesEveryKey(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, span := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(string(b), -1) {
		for _, word := range regexp.MustCompile(`[a-z][a-z_0-9]*`).FindAllString(span[1], -1) {
			named[word] = true
		}
	}
	for _, k := range append(keyList(ServerFile{}), keyList(ClientFile{})...) {
		if !named[k.Name] {
			t.Errorf("docs/configuration.md: key %s is not named (as `%s`)", k.Path(), k.Name)
		}
	}
}

// The man pages gtund.toml(5) and gtun.toml(5) name every key in the
// section of its table ("# [server]", "# [[peer]]"), as a bold term:
// **listen**, or **dns.servers** for a key of an inline table.
func TestManPagesNameEveryKey(t *testing.T) {
	for page, keys := range map[string][]key{
		"gtund.toml.5.md": keyList(ServerFile{}),
		"gtun.toml.5.md":  keyList(ClientFile{}),
	} {
		b, err := os.ReadFile(filepath.Join("..", "..", "docs", "man", page))
		if err != nil {
			t.Fatal(err)
		}
		sections := map[string]string{}
		for _, sec := range strings.Split(string(b), "\n# ")[1:] {
			title, body, _ := strings.Cut(sec, "\n")
			sections[strings.Trim(title, "[]")] = body
		}
		for _, k := range keys {
			top, inline, nested := strings.Cut(k.Table, ".")
			term := "**" + k.Name + "**"
			if nested {
				term = "**" + inline + "." + k.Name + "**"
			}
			if body, ok := sections[top]; !ok || !strings.Contains(body, term) {
				t.Errorf("docs/man/%s: section [%s] does not name %s (as %s)", page, top, k.Path(), term)
			}
		}
	}
}
