package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/etcdtest"
	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/server"
)

// ha is a gateway of three replicas (gtund on gw, gwb and gwc, one key)
// sharing a 3-member etcd on node, as docs/ha.md deploys it.
type ha struct {
	*env
	etcd  *etcdtest.Cluster
	hosts []string // gw, gwb, gwc
	procs map[string]*testnet.Proc
}

func newHA(t *testing.T) *ha {
	t.Helper()
	testnet.Require(t, "ping", "curl", "/dev/net/tun", "etcd", "etcdctl")
	h := &ha{env: &env{tp: testnet.UpWith(t, testnet.Options{Replicas: true}), dir: t.TempDir()},
		hosts: []string{"gw", "gwb", "gwc"}, procs: map[string]*testnet.Proc{}}
	h.serverKey, h.serverPub = h.key(t, "server")
	h.etcd = etcdtest.Start(t, etcdtest.Options{Members: 3, Netns: h.tp.NS("node"), Hosts: testnet.EtcdHosts})
	h.tp.Start(t, "pod", "", bins.podhttp, "-listen", ":8080")
	testnet.Eventually(t, 10*time.Second, func() error {
		_, err := h.tp.Exec("node", "curl", "-fsS", "--max-time", "1", "http://"+podIP+":8080/healthz")
		return err
	})
	for i, host := range h.hosts {
		h.writeConfig(t, host, testnet.ReplicaWans[i])
	}
	return h
}

func (h *ha) cfg(host string) string    { return filepath.Join(h.dir, host+".toml") }
func (h *ha) socket(host string) string { return filepath.Join(h.dir, host+".sock") }
func (h *ha) endpoint(i int) string     { return testnet.ReplicaWans[i] + ":" + port }

func (h *ha) writeConfig(t *testing.T, host, wan string) {
	t.Helper()
	var eps []string
	for _, e := range h.etcd.Endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	cfg := fmt.Sprintf(`[server]
listen = "%s:%s"
private_key_file = %q
pool = "100.64.240.0/24"
routes = ["10.244.0.0/16", "10.96.0.0/12"]
state_dir = %q
control_socket = %q
keepalive = "500ms"

[store]
backend = "etcd"
endpoints = [%s]
prefix = "/gtun/test"
dial_timeout = "1s"
replica = %q

[log]
level = "debug"
`, wan, port, h.serverKey, filepath.Join(h.dir, host+"-state"), h.socket(host), strings.Join(eps, ", "), host)
	if err := os.WriteFile(h.cfg(host), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (h *ha) start(t *testing.T, host string) *testnet.Proc {
	t.Helper()
	p := h.tp.Start(t, host, filepath.Join(h.dir, host+"-gtund.log"), bins.gtund, "-c", h.cfg(host))
	testnet.Eventually(t, 10*time.Second, func() error {
		if p.Exited() {
			t.Fatalf("gtund on %s exited:\n%s", host, p.LogTail(30))
		}
		var st map[string]any
		return tryStatus(bins.gtund, h.socket(host), &st)
	})
	h.procs[host] = p
	return p
}

func (h *ha) status(t *testing.T, host string) server.Status {
	t.Helper()
	var st server.Status
	status(t, bins.gtund, h.socket(host), &st)
	return st
}

// peerAdd runs gtund peer add on host (in its namespace, as on that
// machine) and returns its output.
func (h *ha) peerAdd(host, name, pub string, extra ...string) (string, error) {
	args := append([]string{bins.gtund, "peer", "add", name, "-c", h.cfg(host), "--public-key", pub,
		"--endpoint", h.endpoint(0) + "," + h.endpoint(1) + "," + h.endpoint(2)}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := h.tp.Command(ctx, host, args...).CombinedOutput() // err keeps its exit code
	return string(out), err
}

// knows reports whether host's gtund serves peer name.
func (h *ha) knows(t *testing.T, host, name string) bool {
	var st server.Status
	if tryStatus(bins.gtund, h.socket(host), &st) != nil {
		return false
	}
	for _, p := range st.Peers {
		if p.Name == name {
			return true
		}
	}
	return false
}

// clientConfig is gtun's config with the replicas as endpoints, listed.
func (h *ha) clientConfig(t *testing.T, keyPath string, hosts ...int) string {
	t.Helper()
	return h.clientConfigWith(t, keyPath, "failback = false", hosts...)
}

// clientConfigWith is clientConfig with other [[server]] lines.
func (h *ha) clientConfigWith(t *testing.T, keyPath, extra string, hosts ...int) string {
	t.Helper()
	var eps []string
	for _, i := range hosts {
		eps = append(eps, fmt.Sprintf("%q", h.endpoint(i)))
	}
	cfg := fmt.Sprintf(`[client]
private_key_file = %q
control_socket = %q

[[server]]
name = "cluster"
endpoints = [%s]
public_key = %q
%s

[log]
level = "debug"
`, keyPath, h.clientSocket("vm"), strings.Join(eps, ", "), h.serverPub, extra)
	path := filepath.Join(h.dir, "gtun.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (h *ha) clientServer(t *testing.T) client.ServerStatus {
	t.Helper()
	var st client.Status
	if tryStatus(bins.gtun, h.clientSocket("vm"), &st) != nil || len(st.Servers) == 0 {
		return client.ServerStatus{}
	}
	return st.Servers[0]
}

// A peer added on one replica is served by the others within a second,
// with no reload and no other session touched; peer list on any replica
// shows where each peer is connected.
func TestHAPeerAddPropagates(t *testing.T) {
	h := newHA(t)
	for _, host := range h.hosts {
		h.start(t, host)
	}
	keyPath, pub := h.key(t, "vm")
	cmdStart := time.Now()
	out, err := h.peerAdd("gw", "vm", pub)
	if err != nil {
		t.Fatalf("peer add: %v\n%s", err, out)
	}
	cmdTook := time.Since(cmdStart)
	// When each replica applied it, by its own log (a poll of status,
	// an exec on a loaded machine, would time the poll).
	var took [3]time.Duration
	testnet.Eventually(t, 3*time.Second, func() error {
		for i, host := range h.hosts {
			at, ok := logTime(filepath.Join(h.dir, host+"-gtund.log"), `msg="config reloaded"`, "added=1")
			if !ok {
				return fmt.Errorf("%s has not logged the reload that adds the peer", host)
			}
			took[i] = at.Sub(cmdStart)
		}
		return nil
	})
	t.Logf("peer add on gw (the command took %v): applied by gw, gwb, gwc %v after the command started", cmdTook.Round(time.Millisecond), took)
	for i, d := range took {
		if d > cmdTook+time.Second {
			t.Errorf("%s applied the new peer %v after the command started, want within 1s of its end (%v)", h.hosts[i], d, cmdTook)
		}
	}
	for _, host := range h.hosts {
		if !h.knows(t, host, "vm") {
			t.Errorf("%s does not serve the new peer", host)
		}
	}
	if !strings.Contains(out, `endpoint_order = "spread"`) {
		t.Errorf("peer add with several endpoints did not spread:\n%s", out)
	}
	// The client reaches the cluster through gwb alone.
	p := h.startClient(t, "vm", "vm", h.clientConfig(t, keyPath, 1))
	h.waitRoute(t, "vm", "10.244.0.0/16", p)
	h.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
	testnet.Eventually(t, 5*time.Second, func() error {
		out, err := h.tp.Exec("gwc", bins.gtund, "peer", "list", "-c", h.cfg("gwc"))
		if err != nil || !strings.Contains(out, "yes (gwb from 198.51.100.1") || strings.Contains(out, "WARNING") {
			return fmt.Errorf("peer list on gwc: %v\n%s", err, out)
		}
		return nil
	})
	// A replica whose served config drifts is named by peer list.
	b, err := os.ReadFile(h.cfg("gwc"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.cfg("gwc"), []byte(strings.Replace(string(b), `routes = ["10.244.0.0/16", "10.96.0.0/12"]`, `routes = ["10.244.0.0/16"]`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h.tp.Exec("gwc", bins.gtund, "reload", "-c", h.cfg("gwc")); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	testnet.Eventually(t, 5*time.Second, func() error {
		out, err := h.tp.Exec("gw", bins.gtund, "peer", "list", "-c", h.cfg("gw"))
		if err != nil || !strings.Contains(out, "WARNING: the replicas serve different configs") || !strings.Contains(out, "gw+gwb (") {
			return fmt.Errorf("peer list on gw after gwc drifted: %v\n%s", err, out)
		}
		return nil
	})
	for _, host := range h.hosts {
		if st := h.status(t, host).Store; !st.Connected || st.Backend != "etcd" || st.Revision == 0 {
			t.Errorf("%s store status %+v", host, st)
		}
	}
	// Removed on gwc: gwb disconnects the client within a second.
	if out, err := h.tp.Exec("gwc", bins.gtund, "peer", "remove", "vm", "-c", h.cfg("gwc")); err != nil {
		t.Fatalf("peer remove: %v\n%s", err, out)
	}
	testnet.Eventually(t, time.Second, func() error {
		if h.knows(t, "gwb", "vm") {
			return fmt.Errorf("gwb still serves vm")
		}
		return nil
	})
}

// Peer adds on two replicas at once never collide: all distinct names are
// kept, one name added on both is refused on one, a fixed address asked
// for twice goes to one peer.
func TestHAConcurrentPeerAdd(t *testing.T) {
	h := newHA(t)
	h.start(t, "gw")
	h.start(t, "gwb")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for i := range 8 {
		for _, host := range []string{"gw", "gwb"} {
			wg.Go(func() {
				_, pub := h.key(t, fmt.Sprintf("%s-%d", host, i))
				if out, err := h.peerAdd(host, fmt.Sprintf("%s-%d", host, i), pub); err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s: %v\n%s", host, err, out))
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	ok := func(name, address string) func(string) (string, error) {
		return func(host string) (string, error) {
			_, pub := h.key(t, name+"-"+host)
			return h.peerAdd(host, name, pub, "--address", address)
		}
	}
	for _, c := range []struct {
		what string
		add  [2]func(string) (string, error)
	}{
		{"one name on both", [2]func(string) (string, error){ok("same", "100.64.240.200"), ok("same", "100.64.240.201")}},
		{"one fixed address on both", [2]func(string) (string, error){ok("fixed-a", "100.64.240.210"), ok("fixed-b", "100.64.240.210")}},
	} {
		var wins int
		var outs []string
		for j, host := range []string{"gw", "gwb"} {
			wg.Go(func() {
				out, err := c.add[j](host)
				mu.Lock()
				defer mu.Unlock()
				outs = append(outs, out)
				if err == nil {
					wins++
				} else if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != 2 {
					t.Errorf("%s: %v, want exit 2 for the loser\n%s", c.what, err, out)
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Errorf("%s at once: %d succeeded, want 1\n%s", c.what, wins, strings.Join(outs, "\n"))
		}
	}
	testnet.Eventually(t, 2*time.Second, func() error {
		for _, host := range []string{"gw", "gwb"} {
			if n := len(h.status(t, host).Peers); n != 18 {
				return fmt.Errorf("%s serves %d peers, want 18", host, n)
			}
		}
		return nil
	})
}

// kill -9 of the replica a client uses, under traffic: the client is on
// another replica within 2 s with the same address.
func TestHAFailover(t *testing.T) {
	h := newHA(t)
	h.start(t, "gw")
	h.start(t, "gwb")
	keyPath, pub := h.key(t, "vm")
	if out, err := h.peerAdd("gw", "vm", pub); err != nil {
		t.Fatalf("peer add: %v\n%s", err, out)
	}
	p := h.startClient(t, "vm", "vm", h.clientConfig(t, keyPath, 0, 1))
	h.waitRoute(t, "vm", "10.244.0.0/16", p)
	h.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
	before := h.clientServer(t)
	if before.Endpoint != h.endpoint(0) {
		t.Fatalf("client on %s, want gw (listed first)", before.Endpoint)
	}
	// Traffic: a ping every 10 ms through the tunnel while gw dies.
	ping := h.tp.Start(t, "vm", filepath.Join(h.dir, "ping.log"), "ping", "-i", "0.01", "-W", "1", podIP)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	h.procs["gw"].Kill9()
	var after client.ServerStatus
	for time.Since(start) < 5*time.Second {
		after = h.clientServer(t)
		if after.State == "connected" && after.Endpoint == h.endpoint(1) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := after.Since.Sub(start) // the client's own clock of when it connected, not this poll's
	t.Logf("failover gw -> gwb after kill -9: connected to gwb %v later, address %s (was %s)", took, after.Address, before.Address)
	if after.Endpoint != h.endpoint(1) || took > 2*time.Second {
		t.Fatalf("not on gwb within 2s (took %v): %+v", took, after)
	}
	if after.Address != before.Address {
		t.Errorf("address changed on failover: %s -> %s", before.Address, after.Address)
	}
	h.reach(t, "vm", "http://"+podIP+":8080/", 5*time.Second)
	time.Sleep(time.Second) // the ping's statistics: the outage among a second of traffic after it
	_ = ping.Signal(os.Interrupt)
	_, _ = ping.Wait(5 * time.Second)
	t.Logf("ping every 10 ms through the failover: %s", lastLine(ping.Log(), "packet loss"))
}

// logTime is the time of the first line of a gtund log (slog text) that
// holds every one of want.
func logTime(path string, want ...string) (time.Time, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		ok := strings.HasPrefix(line, "time=")
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if !ok {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		return at, err == nil
	}
	return time.Time{}, false
}

func lastLine(s, containing string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], containing) {
			return lines[i]
		}
	}
	return ""
}

// etcd outages: one member killed keeps everything working; all stopped,
// sessions stay, peer add fails clearly, and a replica restarted meanwhile
// serves the peers it knew with their addresses; etcd back, everything
// converges.
func TestHAEtcdOutage(t *testing.T) {
	h := newHA(t)
	h.start(t, "gw")
	h.start(t, "gwb")
	keyPath, pub := h.key(t, "vm")
	if out, err := h.peerAdd("gw", "vm", pub); err != nil {
		t.Fatalf("peer add: %v\n%s", err, out)
	}
	p := h.startClient(t, "vm", "vm", h.clientConfig(t, keyPath, 0, 1))
	h.waitRoute(t, "vm", "10.244.0.0/16", p)
	h.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
	addr := h.clientServer(t).Address

	// One member of three killed: quorum stays, so does everything (once
	// the others have elected a leader, if it was the leader: about a
	// second, more than this test's dial_timeout, which each request of
	// a command may take).
	h.etcd.Kill9(0)
	killed := time.Now()
	h.etcd.WaitHealthy(t, 10*time.Second)
	t.Logf("etcd answers writes %v after one of its 3 members was killed", time.Since(killed).Round(time.Millisecond))
	_, pub2 := h.key(t, "vm2")
	if out, err := h.peerAdd("gwb", "vm2", pub2); err != nil {
		t.Fatalf("peer add with one etcd member down: %v\n%s", err, out)
	}
	testnet.Eventually(t, 2*time.Second, func() error {
		if !h.knows(t, "gw", "vm2") {
			return fmt.Errorf("gw does not serve vm2")
		}
		return nil
	})

	// All members stopped.
	h.etcd.StopAll()
	testnet.Eventually(t, 5*time.Second, func() error {
		for _, host := range []string{"gw", "gwb"} {
			if h.status(t, host).Store.Connected {
				return fmt.Errorf("%s still reports etcd connected", host)
			}
		}
		return nil
	})
	h.reach(t, "vm", "http://"+podIP+":8080/", 2*time.Second)
	if st := h.clientServer(t); st.Reconnects != 0 || st.State != "connected" {
		t.Errorf("the session did not stay through the etcd outage: %+v", st)
	}
	_, pub3 := h.key(t, "vm3")
	out, err := h.peerAdd("gw", "vm3", pub3)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out, testnet.EtcdHosts[1]) || !strings.Contains(out, "did not answer within 1s") {
		t.Errorf("peer add with etcd away: %v, want exit 1 naming the endpoints and the timeout:\n%s", err, out)
	}
	// gwb restarted during the outage, then gw killed: the client moves
	// to gwb, which serves it from its cache, same address.
	stop(t, "gtund on gwb", h.procs["gwb"])
	h.start(t, "gwb")
	if st := h.status(t, "gwb").Store; st.Connected {
		t.Errorf("gwb restarted during the outage reports etcd connected: %+v", st)
	}
	h.procs["gw"].Kill9()
	testnet.Eventually(t, 5*time.Second, func() error {
		if st := h.clientServer(t); st.State != "connected" || st.Endpoint != h.endpoint(1) {
			return fmt.Errorf("client: %+v", st)
		}
		return nil
	})
	if got := h.clientServer(t).Address; got != addr {
		t.Errorf("address from the restarted replica's cache: %s, want %s", got, addr)
	}
	h.reach(t, "vm", "http://"+podIP+":8080/", 5*time.Second)

	// etcd back: converged (peer add works and reaches gwb; revisions).
	h.etcd.RestartAll(t)
	testnet.Eventually(t, 10*time.Second, func() error {
		if !h.status(t, "gwb").Store.Connected {
			return fmt.Errorf("gwb not reconnected to etcd")
		}
		return nil
	})
	if out, err := h.peerAdd("gwb", "vm3", pub3); err != nil {
		t.Fatalf("peer add after the outage: %v\n%s", err, out)
	}
	testnet.Eventually(t, 2*time.Second, func() error {
		if !h.knows(t, "gwb", "vm3") {
			return fmt.Errorf("gwb does not serve vm3")
		}
		return nil
	})
	h.start(t, "gw")
	testnet.Eventually(t, 5*time.Second, func() error {
		a, b := h.status(t, "gw").Store, h.status(t, "gwb").Store
		if !a.Connected || a.Revision != b.Revision || !h.knows(t, "gw", "vm3") {
			return fmt.Errorf("not converged: gw %+v, gwb %+v", a, b)
		}
		return nil
	})
}

// A client with endpoint_order = "spread" goes to the replica its key
// ranks first (not the first listed), fails over to the other when that
// one dies, and comes back to it (failback) when it is back, its address
// kept all along.
func TestHASpreadFailoverAndBack(t *testing.T) {
	h := newHA(t)
	h.start(t, "gw")
	h.start(t, "gwb")
	keyPath, pub := h.key(t, "vm")
	if out, err := h.peerAdd("gw", "vm", pub); err != nil {
		t.Fatalf("peer add: %v\n%s", err, out)
	}
	b, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	k, err := secure.ParsePrivateKey(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	order := client.SpreadOrder(k.Public(), []string{h.endpoint(0), h.endpoint(1)})
	host := map[string]string{h.endpoint(0): "gw", h.endpoint(1): "gwb"}
	p := h.startClient(t, "vm", "vm", h.clientConfigWith(t, keyPath, "endpoint_order = \"spread\"\nfailback_interval = \"1s\"", 0, 1))
	h.waitRoute(t, "vm", "10.244.0.0/16", p)
	on := func(ep string) func() error {
		return func() error {
			if st := h.clientServer(t); st.State != "connected" || st.Endpoint != ep {
				return fmt.Errorf("client on %q (%s), want %s", st.Endpoint, st.State, ep)
			}
			return nil
		}
	}
	testnet.Eventually(t, 5*time.Second, on(order[0]))
	addr := h.clientServer(t).Address
	t.Logf("the key ranks %s first: the client is there", host[order[0]])
	first := host[order[0]]
	h.procs[first].Kill9()
	testnet.Eventually(t, 5*time.Second, on(order[1]))
	h.reach(t, "vm", "http://"+podIP+":8080/", 5*time.Second)
	h.start(t, first)
	testnet.Eventually(t, 10*time.Second, on(order[0]))
	if got := h.clientServer(t).Address; got != addr {
		t.Errorf("address %s after failover and back, want %s", got, addr)
	}
	h.reach(t, "vm", "http://"+podIP+":8080/", 5*time.Second)
}

// A single gateway on the file store, its client connected, moved to etcd
// with gtund store import: the client reconnects with its address, to the
// gateway and then to a second replica, re-onboarded by nobody.
func TestHAImportFileStore(t *testing.T) {
	h := newHA(t)
	// gw on the file store first: its config without [store].
	b, err := os.ReadFile(h.cfg("gw"))
	if err != nil {
		t.Fatal(err)
	}
	etcdCfg := string(b)
	fileCfg := etcdCfg[:strings.Index(etcdCfg, "[store]")] + etcdCfg[strings.Index(etcdCfg, "[log]"):]
	if err := os.WriteFile(h.cfg("gw"), []byte(fileCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start(t, "gw")
	// Another peer first, so that vm's lease is not the pool's first address.
	_, other := h.key(t, "other")
	keyPath, pub := h.key(t, "vm")
	for _, p := range [][2]string{{"other", other}, {"vm", pub}} {
		if out, err := h.tp.Exec("gw", bins.gtund, "peer", "add", p[0], "-c", h.cfg("gw"), "--public-key", p[1], "--endpoint", h.endpoint(0)); err != nil {
			t.Fatalf("peer add on the file store: %v\n%s", err, out)
		}
	}
	cl := h.startClient(t, "vm", "vm", h.clientConfig(t, keyPath, 0, 1))
	h.waitRoute(t, "vm", "10.244.0.0/16", cl)

	stop(t, "gtund on gw", h.procs["gw"])
	// The lease moved by hand to an address no replica would pick by
	// itself, so that keeping it proves it came from the import.
	addr := "100.64.240.77/24"
	leases := fmt.Sprintf(`[{"public_key": %q, "name": "vm", "address": "100.64.240.77", "updated": "2026-12-01T00:00:00Z"}]`, pub)
	if err := os.WriteFile(filepath.Join(h.dir, "gw-state", "leases.json"), []byte(leases), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.cfg("gw"), []byte(etcdCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// state_dir's file store is what import reads by default.
	if out, err := h.tp.Exec("gw", bins.gtund, "store", "import", "-c", h.cfg("gw"), "--from", filepath.Join(h.dir, "gw-state")); err != nil || !strings.Contains(out, "imported 2 peers") || !strings.Contains(out, "1 leases") {
		t.Fatalf("store import: %v\n%s", err, out)
	}
	h.start(t, "gw")
	testnet.Eventually(t, 10*time.Second, func() error {
		if st := h.clientServer(t); st.State != "connected" || st.Endpoint != h.endpoint(0) || st.Address != addr {
			return fmt.Errorf("client after the move to etcd: %+v, want on gw as %s", st, addr)
		}
		return nil
	})
	h.reach(t, "vm", "http://"+podIP+":8080/", 5*time.Second)
	// A second replica that never saw the file store serves it the same.
	h.start(t, "gwb")
	h.procs["gw"].Kill9()
	testnet.Eventually(t, 5*time.Second, func() error {
		if st := h.clientServer(t); st.State != "connected" || st.Endpoint != h.endpoint(1) || st.Address != addr {
			return fmt.Errorf("client on the second replica: %+v, want on gwb as %s", st, addr)
		}
		return nil
	})
	h.reach(t, "vm", "http://"+podIP+":8080/", 5*time.Second)
}
