package config

import (
	"slices"
	"strings"
	"testing"
)

func TestStripComment(t *testing.T) {
	cases := []struct{ in, want string }{
		{`a = 1`, `a = 1`},
		{`a = 1 # one`, `a = 1 `},
		{`# whole line`, ``},
		{`a = "x#y"`, `a = "x#y"`},
		{`a = "x#y" # c`, `a = "x#y" `},
		{`a = 'x#y' # c`, `a = 'x#y' `},
		{`a = "it's # fine" # c`, `a = "it's # fine" `},
		{`a = 'say "#"' # c`, `a = 'say "#"' `},
		{`a = "esc \" # still string" # c`, `a = "esc \" # still string" `},
		{`a = "back\\" # c`, `a = "back\\" `},
		{`a = 'lit\' # c`, `a = 'lit\' `},
		{`  "10.0.0.0/8", # pods`, `  "10.0.0.0/8", `},
	}
	for _, c := range cases {
		if got := stripComment(c.in); got != c.want {
			t.Errorf("stripComment(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

const indexSrc = `# gtund.toml: '#' in strings and multi-line arrays
top = "a # b"

[server]
listen = "0.0.0.0:9623" # [not] a table = no
control_socket = "/run/a#b.sock"  # '#' inside a string
routes = [
  "10.244.0.0/16", # pods
  # "10.0.0.0/8", commented out element
  "10.96.0.0/12",   # services
]
pool = "100.64.240.0/24"
"quoted" = 1
  indented = 2

[[peer]] # first
name = "a"
allowed = [ "10.244.0.0/16",
            "10.96.0.0/12" ]

[[peer]]
name = "b#c"
address = "100.64.240.10"

[log]
level = "info"
`

func TestIndexLines(t *testing.T) {
	li := indexLines(indexSrc)
	indexed := map[string]int{
		"top":                   2,
		"server":                4,
		"server.listen":         5,
		"server.control_socket": 6,
		"server.routes":         7,
		"server.pool":           12,
		"server.quoted":         13,
		"server.indented":       14,
		"peer.0":                16,
		"peer.0.name":           17,
		"peer.0.allowed":        18,
		"peer.1":                21,
		"peer.1.name":           22,
		"peer.1.address":        23,
		"log":                   25,
		"log.level":             26,
	}
	for k, want := range indexed {
		if got := li.indexed[k]; got != want {
			t.Errorf("indexed[%q] = %d, want %d", k, got, want)
		}
	}
	// Plain names (as toml.MetaData gives them) list every indexed key, in order.
	plain := map[string][]string{"peer": {"peer.0", "peer.1"}, "peer.name": {"peer.0.name", "peer.1.name"},
		"peer.address": {"peer.1.address"}, "server.routes": {"server.routes"}}
	for k, want := range plain {
		if got := li.plain[k]; !slices.Equal(got, want) {
			t.Errorf("plain[%q] = %v, want %v", k, got, want)
		}
	}
	// Nothing inside strings, comments or array continuations becomes a key.
	for k := range li.indexed {
		if strings.ContainsAny(k, `#"[ `) || strings.HasPrefix(k, "server.10") || strings.Contains(k, "not") {
			t.Errorf("spurious key %q", k)
		}
	}
}

func TestLineFallsBackToTable(t *testing.T) {
	li := indexLines(indexSrc)
	cases := map[string]int{
		"server.pool":             12,
		"server.private_key_file": 4,  // not in the file: its table's header
		"peer.1.public_key":       21, // the second [[peer]] header
		"peer.0.allowed":          18,
		"log.format":              25,
		"client.tun":              0, // neither key nor table in the file
		"":                        0,
	}
	for key, want := range cases {
		if got := li.line(key); got != want {
			t.Errorf("line(%q) = %d, want %d", key, got, want)
		}
	}
}

// The line index and the TOML parser agree: a config error after comments
// holding '#' in strings and a multi-line array is reported at the right line.
func TestErrorLineAfterMultiLineArray(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "gtund.toml", `[server]
private_key_file = "KEY" # the "#" here is a comment
control_socket = "/run/gtund#1/gtund.sock" # '#' inside the string
routes = [
  "10.244.0.0/16", # pods
  # "10.0.0.0/8",
  "10.96.0.0/12",
]
pool = "100.64.240.0/24"
mtu = 100
`)
	_, err := LoadServer(path)
	if err == nil {
		t.Fatal("mtu = 100 accepted")
	}
	if want := path + ":10: server.mtu"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %v does not contain %q", err, want)
	}

	path = f.write(t, "gtund-ok.toml", `[server]
private_key_file = "KEY" # the "#" here is a comment
control_socket = "/run/gtund#1/gtund.sock" # '#' inside the string
routes = [
  "10.244.0.0/16", # pods
  # "10.0.0.0/8",
  "10.96.0.0/12",
]
pool = "100.64.240.0/24"
`)
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.ControlSocket != "/run/gtund#1/gtund.sock" || len(s.Routes) != 2 {
		t.Errorf("control_socket %q routes %v", s.ControlSocket, s.Routes)
	}
}
