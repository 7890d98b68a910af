package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
)

// This machine has no systemd as PID 1, so the units cannot be started
// here. These tests do what their sandbox does to the file system and to
// the capabilities, from the unit file's own directives, and run the
// installed daemons on the installed example configs (default paths) in it:
//
//   - ProtectSystem=strict: / read-only, with fresh empty /etc, /var/lib
//     and /run (read-only too);
//   - ConfigurationDirectory=, StateDirectory=, RuntimeDirectory= created
//     and writable, the config directory holding the installed files;
//   - ProtectKernelTunables=: /proc/sys read-only but ReadWritePaths=;
//   - CapabilityBoundingSet=, NoNewPrivileges=: setpriv.
//
// Not emulated: the system call filter, address families, device policy.
const sandboxScript = `set -e
conf_src="$1" writable="$2" caps="$3"
shift 3
mount -t tmpfs -o mode=0755 tmpfs /etc
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mount -t tmpfs -o mode=0755 tmpfs /run
for d in $writable; do
	case "$d" in /proc/*) ;; *) mkdir -p -m 0755 "$d" ;; esac
done
mount --bind /proc/sys /proc/sys
for d in $writable; do mount --bind "$d" "$d"; done
for d in / /etc /var/lib /run /proc/sys; do mount -o remount,bind,ro "$d"; done
cp -a "$conf_src"/. "$(echo $writable | tr ' ' '\n' | grep '^/etc/' | head -1)"/
exec setpriv --no-new-privs --inh-caps=-all --bounding-set=-all,$caps "$@"
`

// readUnitSandbox reads a unit's writable paths and capabilities; in a
// template (gtun@.service), %i is the instance name given after the '@'
// (gtun@hk.service).
type unitSandbox struct {
	writable []string // absolute, the config directory first
	caps     []string // setpriv names: +net_admin, ...
}

func readUnitSandbox(t *testing.T, unit string) unitSandbox {
	t.Helper()
	file, instance := unit, ""
	if base, rest, ok := strings.Cut(unit, "@"); ok {
		instance = strings.TrimSuffix(rest, ".service")
		file = base + "@.service"
	}
	f, err := os.Open(filepath.Join(testnet.RepoRoot(), "systemd", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sb unitSandbox
	prefix := map[string]string{"ConfigurationDirectory": "/etc/", "StateDirectory": "/var/lib/", "RuntimeDirectory": "/run/", "ReadWritePaths": ""}
	var dirs = map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.ReplaceAll(strings.TrimSpace(sc.Text()), "%i", instance), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if p, ok := prefix[k]; ok {
			for _, d := range strings.Fields(v) {
				// "-/path": systemd leaves out a path that does not
				// exist (net.ipv6.conf.all on a host without IPv6).
				if opt, ok := strings.CutPrefix(d, "-"); ok {
					if _, err := os.Stat(opt); err != nil {
						continue
					}
					d = opt
				}
				dirs[k] = append(dirs[k], p+d)
			}
		}
		if k == "CapabilityBoundingSet" {
			for _, c := range strings.Fields(v) {
				sb.caps = append(sb.caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
		}
	}
	for _, k := range []string{"ConfigurationDirectory", "StateDirectory", "RuntimeDirectory", "ReadWritePaths"} {
		sb.writable = append(sb.writable, dirs[k]...)
	}
	if len(dirs["ConfigurationDirectory"]) != 1 || len(sb.caps) == 0 {
		t.Fatalf("%s: config dirs %v, caps %v", unit, dirs["ConfigurationDirectory"], sb.caps)
	}
	return sb
}

// startSandboxed runs args on host inside sb, with the files of confSrc in
// the unit's config directory.
func (e *env) startSandboxed(t *testing.T, host, name string, sb unitSandbox, confSrc string, args ...string) *testnet.Proc {
	t.Helper()
	cmd := append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", sandboxScript, "sandbox",
		confSrc, strings.Join(sb.writable, " "), strings.Join(sb.caps, ",")}, args...)
	return e.tp.Start(t, host, filepath.Join(e.dir, name+".log"), cmd...)
}

// inside runs a command in a sandboxed daemon's mount namespace (to reach
// its control socket and files).
func inside(p *testnet.Proc, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--mount", "--target", strconv.Itoa(p.Pid())}, args...)...).CombinedOutput()
	return string(out), err
}

func TestDaemonsRunInTheirUnitSandbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "unshare", "setpriv", "nsenter")
	in := installGatewayAndVM(t)
	in.configure(t, nil) // the defaults: /etc/gtund, /var/lib/gtund, /run/gtund, /run/gtun
	gtund := filepath.Join(in.gw, "usr/local/bin/gtund")
	gtun := filepath.Join(in.vm, "usr/local/bin/gtun")

	srv := e.startSandboxed(t, "gw", "gtund", readUnitSandbox(t, "gtund.service"), filepath.Join(in.gw, "etc/gtund"),
		gtund, "-c", "/etc/gtund/gtund.toml")
	testnet.Eventually(t, 10*time.Second, func() error {
		if srv.Exited() {
			t.Fatalf("gtund exited in its sandbox:\n%s", srv.LogTail(30))
		}
		_, err := inside(srv, gtund, "status")
		return err
	})
	cli := e.startSandboxed(t, "vm", "gtun", readUnitSandbox(t, "gtun.service"), filepath.Join(in.vm, "etc/gtun"),
		gtun, "-c", "/etc/gtun/gtun.toml")
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)

	// What the sandbox really restricted: the daemons hold only their
	// units' capabilities, and nothing outside the writable paths can be
	// written.
	for _, c := range []struct {
		p    *testnet.Proc
		unit string
	}{{srv, "gtund.service"}, {cli, "gtun.service"}} {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(c.p.Pid()) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		var eff uint64
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "CapEff:\t"); ok {
				eff, _ = strconv.ParseUint(v, 16, 64)
			}
		}
		want := map[string]uint64{"+net_admin": 1 << 12, "+net_bind_service": 1 << 10}
		var wantEff uint64
		for _, cap := range readUnitSandbox(t, c.unit).caps {
			wantEff |= want[cap]
		}
		if eff != wantEff {
			t.Errorf("%s runs with CapEff %#x, want %#x", c.unit, eff, wantEff)
		}
		if out, err := inside(c.p, "touch", "/etc/probe"); err == nil || !strings.Contains(out, "Read-only") {
			t.Errorf("%s: /etc is writable in the emulated sandbox: %v %s", c.unit, err, out)
		}
	}
	leases, err := inside(srv, "cat", "/var/lib/gtund/leases.json")
	if err != nil || !strings.Contains(leases, "100.64.240.") {
		t.Errorf("gtund's leases in its StateDirectory: %v %s", err, leases)
	}
	if out, err := inside(cli, gtun, "status"); err != nil || !strings.Contains(out, "connected") {
		t.Errorf("gtun status in its sandbox: %v\n%s", err, out)
	}

	stop(t, "gtun", cli)

	// gtun@hk as docs/install.md's "Several clients on one VM" says: its own
	// /etc/gtun/hk.toml with its own tun and control_socket.
	hk := filepath.Join(in.vm, "etc/gtun/hk.toml")
	conf := readTOML(t, filepath.Join(in.vm, "etc/gtun/gtun.toml"))
	conf["client"].(map[string]any)["tun"] = "gtun-hk"
	conf["client"].(map[string]any)["control_socket"] = "/run/gtun-hk/gtun.sock"
	copyTo(t, filepath.Join(in.vm, "etc/gtun/gtun.toml"), hk, 0o600)
	writeTOML(t, hk, conf)
	inst := e.startSandboxed(t, "vm", "gtun-hk", readUnitSandbox(t, "gtun@hk.service"), filepath.Join(in.vm, "etc/gtun"),
		gtun, "-c", "/etc/gtun/hk.toml")
	testnet.Eventually(t, 15*time.Second, func() error {
		if inst.Exited() {
			t.Fatalf("gtun@hk exited in its sandbox:\n%s", inst.LogTail(30))
		}
		out, err := inside(inst, gtun, "status", "-c", "/etc/gtun/hk.toml")
		if err != nil || !strings.Contains(out, "connected") || !strings.Contains(out, "via gtun-hk") {
			return fmt.Errorf("gtun@hk status: %v %s", err, out)
		}
		return nil
	})
	e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)

	// All clean up within the sandbox and exit 0.
	stop(t, "gtun@hk", inst)
	stop(t, "gtund", srv)
	if out, _ := e.tp.Exec("gw", "nft", "list", "tables"); strings.Contains(out, "gtund") {
		t.Errorf("gtund left its nftables table: %s", out)
	}
}

// The emulation is strict enough to matter: gtund in a sandbox without the
// shared /run/gtun (where it locks its TUN name) cannot start, and says why.
func TestUnitSandboxWithoutLockDirFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "unshare", "setpriv", "nsenter")
	in := installGatewayAndVM(t)
	in.configure(t, nil)
	sb := readUnitSandbox(t, "gtund.service")
	i := slices.Index(sb.writable, "/run/gtun")
	if i < 0 {
		t.Fatalf("gtund.service does not make /run/gtun writable: %v", sb.writable)
	}
	sb.writable = slices.Delete(sb.writable, i, i+1)
	srv := e.startSandboxed(t, "gw", "gtund", sb, filepath.Join(in.gw, "etc/gtund"),
		filepath.Join(in.gw, "usr/local/bin/gtund"), "-c", "/etc/gtund/gtund.toml")
	code, err := srv.Wait(10 * time.Second)
	if err != nil || code == 0 {
		t.Fatalf("gtund without /run/gtun: exit %d (%v), want a failure:\n%s", code, err, srv.LogTail(20))
	}
	if log := srv.LogTail(20); !strings.Contains(log, "read-only file system") {
		t.Errorf("the failure does not say read-only file system:\n%s", log)
	}
}
