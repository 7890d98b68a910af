package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// fileKeys lists the keys a file struct accepts, as "table.key", and its
// tables, from the toml tags.
func fileKeys(file any) map[string]bool {
	keys := map[string]bool{}
	for _, k := range keyList(file) {
		keys[k.Path()] = true
		keys[k.Table] = true
	}
	return keys
}

// Every field of the validated configs says how a reload treats it, and
// names a key the file really has: a new field without that decision fails
// here rather than being silently ignored (or silently restart-only) by a
// reload.
func TestEveryConfigFieldHasAReloadPolicy(t *testing.T) {
	for _, c := range []struct {
		config any
		file   any
	}{{Server{}, ServerFile{}}, {Client{}, ClientFile{}}} {
		ct := reflect.TypeOf(c.config)
		keys := fileKeys(c.file)
		for i := range ct.NumField() {
			f := ct.Field(i)
			key, _, err := reloadPolicy(f)
			if err != nil {
				t.Errorf("%s.%s: %v", ct.Name(), f.Name, err)
				continue
			}
			if key != "" && !keys[key] {
				t.Errorf("%s.%s: reload tag names %q, which %s has no toml key for", ct.Name(), f.Name, key, reflect.TypeOf(c.file).Name())
			}
		}
	}
}

// restartKeys lists the keys tagged restart-only, each once.
func restartKeys(config any) []string {
	var out []string
	ct := reflect.TypeOf(config)
	for i := range ct.NumField() {
		if key, policy, _ := reloadPolicy(ct.Field(i)); policy == ReloadRestart && !slices.Contains(out, key) {
			out = append(out, key)
		}
	}
	return out
}

// edit is one change to a config file and what a reload must report.
type edit struct {
	name    string
	replace [2]string // old, new text in the base file
	want    []string  // restart-only keys RestartOnly names
}

func runEdits[C Server | Client](t *testing.T, f *fixture, base string, load func(string) (*C, error), edits []edit, config any) {
	t.Helper()
	running, err := load(f.write(t, "base.toml", base))
	if err != nil {
		t.Fatal(err)
	}
	same, err := load(f.write(t, "same.toml", base))
	if err != nil {
		t.Fatal(err)
	}
	if keys := RestartOnly(running, same); len(keys) != 0 {
		t.Errorf("the same file reloaded: %v, want none", keys)
	}
	covered := map[string]bool{}
	for _, e := range edits {
		if !strings.Contains(base, e.replace[0]) {
			t.Fatalf("%s: %q not in the base file", e.name, e.replace[0])
		}
		loaded, err := load(f.write(t, "edit.toml", strings.Replace(base, e.replace[0], e.replace[1], 1)))
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		got := RestartOnly(running, loaded)
		if !slices.Equal(got, e.want) {
			t.Errorf("%s: RestartOnly = %q, want %q", e.name, got, e.want)
		}
		for _, k := range e.want {
			covered[k] = true
		}
	}
	// A restart-only key without an edit here is untested: add one.
	for _, k := range restartKeys(config) {
		if !covered[k] {
			t.Errorf("restart-only key %s has no edit in this test", k)
		}
	}
}

func TestRestartOnlyServer(t *testing.T) {
	f := newFixture(t)
	other := f.write(t, "other.key", "") // replaced below by a real key
	writeKey(t, other, genKey(t), 0o600)
	base := `[server]
listen = "0.0.0.0:9623"
transports = ["tcp"]
private_key_file = "KEY"
tun = "gtund0"
mtu = 1400
pool = "100.64.240.0/24"
routes = ["10.244.0.0/16", "10.96.0.0/12"]
nat = true
offload = true
state_dir = "/var/lib/gtund"
control_socket = "/run/gtund/gtund.sock"
metrics_listen = ""
keepalive = "2s"
handshake_rate = 20

[[peer]]
name = "a"
public_key = "PUB1"

[log]
level = "info"
`
	runEdits(t, f, base, LoadServer, []edit{
		{"listen", [2]string{`"0.0.0.0:9623"`, `"0.0.0.0:9700"`}, []string{"server.listen"}},
		{"transports", [2]string{`["tcp"]`, `["tcp", "kcp"]`}, []string{"server.transports"}},
		{"private key", [2]string{`"KEY"`, `"` + other + `"`}, []string{"server.private_key_file"}},
		{"tun", [2]string{`"gtund0"`, `"gtund1"`}, []string{"server.tun"}},
		{"mtu", [2]string{"1400", "1380"}, []string{"server.mtu"}},
		{"pool", [2]string{`"100.64.240.0/24"`, `"100.64.241.0/24"`}, []string{"server.pool"}},
		{"pool6", [2]string{`pool = "100.64.240.0/24"`, "pool = \"100.64.240.0/24\"\npool6 = \"fd64:240::/64\""}, []string{"server.pool6"}},
		{"nat", [2]string{"nat = true", "nat = false"}, []string{"server.nat"}},
		{"offload", [2]string{"offload = true", "offload = false"}, []string{"server.offload"}},
		{"fec", [2]string{"offload = true", "offload = true\nfec_data = 10\nfec_parity = 3"}, []string{"server.fec_data", "server.fec_parity"}},
		{"state_dir", [2]string{`"/var/lib/gtund"`, `"/var/lib/gtund2"`}, []string{"server.state_dir"}},
		{"control_socket", [2]string{`"/run/gtund/gtund.sock"`, `"/run/gtund/other.sock"`}, []string{"server.control_socket"}},
		{"metrics_listen", [2]string{`metrics_listen = ""`, `metrics_listen = "127.0.0.1:9624"`}, []string{"server.metrics_listen"}},
		{"log", [2]string{`level = "info"`, `level = "debug"`}, []string{"log"}},
		{"store", [2]string{"[log]", "[store]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n\n[log]"}, []string{"store"}},
		{"two at once, in field order", [2]string{"tun = \"gtund0\"\nmtu = 1400", "mtu = 1380\ntun = \"gtund1\""}, []string{"server.tun", "server.mtu"}},
		// Live keys: a reload applies them, so they are not named.
		{"routes (live)", [2]string{`["10.244.0.0/16", "10.96.0.0/12"]`, `["10.244.0.0/16"]`}, nil},
		{"keepalive (live)", [2]string{`"2s"`, `"5s"`}, nil},
		{"handshake_rate (live)", [2]string{"handshake_rate = 20", "handshake_rate = 50"}, nil},
		{"peers (live)", [2]string{`name = "a"`, `name = "renamed"`}, nil},
	}, Server{})
}

func TestRestartOnlyClient(t *testing.T) {
	f := newFixture(t)
	other := f.write(t, "other.key", "")
	writeKey(t, other, genKey(t), 0o600)
	base := `[client]
private_key_file = "KEY"
tun = "gtun0"
gateway = true
masquerade = true
control_socket = "/run/gtun/gtun.sock"
metrics_listen = ""
offload = true

[[server]]
name = "c"
endpoints = ["198.51.100.2:9623"]
public_key = "PUB1"

[log]
level = "info"
`
	runEdits(t, f, base, LoadClient, []edit{
		{"private key", [2]string{`"KEY"`, `"` + other + `"`}, []string{"client.private_key_file"}},
		{"tun", [2]string{`"gtun0"`, `"gtun1"`}, []string{"client.tun"}},
		{"gateway", [2]string{"gateway = true\nmasquerade = true", "gateway = false"}, []string{"client.gateway", "client.masquerade"}},
		{"masquerade", [2]string{"masquerade = true", "masquerade = false"}, []string{"client.masquerade"}},
		{"control_socket", [2]string{`"/run/gtun/gtun.sock"`, `"/run/gtun/other.sock"`}, []string{"client.control_socket"}},
		{"metrics_listen", [2]string{`metrics_listen = ""`, `metrics_listen = "127.0.0.1:9625"`}, []string{"client.metrics_listen"}},
		{"offload", [2]string{"offload = true", "offload = false"}, []string{"client.offload"}},
		{"log", [2]string{`level = "info"`, `level = "warn"`}, []string{"log"}},
		// The servers reload one by one (the client's reload handles them).
		{"server endpoints (live)", [2]string{`"198.51.100.2:9623"`, `"198.51.100.3:9623"`}, nil},
	}, Client{})
}
