package testnet

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestTopology(t *testing.T) {
	Require(t, "ping", "curl", "go")
	podhttp := GoBuild(t, "./tools/podhttp")
	tp := Up(t)

	t.Run("vm reaches gw over wan", func(t *testing.T) {
		tp.MustExec(t, "vm", "ping", "-c1", "-W2", GWWan)
	})
	t.Run("gw reaches pod", func(t *testing.T) {
		tp.MustExec(t, "gw", "ping", "-c1", "-W2", PodIP)
	})
	t.Run("vm2 reaches vm", func(t *testing.T) {
		tp.MustExec(t, "vm2", "ping", "-c1", "-W2", VMLan)
	})
	t.Run("vm has no route to the cluster", func(t *testing.T) {
		out, err := tp.Exec("vm", "ping", "-c1", "-W1", PodIP)
		if err == nil {
			t.Fatalf("vm reached %s without a tunnel:\n%s", PodIP, out)
		}
		routes := tp.MustExec(t, "vm", "ip", "route")
		if strings.Contains(routes, "10.244.") || strings.Contains(routes, "10.96.") || strings.Contains(routes, "default") {
			t.Fatalf("vm has a route it should not have:\n%s", routes)
		}
	})
	t.Run("node has no route to the tunnel pool", func(t *testing.T) {
		// "ip route get" fails when there is no route
		if out, err := tp.Exec("node", "ip", "route", "get", "100.64.240.2"); err == nil {
			t.Fatalf("node routes the tunnel pool:\n%s", out)
		}
	})

	var pod *Proc
	t.Run("pod serves HTTP via pod IP and ClusterIP", func(t *testing.T) {
		log := filepath.Join(t.TempDir(), "podhttp.log")
		pod = tp.Start(t, "pod", log, podhttp, "-listen", ":8080")
		Eventually(t, 5*time.Second, func() error {
			_, err := tp.Exec("node", "curl", "-sS", "--max-time", "1", "http://10.244.1.20:8080/healthz")
			return err
		})
		for _, host := range []string{"node", "gw"} {
			for _, url := range []string{"http://10.244.1.20:8080/", "http://10.96.0.10/"} {
				out := tp.MustExec(t, host, "curl", "-sS", "--max-time", "3", url)
				if out != "hello from pod\n" {
					t.Errorf("[%s] %s = %q", host, url, out)
				}
			}
		}
		out := tp.MustExec(t, "gw", "curl", "-sS", "--max-time", "3", "http://10.96.0.10/bytes?n=100")
		if len(out) != 100 || !strings.HasPrefix(out, "GTUN-CLEARTEXT-MARKER-GTUN") {
			t.Errorf("/bytes?n=100 = %q", out)
		}
		if err := pod.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, err := pod.Wait(5 * time.Second); err != nil || code != 0 {
			t.Fatalf("podhttp after SIGTERM: code %d, %v\n%s", code, err, pod.Log())
		}
		if err := pod.Signal(syscall.SIGTERM); err != os.ErrProcessDone {
			t.Errorf("Signal after exit = %v, want os.ErrProcessDone", err)
		}
	})

	t.Run("Proc exit codes", func(t *testing.T) {
		p := tp.Start(t, "vm", "", "sh", "-c", "echo hi; exit 3")
		if code, err := p.Wait(5 * time.Second); err != nil || code != 3 {
			t.Fatalf("code %d err %v", code, err)
		}
		if got := p.Log(); got != "hi\n" {
			t.Fatalf("log %q", got)
		}
		s := tp.Start(t, "vm", "", "sleep", "60")
		if _, err := s.Wait(100 * time.Millisecond); err == nil {
			t.Fatal("Wait on a running process returned nil error")
		}
		s.Kill9()
		if code, err := s.Wait(time.Second); code != 128+9 || err == nil {
			t.Fatalf("after Kill9: code %d err %v", code, err)
		}
	})

	t.Run("Exec error names the command", func(t *testing.T) {
		_, err := tp.Exec("vm", "sh", "-c", "echo boom >&2; exit 1")
		if err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "[vm]") {
			t.Fatalf("err = %v", err)
		}
	})
}

// Processes still running at cleanup are stopped, and down leaves nothing.
func TestCleanup(t *testing.T) {
	Require(t)
	var tp *Topology
	var p *Proc
	t.Run("inner", func(t *testing.T) {
		tp = Up(t)
		p = tp.Start(t, "gw", "", "sleep", "300")
	})
	if !p.Exited() {
		t.Fatal("process still running after its test's cleanup")
	}
	for _, h := range Hosts {
		if _, err := os.Stat("/run/netns/" + tp.NS(h)); err == nil {
			t.Errorf("namespace %s left behind", tp.NS(h))
		}
	}
}

// Several topologies coexist (tests of different packages run in parallel).
func TestParallelTopologies(t *testing.T) {
	Require(t, "ping")
	var wg sync.WaitGroup
	tps := make([]*Topology, 3)
	for i := range tps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tps[i] = &Topology{Root: RepoRoot(), Prefix: fmt.Sprintf("gtp%s%d", randHex(1), i)}
			if out, err := tps[i].script("up"); err != nil {
				t.Errorf("up %s: %v\n%s", tps[i].Prefix, err, out)
			}
		}()
	}
	wg.Wait()
	for _, tp := range tps {
		t.Cleanup(func() {
			if err := tp.Down(); err != nil {
				t.Error(err)
			}
		})
	}
	for _, tp := range tps {
		tp.MustExec(t, "vm", "ping", "-c1", "-W2", GWWan)
		tp.MustExec(t, "gw", "ping", "-c1", "-W2", PodIP)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, time.Second, func() error {
		n++
		if n < 3 {
			return fmt.Errorf("n=%d", n)
		}
		return nil
	})
}

func TestRepoRoot(t *testing.T) {
	if _, err := os.Stat(filepath.Join(RepoRoot(), "scripts", "topology.sh")); err != nil {
		t.Fatal(err)
	}
}

// The WAN emulator topology: same addresses, a transparent link at 0/0
// (a 1 MB TCP transfer arrives intact and no super-packet reaches the
// emulator), the round trip grows by twice the one-way delay, loss shows in
// ping, the blackhole cuts the link, and down removes it all.
func TestWANEmulator(t *testing.T) {
	Require(t, "ping", "curl", "go", "setsid")
	podhttp := GoBuild(t, "./tools/podhttp")
	tp := UpWithWAN(t)

	// pings returns ping's loss percentage and average RTT in ms.
	pings := func(t *testing.T, args ...string) (lossPct, avgMs float64) {
		t.Helper()
		out, _ := tp.Exec("vm", append([]string{"ping", "-q"}, append(args, GWWan)...)...) // exit 1 when some are lost
		m := regexp.MustCompile(`([0-9.]+)% packet loss`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no ping summary:\n%s", out)
		}
		lossPct, _ = strconv.ParseFloat(m[1], 64)
		if m := regexp.MustCompile(`= [0-9.]+/([0-9.]+)/`).FindStringSubmatch(out); m != nil {
			avgMs, _ = strconv.ParseFloat(m[1], 64)
		}
		t.Logf("ping %s: %s", strings.Join(args, " "), strings.TrimSpace(out[strings.Index(out, "---"):]))
		return lossPct, avgMs
	}

	t.Run("1 MB over TCP at 0 ms 0%", func(t *testing.T) {
		tp.Start(t, "gw", "", podhttp, "-listen", GWWan+":8080")
		url := "http://" + GWWan + ":8080/bytes?n=1048576"
		Eventually(t, 5*time.Second, func() error {
			_, err := tp.Exec("vm", "curl", "-fsS", "--max-time", "1", "http://"+GWWan+":8080/healthz")
			return err
		})
		before := tp.WANStats(t)
		out := tp.MustExec(t, "vm", "curl", "-fsS", "--max-time", "20", url)
		want := strings.Repeat("GTUN-CLEARTEXT-MARKER-", 1048576/22+1)[:1048576]
		if out != want {
			t.Fatalf("got %d bytes, want the 1048576-byte pattern (first difference at %d)", len(out), firstDiff(out, want))
		}
		st := tp.WANStats(t)
		if len(st.Directions) != 2 {
			t.Fatalf("stats: %+v", st)
		}
		for i, d := range st.Directions {
			t.Logf("%+v", d)
			if d.Oversize != 0 || d.GSO != 0 {
				t.Errorf("%s: %d oversize and %d GSO frames reached the emulator: the endpoints send super-packets", d.Name, d.Oversize, d.GSO)
			}
			// At 0% the emulator must drop nothing on purpose and fail no
			// write. Overflow (a full queue, frames the kernel dropped
			// before it read them) is the machine's load, not a fault:
			// TCP repairs it, and it is logged.
			if d.Lost+d.TxErrors != 0 {
				t.Errorf("%s: at 0%% loss the emulator dropped %d and failed %d writes: %+v", d.Name, d.Lost, d.TxErrors, d)
			}
			if d.QueueFull+d.KernelDrops != 0 {
				t.Logf("%s: %d queue-full and %d kernel drops (load)", d.Name, d.QueueFull, d.KernelDrops)
			}
			// b->a carries the data (~730 frames of 1448 bytes); a->b the
			// request and the ACKs, which a loaded receiver stretches (one
			// ACK for many segments: 42 seen). Either way a path around
			// the emulator would leave it with next to nothing.
			minFrames := uint64(100)
			if i == 0 {
				minFrames = 10
			}
			if d.Rx-before.Directions[i].Rx < minFrames {
				t.Errorf("%s: only %d frames for a 1 MB transfer: does traffic bypass the emulator?", d.Name, d.Rx-before.Directions[i].Rx)
			}
		}
		if got := st.Directions[1].RxBytes - before.Directions[1].RxBytes; got < 1048576 {
			t.Errorf("b->a carried %d bytes for a 1 MB download", got)
		}
	})

	t.Run("delay 20 ms each way", func(t *testing.T) {
		tp.SetWAN(t, 20*time.Millisecond, 0)
		loss, avg := pings(t, "-c", "20", "-i", "0.05", "-W", "2")
		// The lower bound is the delay at work; the upper one only catches
		// a delay applied many times over (a loaded machine adds some).
		if loss != 0 || avg < 38 || avg > 150 {
			t.Errorf("RTT avg %.3f ms, loss %g%%; want 38..150 ms and no loss", avg, loss)
		}
		pids := strings.Fields(tp.MustExec(t, "vm", "ip", "netns", "pids", tp.NS("wan")))
		if len(pids) != 1 {
			t.Errorf("processes in %s after a restart: %v, want one wanemu", tp.NS("wan"), pids)
		}
	})

	t.Run("loss 5% each way", func(t *testing.T) {
		tp.SetWAN(t, 0, 5)
		// about 1-(0.95*0.95) = 9.75% of the round trips fail
		loss, _ := pings(t, "-c", "200", "-i", "0.01", "-W", "1")
		if loss < 3 || loss > 25 {
			t.Errorf("ping loss %g%%, want 3..25%%", loss)
		}
		for _, d := range tp.WANStats(t).Directions {
			if d.Rx < 150 || float64(d.Lost) < 0.01*float64(d.Rx) || float64(d.Lost) > 0.15*float64(d.Rx) {
				t.Errorf("%s: lost %d of %d frames, want about 5%%", d.Name, d.Lost, d.Rx)
			}
		}
	})

	t.Run("blackhole", func(t *testing.T) {
		tp.SetWAN(t, 0, 0)
		tp.SetWANBlackhole(t, true)
		if loss, _ := pings(t, "-c", "3", "-i", "0.1", "-W", "1"); loss != 100 {
			t.Errorf("blackholed link: ping loss %g%%, want 100%%", loss)
		}
		tp.SetWAN(t, 1*time.Millisecond, 0) // holds across restarts
		if loss, _ := pings(t, "-c", "2", "-i", "0.1", "-W", "1"); loss != 100 {
			t.Errorf("blackholed link after a restart: ping loss %g%%, want 100%%", loss)
		}
		tp.SetWANBlackhole(t, false)
		if loss, _ := pings(t, "-c", "3", "-i", "0.1", "-W", "1"); loss != 0 {
			t.Errorf("link back: ping loss %g%%, want 0", loss)
		}
	})

	t.Run("down removes the emulator", func(t *testing.T) {
		if err := tp.Down(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat("/run/netns/" + tp.NS("wan")); err == nil {
			t.Errorf("namespace %s left behind", tp.NS("wan"))
		}
	})
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// The second cluster overlaps the first: the same pod IP answers in each,
// each pod says which cluster it is, vm reaches both gateways on their wan
// addresses, and down removes the three namespaces.
func TestCluster2(t *testing.T) {
	Require(t, "ping", "curl", "go")
	podhttp := GoBuild(t, "./tools/podhttp")
	tp := UpWithCluster2(t)

	for _, gw := range []string{GWWan, GW2Wan} {
		tp.MustExec(t, "vm", "ping", "-c1", "-W2", gw)
	}
	// gw2 is gw's twin inside: same addresses, its own pod.
	for _, h := range []struct{ host, addrs string }{
		{"gw2", "10.0.0.2/24"}, {"node2", "10.244.1.1/24"}, {"pod2", PodIP + "/24"},
	} {
		if out := tp.MustExec(t, h.host, "ip", "-br", "addr"); !strings.Contains(out, h.addrs) {
			t.Errorf("%s lacks %s:\n%s", h.host, h.addrs, out)
		}
	}
	tp.Start(t, "pod", "", podhttp, "-listen", ":8080", "-name", "cluster1")
	tp.Start(t, "pod2", "", podhttp, "-listen", ":8080", "-name", "cluster2")
	for _, c := range []struct{ gw, want string }{{"gw", "cluster1"}, {"gw2", "cluster2"}} {
		for _, url := range []string{"http://" + PodIP + ":8080/name", "http://" + ClusterIP + "/name"} {
			Eventually(t, 5*time.Second, func() error {
				out, err := tp.Exec(c.gw, "curl", "-sS", "--max-time", "1", url)
				if err != nil || out != c.want+"\n" {
					return fmt.Errorf("[%s] %s = %q, %v; want %q", c.gw, url, out, err, c.want)
				}
				return nil
			})
		}
		out := tp.MustExec(t, c.gw, "curl", "-sS", "--max-time", "1", "http://"+PodIP+":8080/whoami")
		if !strings.HasPrefix(out, GWVpc+":") || !strings.HasSuffix(out, " "+c.want+"\n") {
			t.Errorf("[%s] /whoami = %q, want %s:PORT %s", c.gw, out, GWVpc, c.want)
		}
	}
	// vm itself still has no route into either cluster.
	if out, err := tp.Exec("vm", "ping", "-c1", "-W1", PodIP); err == nil {
		t.Errorf("vm reached %s without a tunnel:\n%s", PodIP, out)
	}

	if err := tp.Down(); err != nil {
		t.Fatal(err)
	}
	for _, h := range Cluster2Hosts {
		if _, err := os.Stat("/run/netns/" + tp.NS(h)); err == nil {
			t.Errorf("namespace %s left behind", tp.NS(h))
		}
	}
}

// A prefix claimed by one topology is not handed to another until it is
// released; no root needed.
func TestClaimPrefix(t *testing.T) {
	defer func(dir string) { ClaimDir = dir }(ClaimDir)
	ClaimDir = t.TempDir()
	a, err := claimPrefix("gt0001")
	if err != nil || a == nil {
		t.Fatalf("first claim: %v, %v", a, err)
	}
	if b, err := claimPrefix("gt0001"); err != nil || b != nil {
		t.Fatalf("second claim of a held prefix: %v, %v; want nil, nil", b, err)
	}
	if c, err := claimPrefix("gt0002"); err != nil || c == nil {
		t.Fatalf("another prefix: %v, %v", c, err)
	} else {
		releasePrefix(c)
	}
	releasePrefix(a)
	if _, err := os.Stat(filepath.Join(ClaimDir, "gt0001")); !os.IsNotExist(err) {
		t.Errorf("claim file left after release: %v", err)
	}
	d, err := claimPrefix("gt0001")
	if err != nil || d == nil {
		t.Fatalf("claim after release: %v, %v", d, err)
	}
	releasePrefix(d)
}
