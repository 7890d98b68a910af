package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/client"
)

// healed polls (every 5 ms) until gtun0 in vm is up with its address and the
// pushed routes, and returns how long that took.
func (e *env) healed(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < limit+2*time.Second {
		link, _ := e.tp.Exec("vm", "ip", "-o", "addr", "show", "dev", "gtun0")
		routes, _ := e.tp.Exec("vm", "ip", "route", "show", "dev", "gtun0")
		up, _ := e.tp.Exec("vm", "ip", "-o", "link", "show", "dev", "gtun0")
		if strings.Contains(link, "100.64.240.2/24") && strings.Contains(routes, "10.244.0.0/16") &&
			strings.Contains(routes, "10.96.0.0/12") && strings.Contains(up, ",UP") {
			d := time.Since(start)
			if d > limit {
				t.Fatalf("healed after %v, limit %v", d, limit)
			}
			return d
		}
		last = fmt.Sprintf("addr %q routes %q link %q", link, routes, up)
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("not healed within %v: %s", limit, last)
	return 0
}

func TestTunDeviceHeals(t *testing.T) {
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	e.startServer(t, e.serverConfig(t, peer{name: "vm", pub: cpub}))
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	e.waitRoute(t, "vm", "10.96.0.0/12", cli)

	for _, c := range []struct {
		what   string
		break_ []string
	}{
		{"link set down", []string{"ip", "link", "set", "gtun0", "down"}},
		{"address removed", []string{"ip", "addr", "del", "100.64.240.2/24", "dev", "gtun0"}},
		{"device deleted", []string{"ip", "link", "del", "gtun0"}},
	} {
		e.tp.MustExec(t, "vm", c.break_...)
		d := e.healed(t, 2*time.Second)
		t.Logf("HEAL tun %s: address and routes back in %v", c.what, d.Round(time.Millisecond))
		e.reach(t, "vm", "http://"+clusterIP+"/", 5*time.Second)
	}
	var st client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &st)
	if st.Heals.Tun < 3 || st.Heals.Routes == 0 {
		t.Errorf("heals not counted in status: %+v", st.Heals)
	}
	if log := cli.Log(); !strings.Contains(log, "tun device healed") {
		t.Errorf("gtun did not log the repairs:\n%s", cli.LogTail(30))
	}
}
