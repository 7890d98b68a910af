package route

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/reconcile"
)

// Each test runs in its own named network namespace made with `ip netns add`;
// the package is pointed at it through Options.NetNS (an open fd), so the
// test goroutines never change namespace themselves.

var nsSeq atomic.Int32

type testNS struct {
	t    *testing.T
	name string
	fd   int
}

func newNS(t *testing.T) *testNS {
	t.Helper()
	testnet.Require(t) // root, network namespaces, ip and nft
	name := fmt.Sprintf("gtunrt-%d-%d", os.Getpid(), nsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		testnet.Missing(t, fmt.Sprintf("network namespace %s: %v: %s", name, err, out))
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		h.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v: %s", name, err, out)
		}
	})
	return &testNS{t: t, name: name, fd: int(h)}
}

// ip runs `ip -n <ns> args...` and fails the test on error.
func (n *testNS) ip(args ...string) string {
	n.t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (n *testNS) addTun(name string) {
	n.t.Helper()
	n.ip("tuntap", "add", "dev", name, "mode", "tun")
	n.ip("link", "set", name, "up")
}

// ourRoutes lists routes with protocol 0x67 (both families) as printed by ip.
func (n *testNS) ourRoutes(extra ...string) []string {
	n.t.Helper()
	var lines []string
	for _, fam := range []string{"-4", "-6"} {
		args := append([]string{"-n", n.name, fam, "route", "show", "proto", "103"}, extra...)
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "table does not exist") {
				continue
			}
			n.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		for l := range strings.Lines(string(out)) {
			// A TUN with no reader has no carrier; the kernel flags
			// its routes "linkdown", which is beside the point here.
			l = strings.Replace(strings.TrimSpace(l), " linkdown", "", 1)
			if l != "" {
				lines = append(lines, l)
			}
		}
	}
	slices.Sort(lines)
	return lines
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitFor polls cond until it holds or the deadline passes.
// settle bounds the waits for what the reconciler does on an event: it
// takes milliseconds, but on a loaded machine the ip commands that cause
// the events and the event delivery can take seconds. The resync interval
// of these tests is an hour, so whatever happens within settle was done
// on an event.
const settle = 10 * time.Second

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
	return 0
}

func statusOf(r *Reconciler, p string) RouteStatus {
	for _, st := range r.Status() {
		if st.Prefix.String() == p {
			return st
		}
	}
	return RouteStatus{}
}

func allInstalled(r *Reconciler, n int) bool {
	st := r.Status()
	if len(st) != n {
		return false
	}
	for _, s := range st {
		if !s.Installed {
			return false
		}
	}
	return true
}

// startRun runs the reconciler until the test ends.
func startRun(t *testing.T, r *Reconciler) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

var want3 = []string{"10.244.0.0/16", "10.96.0.0/12", "fd00:244::/64"}

func TestSyncInstallsAndStatus(t *testing.T) {
	ns := newNS(t)
	ns.addTun("gtun0")
	r := NewReconciler(Options{Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t)})
	// Host bits are cleared and duplicates collapse.
	r.SetDesired(prefixes("10.244.1.1/16", "10.244.0.0/16", "10.96.0.0/12", "fd00:244::1/64"))
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	got := r.Status()
	var names []string
	for _, s := range got {
		names = append(names, s.Prefix.String())
		if !s.Installed || s.Conflict != "" || s.Reason != "" {
			t.Errorf("status %+v, want installed", s)
		}
	}
	if !slices.Equal(names, want3) {
		t.Errorf("status prefixes %v, want %v (sorted by string)", names, want3)
	}
	routes := ns.ourRoutes()
	wantRoutes := []string{
		"10.244.0.0/16 dev gtun0 scope link",
		"10.96.0.0/12 dev gtun0 scope link",
		"fd00:244::/64 dev gtun0 metric 1024 pref medium",
	}
	if !slices.Equal(routes, wantRoutes) {
		t.Errorf("routes:\n%s\nwant:\n%s", strings.Join(routes, "\n"), strings.Join(wantRoutes, "\n"))
	}
	// A second pass changes nothing.
	if err := r.Sync(); err != nil {
		t.Fatalf("second Sync: %v", err)
	}
	if again := ns.ourRoutes(); !slices.Equal(again, routes) {
		t.Errorf("second pass changed routes: %v", again)
	}
}

func TestHealAfterManualDelete(t *testing.T) {
	ns := newNS(t)
	ns.addTun("gtun0")
	book := &reconcile.Book{}
	r := NewReconciler(Options{
		Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t),
		ResyncInterval: time.Hour, // only events may heal here
		Shared:         reconcile.Shared{Book: book},
	})
	r.SetDesired(prefixes(want3...))
	startRun(t, r)
	waitFor(t, settle, "initial install", func() bool { return allInstalled(r, 3) })
	if n, _ := book.Heal(HealKind); n != 0 {
		t.Fatalf("%d heals counted for the first install, want 0", n)
	}

	for i, p := range []string{"10.244.0.0/16", "fd00:244::/64"} {
		start := time.Now()
		ns.ip("route", "del", p, "dev", "gtun0")
		waitFor(t, settle, p+" back", func() bool {
			return slices.ContainsFunc(ns.ourRoutes(), func(l string) bool { return strings.HasPrefix(l, p+" ") })
		})
		back := time.Since(start)
		var took time.Duration
		waitFor(t, settle, "the heal counted", func() bool {
			var n uint64
			n, took = book.Heal(HealKind)
			return n == uint64(i+1)
		})
		t.Logf("%s back after %v (heal took=%v)", p, back, took)
		if took <= 0 || took > back {
			t.Errorf("heal of %s took %v by the book, %v as seen from here", p, took, back)
		}
	}
}

func TestConflictLeftAlone(t *testing.T) {
	ns := newNS(t)
	ns.addTun("gtun0")
	ns.addTun("other0")
	// An operator's route for a desired prefix, before gtun starts.
	ns.ip("route", "add", "10.96.0.0/12", "dev", "other0", "proto", "static")
	r := NewReconciler(Options{Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t)})
	r.SetDesired(prefixes("10.96.0.0/12", "10.244.0.0/16"))
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	st := statusOf(r, "10.96.0.0/12")
	if st.Installed || !strings.Contains(st.Conflict, "dev other0") || !strings.Contains(st.Conflict, "proto static") {
		t.Errorf("status %+v, want conflict naming dev other0 proto static", st)
	}
	if !statusOf(r, "10.244.0.0/16").Installed {
		t.Errorf("non-conflicting prefix not installed")
	}
	if out := ns.ip("route", "show", "10.96.0.0/12"); !strings.Contains(out, "dev other0 proto static") || strings.Contains(out, "gtun0") {
		t.Errorf("foreign route touched: %q", out)
	}

	// Same device, other protocol: still not ours, still left alone.
	ns.ip("route", "add", "10.97.0.0/16", "dev", "gtun0", "proto", "boot")
	r.SetDesired(prefixes("10.96.0.0/12", "10.244.0.0/16", "10.97.0.0/16"))
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if st := statusOf(r, "10.97.0.0/16"); st.Installed || !strings.Contains(st.Conflict, "proto boot") {
		t.Errorf("status %+v, want conflict with proto boot", st)
	}

	// Once the operator removes theirs, ours goes in.
	ns.ip("route", "del", "10.96.0.0/12", "dev", "other0")
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if st := statusOf(r, "10.96.0.0/12"); !st.Installed || st.Conflict != "" {
		t.Errorf("after conflict cleared: %+v", st)
	}

	// An operator route added next to ours (better metric would lose to
	// ours at metric 0): we yield and withdraw ours.
	ns.ip("route", "add", "10.96.0.0/12", "dev", "other0", "proto", "static", "metric", "50")
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if st := statusOf(r, "10.96.0.0/12"); st.Installed || !strings.Contains(st.Conflict, "metric 50") {
		t.Errorf("status %+v, want conflict with the metric 50 route", st)
	}
	if out := ns.ip("route", "show", "10.96.0.0/12"); strings.Contains(out, "gtun0") || !strings.Contains(out, "other0") {
		t.Errorf("want only the operator route left, got %q", out)
	}
}

func TestConflictUnderRun(t *testing.T) {
	ns := newNS(t)
	ns.addTun("gtun0")
	ns.addTun("other0")
	r := NewReconciler(Options{Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t), ResyncInterval: time.Hour})
	r.SetDesired(prefixes("10.96.0.0/12"))
	startRun(t, r)
	waitFor(t, settle, "install", func() bool { return allInstalled(r, 1) })
	// The operator replaces our route with theirs: we must not take it back.
	ns.ip("route", "replace", "10.96.0.0/12", "dev", "other0", "proto", "static")
	waitFor(t, settle, "conflict reported", func() bool { return statusOf(r, "10.96.0.0/12").Conflict != "" })
	time.Sleep(100 * time.Millisecond)
	if out := ns.ip("route", "show", "10.96.0.0/12"); strings.Contains(out, "gtun0") {
		t.Errorf("reconciler fought the operator: %q", out)
	}
	ns.ip("route", "del", "10.96.0.0/12", "dev", "other0")
	waitFor(t, settle, "ours back after conflict cleared", func() bool { return allInstalled(r, 1) })
}

func TestSetDesiredRemoves(t *testing.T) {
	ns := newNS(t)
	ns.addTun("gtun0")
	// A route on our link that isn't ours must survive removals.
	ns.ip("route", "add", "192.0.2.0/24", "dev", "gtun0", "proto", "static")
	r := NewReconciler(Options{Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t), ResyncInterval: time.Hour})
	r.SetDesired(prefixes(want3...))
	startRun(t, r)
	waitFor(t, settle, "install", func() bool { return allInstalled(r, 3) })

	r.SetDesired(prefixes("10.244.0.0/16"))
	waitFor(t, settle, "removal", func() bool {
		return slices.Equal(ns.ourRoutes(), []string{"10.244.0.0/16 dev gtun0 scope link"})
	})
	if got := r.Status(); len(got) != 1 || got[0].Prefix.String() != "10.244.0.0/16" {
		t.Errorf("status after SetDesired: %+v", got)
	}
	if out := ns.ip("route", "show", "192.0.2.0/24"); !strings.Contains(out, "proto static") {
		t.Errorf("foreign route on our link removed: %q", out)
	}
}

func TestRemoveAll(t *testing.T) {
	ns := newNS(t)
	ns.addTun("gtun0")
	ns.addTun("other0")
	// Leftovers of a killed run, plus routes that are not ours.
	ns.ip("route", "add", "10.1.0.0/16", "dev", "gtun0", "proto", "103")
	ns.ip("-6", "route", "add", "fd00:1::/64", "dev", "gtun0", "proto", "103")
	ns.ip("route", "add", "10.2.0.0/16", "dev", "other0", "proto", "103")
	ns.ip("route", "add", "10.3.0.0/16", "dev", "gtun0", "proto", "static")

	r := NewReconciler(Options{Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t)})
	r.SetDesired(prefixes("10.244.0.0/16"))
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := r.RemoveAll(); err != nil {
		t.Fatalf("RemoveAll: %v", err)
	}
	if got := ns.ourRoutes(); !slices.Equal(got, []string{"10.2.0.0/16 dev other0 scope link"}) {
		t.Errorf("after RemoveAll our routes: %v (only the one on other0 should remain)", got)
	}
	if out := ns.ip("route", "show", "10.3.0.0/16"); !strings.Contains(out, "proto static") {
		t.Errorf("RemoveAll deleted a foreign route: %q", out)
	}
	if st := statusOf(r, "10.244.0.0/16"); st.Installed {
		t.Errorf("status after RemoveAll: %+v", st)
	}

	// Missing link is fine.
	ns.ip("link", "del", "gtun0")
	if err := r.RemoveAll(); err != nil {
		t.Errorf("RemoveAll without link: %v", err)
	}
}

func TestSyncLeftoversRemoved(t *testing.T) {
	ns := newNS(t)
	ns.addTun("gtun0")
	ns.ip("route", "add", "10.1.0.0/16", "dev", "gtun0", "proto", "103")
	r := NewReconciler(Options{Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t)})
	r.SetDesired(prefixes("10.244.0.0/16"))
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := ns.ourRoutes(); !slices.Equal(got, []string{"10.244.0.0/16 dev gtun0 scope link"}) {
		t.Errorf("routes %v", got)
	}
}

func TestLinkDownUp(t *testing.T) {
	ns := newNS(t)
	ns.addTun("gtun0")
	r := NewReconciler(Options{Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t), ResyncInterval: time.Hour})
	r.SetDesired(prefixes(want3...))
	startRun(t, r)
	waitFor(t, settle, "install", func() bool { return allInstalled(r, 3) })

	ns.ip("link", "set", "gtun0", "down")
	waitFor(t, settle, "not installed while down", func() bool {
		for _, s := range r.Status() {
			if s.Installed || !strings.Contains(s.Reason, "down") {
				return false
			}
		}
		return true
	})
	ns.ip("link", "set", "gtun0", "up")
	d := waitFor(t, settle, "routes back after up", func() bool { return allInstalled(r, 3) && len(ns.ourRoutes()) == 3 })
	t.Logf("routes back %v after link up", d)
}

func TestLinkRecreated(t *testing.T) {
	ns := newNS(t)
	r := NewReconciler(Options{Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t), ResyncInterval: time.Hour})
	r.SetDesired(prefixes(want3...))
	startRun(t, r)
	// No link yet: nothing installed, no error loop.
	waitFor(t, settle, "not-found status", func() bool {
		st := r.Status()
		return len(st) == 3 && strings.Contains(st[0].Reason, "not found")
	})
	ns.addTun("gtun0")
	waitFor(t, settle, "install when link appears", func() bool { return allInstalled(r, 3) })
	idx1 := ns.ip("-o", "link", "show", "gtun0")

	ns.ip("link", "del", "gtun0")
	ns.ip("tuntap", "add", "dev", "dummyfill", "mode", "tun") // make sure the index changes
	ns.addTun("gtun0")
	idx2 := ns.ip("-o", "link", "show", "gtun0")
	if strings.Split(idx1, ":")[0] == strings.Split(idx2, ":")[0] {
		t.Fatalf("index did not change: %q %q", idx1, idx2)
	}
	d := waitFor(t, settle, "routes back on recreated link", func() bool {
		return allInstalled(r, 3) && len(ns.ourRoutes("dev", "gtun0")) == 3
	})
	t.Logf("routes back %v after link recreated", d)
}

func TestTable(t *testing.T) {
	ns := newNS(t)
	ns.addTun("gtun0")
	r := NewReconciler(Options{Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t), Table: 100})
	r.SetDesired(prefixes("10.244.0.0/16"))
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := ns.ourRoutes(); len(got) != 0 {
		t.Errorf("routes in main table: %v", got)
	}
	if got := ns.ourRoutes("table", "100"); !slices.Equal(got, []string{"10.244.0.0/16 dev gtun0 scope link"}) {
		t.Errorf("table 100: %v", got)
	}
	if err := r.RemoveAll(); err != nil {
		t.Fatalf("RemoveAll: %v", err)
	}
	if got := ns.ourRoutes("table", "100"); len(got) != 0 {
		t.Errorf("table 100 after RemoveAll: %v", got)
	}
}

// Run must stop every goroutine it started, including the netlink library's
// subscription readers, when ctx is done.
func TestRunStopsGoroutines(t *testing.T) {
	ns := newNS(t)
	ns.addTun("gtun0")
	before := runtime.NumGoroutine()
	r := NewReconciler(Options{Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t)})
	r.SetDesired(prefixes("10.244.0.0/16"))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	waitFor(t, settle, "install", func() bool { return allInstalled(r, 1) })
	// Generate events so the subscriptions are busy when we stop.
	ns.ip("route", "add", "192.0.2.0/24", "dev", "gtun0")
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	waitFor(t, settle, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}

// Routes with a preferred source: installed with it, switched in place when
// it changes, refused (and retried) while the address is not on the host,
// and back once it is.
func TestSourceAddress(t *testing.T) {
	ns := newNS(t)
	ns.addTun("gtun0")
	ns.ip("addr", "add", "100.64.240.2/24", "dev", "gtun0")
	ns.ip("addr", "add", "100.64.241.2/24", "dev", "gtun0")
	r := NewReconciler(Options{Link: "gtun0", NetNS: ns.fd, Logger: testLogger(t)})
	a1, a2 := netip.MustParseAddr("100.64.240.2"), netip.MustParseAddr("100.64.241.2")
	r.SetDesiredRoutes([]Route{
		{Prefix: netip.MustParsePrefix("100.100.0.0/16"), Src: a1},
		{Prefix: netip.MustParsePrefix("100.101.0.0/16"), Src: a2},
		{Prefix: netip.MustParsePrefix("100.102.0.0/16")},
	})
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	want := []string{
		"100.100.0.0/16 dev gtun0 scope link src 100.64.240.2",
		"100.101.0.0/16 dev gtun0 scope link src 100.64.241.2",
		"100.102.0.0/16 dev gtun0 scope link",
	}
	if got := ns.ourRoutes(); !slices.Equal(got, want) {
		t.Fatalf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The kernel uses the source for packets to each prefix.
	if out := ns.ip("route", "get", "100.101.1.20"); !strings.Contains(out, "src 100.64.241.2") {
		t.Errorf("route get 100.101.1.20: %s", out)
	}

	// The source changes: replaced in place, nothing else touched.
	r.SetDesiredRoutes([]Route{
		{Prefix: netip.MustParsePrefix("100.100.0.0/16"), Src: a2},
		{Prefix: netip.MustParsePrefix("100.101.0.0/16"), Src: a2},
		{Prefix: netip.MustParsePrefix("100.102.0.0/16")},
	})
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync after source change: %v", err)
	}
	want[0] = "100.100.0.0/16 dev gtun0 scope link src 100.64.241.2"
	if got := ns.ourRoutes(); !slices.Equal(got, want) {
		t.Fatalf("routes after source change:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A source not on the host: the kernel refuses the route; status says
	// why; once the address is there the next pass installs it.
	a3 := netip.MustParseAddr("100.64.242.2")
	r.SetDesiredRoutes([]Route{{Prefix: netip.MustParsePrefix("100.103.0.0/16"), Src: a3}})
	if err := r.Sync(); err == nil {
		t.Fatal("Sync with a source not on the host succeeded")
	}
	if st := statusOf(r, "100.103.0.0/16"); st.Installed || !strings.Contains(st.Reason, "src 100.64.242.2") {
		t.Errorf("status %+v, want not installed naming the source", st)
	}
	ns.ip("addr", "add", "100.64.242.2/24", "dev", "gtun0")
	if err := r.Sync(); err != nil {
		t.Fatalf("Sync once the address is there: %v", err)
	}
	if got := ns.ourRoutes(); !slices.Equal(got, []string{"100.103.0.0/16 dev gtun0 scope link src 100.64.242.2"}) {
		t.Errorf("routes: %v", got)
	}
}
