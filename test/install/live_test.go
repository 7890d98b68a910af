package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gtun/gtun/internal/testnet"
)

// fakeSystemctl is put first in PATH: it records every call, lists a
// running gtund and one running gtun@ instance (gtun.service itself is not
// loaded), and reports nothing active.
const fakeSystemctl = `#!/bin/sh
echo "$*" >> "$SYSTEMCTL_LOG"
case "$1" in
list-units)
	for a in "$@"; do
		case "$a" in
		gtund.service) echo "gtund.service loaded active running gtun server" ;;
		'gtun@*.service') echo "gtun@hk.service loaded active running gtun client hk" ;;
		esac
	done
	;;
is-active) exit 3 ;;
esac
exit 0
`

// The live path (DESTDIR empty, systemd running) without touching this
// machine: in a private mount namespace, empty tmpfs over /etc, /usr/local
// and /run (with /run/systemd/system, systemd's "I am running" marker), and
// a systemctl that only records. Shows the layout it left, then what it
// asked systemd to do.
func TestInstallLiveSystem(t *testing.T) {
	t.Parallel()
	testnet.RequireTools(t, "unshare", "mount")
	if os.Geteuid() != 0 {
		testnet.Missing(t, "root (for a private mount namespace)")
	}
	tree := sourceTree(t, true)
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "systemctl"), []byte(fakeSystemctl), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "systemctl.log")

	// In the namespace: install --enable with the example configs (nothing
	// may start), edit gtund's config, --enable again (gtund starts, gtun
	// still not), then uninstall.
	script := `set -e
mount -t tmpfs tmpfs /etc
mount -t tmpfs tmpfs /usr/local
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system
echo '== install --enable (example configs)'
"$TREE/scripts/install.sh" --enable
echo '# edited' >> /etc/gtund/gtund.toml
echo '== install --enable (gtund edited)'
"$TREE/scripts/install.sh" --enable
echo '== layout'
find /etc /usr/local -mindepth 1 -printf '%M %p\n' | sort -k2
echo '== uninstall'
"$TREE/scripts/uninstall.sh"
echo '== left'
find /etc /usr/local -mindepth 1 -type f -printf '%p\n' | sort
`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Env = []string{"PATH=" + fake + ":" + os.Getenv("PATH"), "TREE=" + tree, "SYSTEMCTL_LOG=" + log}
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	section := func(name string) string {
		_, after, _ := strings.Cut(out, "== "+name+"\n")
		before, _, _ := strings.Cut(after, "\n== ")
		return strings.TrimSuffix(before, "\n") + "\n"
	}

	first := section("install --enable (example configs)")
	for _, u := range []string{"gtun.service", "gtund.service"} {
		if !strings.Contains(first, "not enabling "+u+": ") {
			t.Errorf("enabled %s with the example config:\n%s", u, first)
		}
	}
	second := section("install --enable (gtund edited)")
	if !strings.Contains(second, "enabled and started gtund.service") || !strings.Contains(second, "not enabling gtun.service") {
		t.Errorf("second --enable:\n%s", second)
	}
	wantLayout := strings.Join([]string{
		"drwx------ /etc/gtun", "-rw------- /etc/gtun/gtun.toml", "-rw------- /etc/gtun/private.key",
		"drwx------ /etc/gtund", "-rw------- /etc/gtund/gtund.toml", "-rw------- /etc/gtund/private.key",
		"drwxr-xr-x /etc/systemd", "drwxr-xr-x /etc/systemd/system",
		"-rw-r--r-- /etc/systemd/system/gtun.service", "-rw-r--r-- /etc/systemd/system/gtun@.service",
		"-rw-r--r-- /etc/systemd/system/gtund.service",
		"drwxr-xr-x /usr/local/bin", "-rwxr-xr-x /usr/local/bin/gtun", "-rwxr-xr-x /usr/local/bin/gtund",
		"drwxr-xr-x /usr/local/share", "drwxr-xr-x /usr/local/share/man",
		"drwxr-xr-x /usr/local/share/man/man5", "-rw-r--r-- /usr/local/share/man/man5/gtun.toml.5", "-rw-r--r-- /usr/local/share/man/man5/gtund.toml.5",
		"drwxr-xr-x /usr/local/share/man/man8", "-rw-r--r-- /usr/local/share/man/man8/gtun.8", "-rw-r--r-- /usr/local/share/man/man8/gtund.8",
	}, "\n") + "\n"
	if got := section("layout"); got != wantLayout {
		t.Errorf("live layout:\n%s\nwant:\n%s", got, wantLayout)
	}
	wantLeft := "/etc/gtun/gtun.toml\n/etc/gtun/private.key\n/etc/gtund/gtund.toml\n/etc/gtund/private.key\n"
	if got := section("left"); got != wantLeft {
		t.Errorf("after uninstall:\n%s\nwant:\n%s", got, wantLeft)
	}

	calls, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	wantCalls := strings.Join([]string{
		"daemon-reload", // first install
		"daemon-reload", // second install
		"enable --now gtund.service",
		// uninstall: gtun and its running instances, then gtund
		"list-units --plain --no-legend --all gtun.service gtun@*.service",
		"disable --now gtun@hk.service",
		"disable gtun.service",
		"list-units --plain --no-legend --all gtund.service gtund@*.service",
		"disable --now gtund.service",
		"disable gtund.service",
		"daemon-reload",
	}, "\n") + "\n"
	if string(calls) != wantCalls {
		t.Errorf("systemctl calls:\n%s\nwant:\n%s\nscripts said:\n%s", calls, wantCalls, out)
	}
}
