package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/gtun/gtun/internal/testnet"
)

// The deployment of docs/install.md ("Deploying on two VMs"), end to end:
// scripts/install.sh --server into the gateway's root and --client into the
// VM's, the installed example configs edited only where that page says (the
// peer's key, the endpoint and the server's key; plus paths into the
// temporary roots), and the installed binaries, keys and configs carry HTTP
// to a pod and a ClusterIP.
func TestInstalledDeployment(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	in := installGatewayAndVM(t)
	// Paths into the temporary roots; in a real deployment they are the
	// defaults the examples set.
	serverConf, clientConf := in.configure(t, func(server, client map[string]any) {
		s := server["server"].(map[string]any)
		s["private_key_file"] = filepath.Join(in.gw, "etc/gtund/private.key")
		s["state_dir"] = filepath.Join(in.gw, "var/lib/gtund")
		s["control_socket"] = e.serverSocket()
		c := client["client"].(map[string]any)
		c["private_key_file"] = filepath.Join(in.vm, "etc/gtun/private.key")
		c["control_socket"] = e.clientSocket("vm")
	})

	gtund := filepath.Join(in.gw, "usr/local/bin/gtund")
	gtun := filepath.Join(in.vm, "usr/local/bin/gtun")
	srv := e.tp.Start(t, "gw", filepath.Join(e.dir, "gtund.log"), gtund, "-c", serverConf)
	testnet.Eventually(t, 10*time.Second, func() error {
		if srv.Exited() {
			t.Fatalf("installed gtund exited:\n%s", srv.LogTail(30))
		}
		return exec.Command(gtund, "status", "-c", serverConf).Run()
	})
	cli := e.startClientBin(t, gtun, clientConf)
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
	e.reach(t, "vm", "http://"+clusterIP+"/", 10*time.Second)

	var st struct {
		Servers []struct{ Name, State string }
	}
	status(t, gtun, e.clientSocket("vm"), &st)
	if len(st.Servers) != 1 || st.Servers[0].State != "connected" {
		t.Errorf("gtun status: %+v", st)
	}
}

// installed is scripts/install.sh run into a gateway root (--server) and a
// VM root (--client), with the public keys it printed.
type installed struct {
	gw, vm               string
	serverPub, clientPub string
}

func installGatewayAndVM(t *testing.T) installed {
	t.Helper()
	root := testnet.RepoRoot()
	tree := t.TempDir()
	for _, rel := range []string{"scripts/install.sh", "etc/gtun.toml", "etc/gtund.toml",
		"docs/man/gtun.8", "docs/man/gtund.8", "docs/man/gtun.toml.5", "docs/man/gtund.toml.5",
		"systemd/gtun.service", "systemd/gtun@.service", "systemd/gtund.service"} {
		copyTo(t, filepath.Join(root, rel), filepath.Join(tree, rel), 0o755)
	}
	copyTo(t, bins.gtun, filepath.Join(tree, "bin/gtun"), 0o755)
	copyTo(t, bins.gtund, filepath.Join(tree, "bin/gtund"), 0o755)

	install := func(dest, role string) string {
		cmd := exec.Command(filepath.Join(tree, "scripts/install.sh"), role)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DESTDIR=" + dest}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh %s: %v\n%s", role, err, out)
		}
		return string(out)
	}
	pubOf := func(out, name string) string {
		m := regexp.MustCompile(`(?m)^` + name + ` public key: (\S+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("install.sh printed no %s public key:\n%s", name, out)
		}
		return m[1]
	}
	in := installed{gw: t.TempDir(), vm: t.TempDir()}
	in.serverPub = pubOf(install(in.gw, "--server"), "gtund")
	in.clientPub = pubOf(install(in.vm, "--client"), "gtun")
	return in
}

// configure edits the installed example configs only where docs/install.md's
// deployment says: gtund gets one [[peer]] with the client's key instead of
// the examples, gtun the gateway's endpoint and key. more may change other
// keys of the two decoded files. It returns the two configs' paths.
func (in installed) configure(t *testing.T, more func(server, client map[string]any)) (string, string) {
	t.Helper()
	serverConf := filepath.Join(in.gw, "etc/gtund/gtund.toml")
	clientConf := filepath.Join(in.vm, "etc/gtun/gtun.toml")
	server, client := readTOML(t, serverConf), readTOML(t, clientConf)
	server["peer"] = []map[string]any{{"name": "vm", "public_key": in.clientPub}}
	s := client["server"].([]map[string]any)[0]
	s["endpoints"] = []string{gwWAN + ":" + port}
	s["public_key"] = in.serverPub
	if more != nil {
		more(server, client)
	}
	writeTOML(t, serverConf, server)
	writeTOML(t, clientConf, client)
	return serverConf, clientConf
}

func (e *env) startClientBin(t *testing.T, bin, cfg string) *testnet.Proc {
	t.Helper()
	return e.tp.Start(t, "vm", filepath.Join(e.dir, "vm.log"), bin, "-c", cfg)
}

func copyTo(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

func readTOML(t *testing.T, path string) map[string]any {
	t.Helper()
	var m map[string]any
	if _, err := toml.DecodeFile(path, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// writeTOML rewrites a config from a decoded map (comments are lost; the
// keys and values stay), keeping the file's mode.
func writeTOML(t *testing.T, path string, m map[string]any) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := toml.NewEncoder(f).Encode(m); err != nil {
		t.Fatal(err)
	}
}
