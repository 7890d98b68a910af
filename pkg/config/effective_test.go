package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// everyKey copies testdata/every-key/NAME (and the peers file) into a
// temporary directory with its placeholders filled, and returns the
// copy's path and its text.
func everyKey(t *testing.T, name string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	writeKey(t, filepath.Join(dir, "private.key"), genKey(t), 0o600)
	r := strings.NewReplacer("@DIR@", dir, "@PEER1@", genKey(t).Public().String(), "@PEER2@", genKey(t).Public().String())
	var path, text string
	for _, f := range []string{name, "peers.toml"} {
		b, err := os.ReadFile(filepath.Join("testdata", "every-key", f))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, []byte(r.Replace(string(b))), 0o600); err != nil {
			t.Fatal(err)
		}
		if f == name {
			path, text = p, r.Replace(string(b))
		} else { // gtund's store is etcd: its peers file is the cache's
			if err := os.MkdirAll(filepath.Join(dir, "etcd-cache"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "etcd-cache", f), []byte(r.Replace(string(b))), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return path, text
}

// allSet fails for every field of v (a decoded file) that is left at its
// zero value: the every-key files must set each key the structs have,
// keys other engineers add included.
func allSet(t *testing.T, what string, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			t.Errorf("%s is not set in testdata/every-key", what)
			return
		}
		if v.Elem().Kind() != reflect.Bool { // *bool: set is enough, false is a value
			allSet(t, what, v.Elem())
		}
	case reflect.Slice:
		if v.Len() == 0 {
			t.Errorf("%s is not set in testdata/every-key", what)
			return
		}
		allSet(t, what, v.Index(0))
	case reflect.Struct:
		for i := range v.NumField() {
			name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("toml"), ",")
			if name != "" && name != "-" {
				allSet(t, strings.TrimPrefix(what+"."+name, "."), v.Field(i))
			}
		}
	default:
		if v.IsZero() {
			t.Errorf("%s is not set in testdata/every-key", what)
		}
	}
}

// The effective config (showconf) carries every key: for files that set
// each key to a value other than its default, it equals the file as
// written, the peers file's peers appended; and printed, it loads back to
// the same config.
func TestEffectiveCarriesEveryKey(t *testing.T) {
	t.Run("gtund", func(t *testing.T) {
		path, text := everyKey(t, "gtund.toml")
		var raw ServerFile
		if _, err := toml.Decode(text, &raw); err != nil {
			t.Fatal(err)
		}
		allSet(t, "", reflect.ValueOf(raw))
		peersText, err := os.ReadFile(filepath.Join(filepath.Dir(path), PeersFileName))
		if err != nil {
			t.Fatal(err)
		}
		var pf PeersFile
		if _, err := toml.Decode(string(peersText), &pf); err != nil {
			t.Fatal(err)
		}
		raw.Peer = append(raw.Peer, pf.Peer...)
		cfg, err := LoadServer(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Effective(); !reflect.DeepEqual(got, raw) {
			t.Errorf("effective config differs from the file:\n got %+v\nwant %+v", got, raw)
		}
		var out bytes.Buffer
		if err := cfg.WriteEffective(&out); err != nil {
			t.Fatal(err)
		}
		shown := filepath.Join(t.TempDir(), "shown.toml")
		if err := os.WriteFile(shown, out.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := LoadServerWithPeers(shown, []byte{}) // its peers are in the file now
		if err != nil {
			t.Fatalf("showconf's output does not load: %v\n%s", err, out.String())
		}
		for i := range again.Peers {
			again.Peers[i].Source = cfg.Peers[i].Source
		}
		again.File = cfg.File
		if !reflect.DeepEqual(again, cfg) {
			t.Errorf("showconf's output loads to another config:\n got %+v\nwant %+v", again, cfg)
		}
	})
	t.Run("gtun", func(t *testing.T) {
		path, text := everyKey(t, "gtun.toml")
		var raw ClientFile
		if _, err := toml.Decode(text, &raw); err != nil {
			t.Fatal(err)
		}
		allSet(t, "", reflect.ValueOf(raw))
		cfg, err := LoadClient(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Effective(); !reflect.DeepEqual(got, raw) {
			t.Errorf("effective config differs from the file:\n got %+v\nwant %+v", got, raw)
		}
		var out bytes.Buffer
		if err := cfg.WriteEffective(&out); err != nil {
			t.Fatal(err)
		}
		shown := filepath.Join(t.TempDir(), "shown.toml")
		if err := os.WriteFile(shown, out.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := LoadClient(shown)
		if err != nil {
			t.Fatalf("showconf's output does not load: %v\n%s", err, out.String())
		}
		again.File = cfg.File
		if !reflect.DeepEqual(again, cfg) {
			t.Errorf("showconf's output loads to another config:\n got %+v\nwant %+v", again, cfg)
		}
	})
}

// Defaults are filled in: a minimal file shows every key but dns.
func TestEffectiveFillsDefaults(t *testing.T) {
	dir := t.TempDir()
	k := genKey(t)
	writeKey(t, filepath.Join(dir, "private.key"), k, 0o600)
	path := filepath.Join(dir, "gtund.toml")
	src := "[server]\nprivate_key_file = \"" + filepath.Join(dir, "private.key") + "\"\npool = \"100.64.240.0/24\"\nstate_dir = \"" + dir + "\"\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := cfg.WriteEffective(&out); err != nil {
		t.Fatal(err)
	}
	shown := out.String()
	if strings.Contains(shown, k.Encode()) {
		t.Fatal("the private key is shown")
	}
	for _, k := range keyList(ServerFile{}) {
		if k.Table == "server.dns" || k.Path() == "server.dns" || k.Table == "peer" || k.Path() == "peer" {
			continue // no split DNS, no peers
		}
		if k.Table == "store" && k.Name != "backend" && k.Name != "replica" {
			continue // etcd's keys, shown with backend = "etcd"
		}
		if k.Type.Kind() != reflect.Struct && !strings.Contains(shown, "\n"+k.Name+" = ") {
			t.Errorf("showconf does not show %s:\n%s", k.Path(), shown)
		}
	}
	for _, want := range []string{`listen = "0.0.0.0:9623"`, `rekey_interval = "2m"`, "nat = true", "routes = []", `control_socket = "/run/gtund/gtund.sock"`} {
		if !strings.Contains(shown, "\n"+want+"\n") {
			t.Errorf("showconf lacks the default %s:\n%s", want, shown)
		}
	}
}
