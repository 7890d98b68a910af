package integration

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/server"
)

// A gtun that stops says so on its session. Over udp and kcp no closed
// connection would tell gtund, which would keep the session, and count the
// peer connected, until dead_after keepalives had gone missing: here, with
// a 10 s keepalive, half a minute.
func TestClientStopEndsDatagramSession(t *testing.T) {
	t.Parallel()
	for _, tr := range []string{"udp", "kcp"} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ckey, cpub := e.key(t, "vm")
			scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
			rewrite(t, scfg, `transports = ["tcp"]`, `transports = ["tcp", "udp", "kcp"]`)
			rewrite(t, scfg, `keepalive = "1s"`, `keepalive = "10s"`)
			ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
			rewrite(t, ccfg, `transport = "tcp"`, fmt.Sprintf("transport = %q", tr))
			srv := e.startServer(t, scfg)
			cli := e.startClient(t, "vm", "vm", ccfg)
			e.waitRoute(t, "vm", "10.244.0.0/16", cli)
			connected := func() bool {
				var st server.Status
				status(t, bins.gtund, e.serverSocket(), &st)
				return len(st.Peers) == 1 && st.Peers[0].Connected
			}
			if !connected() {
				t.Fatal("gtund does not count the client connected")
			}
			start := time.Now()
			if err := cli.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code, err := cli.Wait(10 * time.Second); err != nil || code != 0 {
				t.Fatalf("gtun stopped with %d, %v", code, err)
			}
			stopped := time.Since(start)
			for connected() {
				if time.Since(start) > 5*time.Second {
					t.Fatalf("gtund still counts the %s session %v after gtun was told to stop", tr, time.Since(start))
				}
				time.Sleep(20 * time.Millisecond)
			}
			ended := time.Since(start)
			if log := srv.Log(); !strings.Contains(log, "gtun stopped, or moved to another endpoint") {
				t.Errorf("gtund's log does not say why the session ended:\n%s", srv.LogTail(10))
			}
			t.Logf("%s: gtun stopped in %v, gtund ended the session %v after the signal", tr, stopped.Round(time.Millisecond), ended.Round(time.Millisecond))
		})
	}
}
