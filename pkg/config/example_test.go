package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
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

// tomlKeys lists the toml tags of the fields of a struct type.
func tomlKeys(v any) []string {
	var out []string
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		if tag, _, _ := strings.Cut(rt.Field(i).Tag.Get("toml"), ","); tag != "" && tag != "-" {
			out = append(out, tag)
		}
	}
	return out
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

func TestExamplesDocumentEveryKey(t *testing.T) {
	for _, c := range []struct {
		file   string
		tables map[string]any
	}{
		{"gtund.toml", map[string]any{"server": ServerSection{}, "peer": PeerSection{}, "log": Log{}}},
		{"gtun.toml", map[string]any{"client": ClientSection{}, "server": ServerEntryTOML{}, "log": Log{}}},
	} {
		b, err := os.ReadFile(filepath.Join("..", "..", "etc", c.file))
		if err != nil {
			t.Fatal(err)
		}
		got := tables(string(b))
		for table, section := range c.tables {
			body, ok := got[table]
			if !ok {
				t.Errorf("%s: no [%s] table", c.file, table)
				continue
			}
			for _, key := range tomlKeys(section) {
				// The key, set or commented out, with a comment line right above.
				re := regexp.MustCompile(`(?m)^#.*\n(?:# )?` + regexp.QuoteMeta(key) + `\s*=`)
				if !re.MatchString(body) {
					t.Errorf("%s: [%s] %s is missing or has no comment above it", c.file, table, key)
				}
			}
		}
	}
}

// The README's Configuration section summarises the config; the annotated
// examples above are the reference. The summary must still name every key
// (in a code span), so that a new key cannot land undocumented there.
func TestReadmeConfigurationNamesEveryKey(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "\n## Configuration\n")
	if start < 0 {
		t.Fatal("README.md has no \"## Configuration\" section")
	}
	section := readme[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	named := map[string]bool{}
	for _, span := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(section, -1) {
		for _, word := range regexp.MustCompile(`[a-z_]+`).FindAllString(span[1], -1) {
			named[word] = true
		}
	}
	for what, section := range map[string]any{
		"gtund [server]": ServerSection{}, "gtund [server] dns": DNSTOML{}, "gtund [[peer]]": PeerSection{},
		"gtun [client]": ClientSection{}, "gtun [[server]]": ServerEntryTOML{}, "[log]": Log{},
	} {
		for _, key := range tomlKeys(section) {
			if !named[key] {
				t.Errorf("README.md, Configuration: %s key %s is not named (as `%s`)", what, key, key)
			}
		}
	}
}
