package integration

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/gtun/gtun/internal/testnet"
)

// The status fields of heals and fights, as scripts see them.
type fightStatus struct {
	Heals struct {
		Routes uint64 `json:"routes"`
	} `json:"heals"`
	Fights   map[string]uint64 `json:"fights"`
	Fighting []string          `json:"fighting"`
}

// Another program in vm deletes gtun's route for the pod CIDR the moment
// it appears (it watches route notifications, as a second route manager
// would): gtun does not re-add it at the other program's pace, but at
// most a burst of 10 and then one a second; it logs that something keeps
// undoing its routes and counts one fight (status and metrics). When the
// other program stops, the route is back within about a second and the
// fight is over.
func TestRouteFightIsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	e.startServer(t, e.serverConfig(t, peer{name: "vm", pub: cpub}))
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	insertAfter(t, ccfg, "control_socket", `metrics_listen = "127.0.0.1:9625"`)
	cli := e.startClient(t, "vm", "vm", ccfg)
	e.waitRoute(t, "vm", testnet.PodCIDR, cli)
	e.waitRoute(t, "vm", testnet.SvcCIDR, cli)
	var before fightStatus
	status(t, bins.gtun, e.clientSocket("vm"), &before)

	h, ns := nsNetlink(t, e, "vm")
	gtun0, err := h.LinkByName("gtun0")
	if err != nil {
		t.Fatal(err)
	}
	// The other program: one subscription, a delete for every add of
	// gtun's route (by the kernel's own notification, so as fast as the
	// kernel allows).
	ch := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns, ReceiveBufferSize: 1 << 20,
		ErrorCallback: func(err error) {
			select {
			case <-done:
			default:
				t.Logf("fighter's route subscription: %v", err)
			}
		}}); err != nil {
		t.Fatal(err)
	}
	var deletes atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case u, ok := <-ch:
				if !ok {
					return
				}
				if u.Type != unix.RTM_NEWROUTE || u.Dst == nil || u.Dst.String() != testnet.PodCIDR || u.LinkIndex != gtun0.Attrs().Index {
					continue
				}
				if err := h.RouteDel(&u.Route); err == nil {
					deletes.Add(1)
				}
			}
		}
	})
	stopFighter := sync.OnceFunc(func() {
		close(done)
		wg.Wait()
	})
	t.Cleanup(stopFighter)

	start := time.Now()
	e.tp.MustExec(t, "vm", "ip", "route", "del", testnet.PodCIDR) // the first blow
	const fight = 6 * time.Second
	time.Sleep(fight)
	var during fightStatus
	status(t, bins.gtun, e.clientSocket("vm"), &during)
	elapsed := time.Since(start)
	repairs := during.Heals.Routes - before.Heals.Routes
	t.Logf("FIGHT %v over %s: gtun put the route back %d times, the other program deleted it %d times", elapsed.Round(time.Millisecond), testnet.PodCIDR, repairs, deletes.Load())
	// A burst of 10, then 1 a second; unbounded, a re-add takes a few
	// milliseconds, so this would be in the hundreds or thousands.
	if max := 10 + uint64(elapsed/time.Second) + 1; repairs > max || repairs < 10 {
		t.Errorf("%d repairs in %v of fighting, want between 10 and %d", repairs, elapsed, max)
	}
	if during.Fights["route"] != 1 || !slices.Contains(during.Fighting, "route") {
		t.Errorf("status fights %v, fighting %v; want route: 1 and fighting over route", during.Fights, during.Fighting)
	}
	if !strings.Contains(cli.Log(), "something keeps undoing the routes on gtun0") {
		t.Errorf("gtun did not log the fight:\n%s", cli.LogTail(30))
	}
	m, err := e.scrape("vm", "127.0.0.1:9625")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := m.get("gtun_fights_total", "kind=route"); v != 1 {
		t.Errorf("gtun_fights_total{kind=route} = %v, want 1", v)
	}
	human, err := exec.Command(bins.gtun, "status", "--socket", e.clientSocket("vm")).CombinedOutput()
	if err != nil || !strings.Contains(string(human), "fighting now over route") {
		t.Errorf("human status does not show the fight (%v):\n%s", err, human)
	}

	stopFighter()
	stopped := time.Now()
	e.waitRoute(t, "vm", testnet.PodCIDR, cli)
	back := time.Since(stopped)
	t.Logf("FIGHT over: route back %v after the other program stopped", back.Round(time.Millisecond))
	if back > 2*time.Second {
		t.Errorf("route back %v after the fight, want within about a second (the next token)", back)
	}
	testnet.Eventually(t, 10*time.Second, func() error {
		var after fightStatus
		if err := tryStatus(bins.gtun, e.clientSocket("vm"), &after); err != nil {
			return err
		}
		if len(after.Fighting) != 0 || after.Fights["route"] != 1 {
			return fmt.Errorf("fights %v, fighting %v; want route: 1 and no fight now", after.Fights, after.Fighting)
		}
		return nil
	})
	if !strings.Contains(cli.Log(), "the fight is over") {
		t.Errorf("gtun did not log the end of the fight:\n%s", cli.LogTail(30))
	}
	e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
}
