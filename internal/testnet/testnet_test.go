package testnet

import (
	"fmt"
	"os"
	"path/filepath"
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
