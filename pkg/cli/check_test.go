package cli

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/control"
	"github.com/gtun/gtun/pkg/secure"
)

// goodServerConfig writes a gtund config with its key file and a peers
// file holding one peer, and returns the config's path and the key.
func goodServerConfig(t *testing.T) (string, secure.PrivateKey) {
	t.Helper()
	dir := t.TempDir()
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "private.key")
	peer, _ := secure.GeneratePrivateKey()
	files := map[string]string{
		keyFile: k.Encode() + "\n",
		filepath.Join(dir, "gtund.toml"): `[server]
private_key_file = "` + keyFile + `"
pool = "100.64.240.0/24"
routes = ["10.244.0.0/16"]
state_dir = "` + dir + `"
`,
		filepath.Join(dir, "peers.toml"): "[[peer]]\nname = \"vm1\"\npublic_key = \"" + peer.Public().String() + "\"\n",
	}
	for p, body := range files {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "gtund.toml"), k
}

func execute(d Daemon, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = Execute(d.Tree(), args, IO{Stdin: strings.NewReader(""), Stdout: &o, Stderr: &e})
	return code, o.String(), e.String()
}

func TestCheck(t *testing.T) {
	d, ran := daemon(t)
	path, k := goodServerConfig(t)
	code, out, errOut := execute(d, "check", "-c", path)
	if code != ExitOK || errOut != "" || !strings.HasPrefix(out, path+": ok: 1 peer (1 in ") || !strings.Contains(out, k.Public().String()) {
		t.Errorf("check of a good config: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Each file it reads is checked: the config, the key file, the peers file.
	dir := filepath.Dir(path)
	for _, c := range []struct{ file, body, want string }{
		{"gtund.toml", "[server]\npool = \"100.64.240.0/24\"\nlisten_addr = \"x\"\n", path + ":3: server.listen_addr: unknown key"},
		{"private.key", "not a key\n", path + ":2: server.private_key_file: " + filepath.Join(dir, "private.key") + ": not base64"},
		{"peers.toml", "[[peer]]\nname = \"vm1\"\npublic_key = \"AAAA\"\n", filepath.Join(dir, "peers.toml") + ":3: peer.0.public_key: bad public key"},
	} {
		t.Run(c.file, func(t *testing.T) {
			path, _ := goodServerConfig(t)
			if err := os.WriteFile(filepath.Join(filepath.Dir(path), c.file), []byte(c.body), 0o600); err != nil {
				t.Fatal(err)
			}
			want := strings.ReplaceAll(c.want, dir, filepath.Dir(path))
			code, out, errOut := execute(d, "check", "-c", path)
			if code != ExitUsage || out != "" || !strings.Contains(errOut, "bad config:\n  ") || !strings.Contains(errOut, want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", code, out, errOut, want)
			}
		})
	}
	if code, _, errOut := execute(d, "check", "-c", filepath.Join(dir, "missing.toml")); code != ExitUsage || !strings.Contains(errOut, "missing.toml") {
		t.Errorf("check of a missing file: exit %d, %q", code, errOut)
	}
	if *ran {
		t.Error("check ran the daemon")
	}
}

// showconf prints a config that loads to the same effective config, and
// never the private key.
func TestShowconf(t *testing.T) {
	d, _ := daemon(t)
	path, k := goodServerConfig(t)
	code, out, errOut := execute(d, "showconf", "-c", path)
	if code != ExitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if strings.Contains(out, k.Encode()) {
		t.Fatalf("showconf printed the private key:\n%s", out)
	}
	for _, want := range []string{"[[peer]]\nname = \"vm1\"", "mtu = 1400", `known_source_ttl = "168h"`, "Peers merged from " + filepath.Join(filepath.Dir(path), "peers.toml") + ": vm1."} {
		if !strings.Contains(out, want) {
			t.Errorf("showconf lacks %q:\n%s", want, out)
		}
	}
	shown := filepath.Join(t.TempDir(), "shown.toml")
	if err := os.WriteFile(shown, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	// The peers are in the shown file now: load it without the peers file.
	if _, err := config.LoadServerWithPeers(shown, []byte{}); err != nil {
		t.Errorf("showconf's output does not load: %v\n%s", err, out)
	}
	if code, out, _ := execute(d, "showconf", "-c", filepath.Join(t.TempDir(), "missing.toml")); code != ExitUsage || out != "" {
		t.Errorf("showconf of a missing file: exit %d, stdout %q", code, out)
	}
}

func TestReloadCommand(t *testing.T) {
	d, _ := daemon(t)
	dir, err := os.MkdirTemp("", "gtuncli") // unix socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "gtund.sock")
	if code, _, errOut := execute(d, "reload", "--socket", sock); code != ExitRuntime || !strings.Contains(errOut, "not running") {
		t.Errorf("reload without a daemon: exit %d, %q", code, errOut)
	}
	srv, err := control.Listen(sock, func() any { return nil }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var answer error
	var restartOnly []string
	srv.HandleReload(func() ([]string, error) { return restartOnly, answer })
	// The socket found through -c, as an operator types it.
	cfg := filepath.Join(dir, "gtund.toml")
	if err := os.WriteFile(cfg, []byte("[server]\ncontrol_socket = \""+sock+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		answer error
		code   int
		want   string
	}{
		{nil, ExitOK, "reloaded"},
		{&config.Error{File: "/etc/gtund/gtund.toml", Line: 7, Key: "server.routes", Msg: "bad CIDR"}, ExitUsage, "refused a bad config; the running config stays:\n  /etc/gtund/gtund.toml:7: server.routes: bad CIDR"},
		{errors.New("apply map: no"), ExitRuntime, "reload failed: apply map: no"},
		{nil, ExitOK, "reloaded; these changes apply only at a restart (the running values stay): server.listen, log"},
	} {
		if c.code == ExitOK && strings.Contains(c.want, "restart") {
			restartOnly = []string{"server.listen", "log"}
		}
		answer = c.answer
		code, out, errOut := execute(d, "reload", "-c", cfg)
		if code != c.code || !strings.Contains(out+errOut, c.want) {
			t.Errorf("answer %v: exit %d, stdout %q, stderr %q; want %d and %q", c.answer, code, out, errOut, c.code, c.want)
		}
	}
}
