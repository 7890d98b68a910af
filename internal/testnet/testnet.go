// Package testnet builds gtun's network-namespace test topology (see
// scripts/topology.sh and DESIGN.md "Test topology") for integration tests,
// and runs commands and background processes inside it.
//
//	func TestX(t *testing.T) {
//		testnet.Require(t, "ping", "curl", "/dev/net/tun")
//		tp := testnet.Up(t)                      // torn down by t.Cleanup
//		srv := tp.Start(t, "gw", filepath.Join(t.TempDir(), "gtund.log"), gtund, "-c", cfg)
//		testnet.Eventually(t, 10*time.Second, func() error {
//			_, err := tp.Exec("vm", "ping", "-c1", "-W1", "10.244.1.20")
//			return err
//		})
//		srv.Signal(syscall.SIGTERM)
//		if code, err := srv.Wait(5 * time.Second); err != nil || code != 0 { t.Fatal(code, err) }
//	}
//
// Hosts are "vm", "vm2", "gw", "node" and "pod"; each is a namespace named
// "<prefix>-<host>" with a prefix unique to the test.
//
// UpWithWAN builds the same topology with the wan link going through a WAN
// emulator (tools/wanemu in a sixth namespace, "<prefix>-wan"); SetWAN gives
// the link delay and loss, SetWANBlackhole cuts it:
//
//	tp := testnet.UpWithWAN(t)
//	tp.SetWAN(t, 25*time.Millisecond, 1) // 50 ms round trip, 1% loss each way
//
// UpWithCluster2 adds a second cluster ("gw2", "node2", "pod2") with the
// same internal addresses as the first (overlapping CIDRs), whose gateway
// vm reaches at GW2Wan:
//
//	tp := testnet.UpWithCluster2(t)
//	tp.MustExec(t, "gw2", "ping", "-c1", testnet.PodIP) // cluster 2's pod
package testnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/wanstats"
)

// Hosts of the topology, in the order topology.sh creates them.
var Hosts = []string{"vm", "vm2", "gw", "node", "pod"}

// Cluster2Hosts are the hosts UpWithCluster2 adds: the second cluster's
// gateway, node and pod, addressed like gw, node and pod.
var Cluster2Hosts = []string{"gw2", "node2", "pod2"}

// Well-known addresses of the topology.
const (
	VMWan     = "198.51.100.1"
	VMLan     = "172.16.0.1"
	VM2Lan    = "172.16.0.2"
	GWWan     = "198.51.100.2"
	GW2Wan    = "198.51.100.3" // gw2 (UpWithCluster2): on vm's wan2, otherwise as gw
	GWVpc     = "10.0.0.2"
	NodeVpc   = "10.0.0.3"
	NodePod   = "10.244.1.1"
	PodIP     = "10.244.1.20"
	PodPort   = 8080
	ClusterIP = "10.96.0.10" // DNAT on node: tcp/80 -> PodIP:8080, udp+tcp/53 -> PodIP:53
	PodCIDR   = "10.244.0.0/16"
	SvcCIDR   = "10.96.0.0/12"
)

// IPv6 addresses of the topology (Options.IPv6): every link dual-stack,
// DAD off.
const (
	VMWan6     = "2001:db8:100::1"
	GWWan6     = "2001:db8:100::2"
	VMLan6     = "fd00:172:16::1"
	VM2Lan6    = "fd00:172:16::2"
	LanCIDR6   = "fd00:172:16::/64"
	GWVpc6     = "fd00:10::2"
	NodeVpc6   = "fd00:10::3"
	PodIP6     = "fd00:10:244:1::20"
	ClusterIP6 = "fd00:10:96::10" // DNAT on node: tcp/80 -> [PodIP6]:8080, udp+tcp/53 -> [PodIP6]:53
	PodCIDR6   = "fd00:10:244::/56"
	SvcCIDR6   = "fd00:10:96::/112"
)

// DefaultExecTimeout bounds Exec and MustExec, so a hung command fails the
// test instead of eating the whole go test timeout.
var DefaultExecTimeout = 2 * time.Minute

// InCI reports whether the CI environment variable is set (CI=true in the
// project's CI): there, missing prerequisites are failures, not skips.
func InCI() bool {
	v := strings.ToLower(strings.TrimSpace(os.Getenv("CI")))
	return v != "" && v != "0" && v != "false" && v != "no"
}

var (
	netnsOnce sync.Once
	netnsErr  error
)

// probeNetns checks once per process that network namespaces and veths can
// be created here.
func probeNetns() error {
	netnsOnce.Do(func() {
		name := "gtprobe" + randHex(4)
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			netnsErr = fmt.Errorf("ip netns add: %v: %s", err, bytes.TrimSpace(out))
			return
		}
		defer exec.Command("ip", "netns", "del", name).Run()
		if out, err := exec.Command("ip", "-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1").CombinedOutput(); err != nil {
			netnsErr = fmt.Errorf("creating a veth in a namespace: %v: %s", err, bytes.TrimSpace(out))
		}
	})
	return netnsErr
}

// UnitOnly reports whether GTUN_UNIT is set (`make unit`): the run is
// meant to be the tests that need no root, so a test that needs root
// skips even when CI is set (`make test` and `make integration` run it).
func UnitOnly() bool {
	v := strings.ToLower(strings.TrimSpace(os.Getenv("GTUN_UNIT")))
	return v != "" && v != "0" && v != "false" && v != "no"
}

// Require skips the test (or, when InCI, fails it loudly) unless the process
// runs as root, network namespaces work, and every tool is available. A tool
// is a command name looked up in PATH, or an absolute path that must exist
// (e.g. "/dev/net/tun"). "ip" and "nft" are always required. Without root
// in a UnitOnly run it skips, CI or not.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		if UnitOnly() {
			t.Skip("testnet: needs root; GTUN_UNIT is set (make unit): make test and make integration run it")
		}
		missing = append(missing, "root (euid is not 0)")
	}
	missing = append(missing, missingTools(append([]string{"ip", "nft"}, tools...))...)
	if len(missing) == 0 {
		if err := probeNetns(); err != nil {
			missing = append(missing, "network namespaces ("+err.Error()+")")
		}
	}
	Missing(t, missing...)
}

// RequireTools is Require for tests that only run commands: every tool must
// be available, root and network namespaces are not needed.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	Missing(t, missingTools(tools)...)
}

// Missing skips the test, or when InCI fails it loudly, if anything is
// missing (each a prerequisite and why); with nothing missing it returns.
func Missing(t testing.TB, missing ...string) {
	t.Helper()
	if len(missing) == 0 {
		return
	}
	msg := "testnet: missing prerequisites: " + strings.Join(missing, "; ")
	if InCI() {
		t.Fatal(msg + " (CI is set: these tests must run, not skip)")
	}
	t.Skip(msg)
}

// missingTools lists the tools (see Require) that are not available.
func missingTools(tools []string) []string {
	var missing []string
	seen := map[string]bool{}
	for _, tool := range tools {
		if seen[tool] {
			continue
		}
		seen[tool] = true
		if strings.HasPrefix(tool, "/") {
			if _, err := os.Stat(tool); err != nil {
				missing = append(missing, tool+" ("+err.Error()+")")
			}
			continue
		}
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" (not in PATH; scripts/deps.sh installs it)")
		}
	}
	return missing
}

// Topology is one instance of the test topology.
type Topology struct {
	Prefix string // namespace prefix, unique per test
	Root   string // repository root (holds go.mod and scripts/)

	wan       bool   // built by UpWithWAN
	wanemuBin string // tools/wanemu built for this topology
	claim     *os.File
}

// ClaimDir holds a lock file per namespace prefix in use: two topologies
// coming up at once (parallel tests, or go test processes of their own)
// never pick the same prefix, which checking for the namespaces alone
// cannot promise. The lock is the kernel's (flock), so a test process that
// dies leaves no claim behind.
var ClaimDir = filepath.Join(os.TempDir(), "gtun-testnet")

// claimPrefix locks prefix for this topology; nil if another holds it.
func claimPrefix(prefix string) (*os.File, error) {
	if err := os.MkdirAll(ClaimDir, 0o755); err != nil {
		return nil, fmt.Errorf("claim directory: %w", err)
	}
	path := filepath.Join(ClaimDir, prefix)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("claim %s: %w", prefix, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, nil
			}
			return nil, fmt.Errorf("claim %s: %w", prefix, err)
		}
		// The holder before us may have removed the file between our
		// open and our lock (see releasePrefix): then this lock guards
		// nothing; lock the file now at path.
		var held, now syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &held) == nil && syscall.Stat(path, &now) == nil && held.Ino == now.Ino {
			return f, nil
		}
		f.Close()
	}
}

// releasePrefix gives a claimed prefix back: the file goes first, while
// still locked, so that nobody locks a file that is no longer the claim.
func releasePrefix(f *os.File) {
	os.Remove(f.Name())
	f.Close()
}

// Options choose the optional parts of a topology.
type Options struct {
	// WAN puts the WAN emulator on the vm--gw link (see UpWithWAN).
	WAN bool
	// Cluster2 adds the second cluster (see UpWithCluster2).
	Cluster2 bool
	// IPv6 makes every link dual-stack (the *6 addresses; see
	// scripts/topology.sh --ipv6). Without it IPv6 is off everywhere.
	IPv6 bool
	// Replicas adds gwb and gwc, two more gateways of the first cluster
	// (wan ReplicaWans[1], [2]; vpc 10.0.1.2, 10.0.2.2), and the etcd
	// member addresses EtcdHosts on node's loopback, routed from every
	// gateway (see scripts/topology.sh --replicas).
	Replicas bool
}

// ReplicaHosts are the namespaces Options.Replicas adds.
var ReplicaHosts = []string{"gwb", "gwc"}

// ReplicaWans are the wan addresses of gw, gwb and gwc (Options.Replicas).
var ReplicaWans = []string{"198.51.100.2", "198.51.100.4", "198.51.100.5"}

// EtcdHosts are the addresses etcd members listen on in node
// (Options.Replicas).
var EtcdHosts = []string{"10.0.9.1", "10.0.9.2", "10.0.9.3"}

// Up builds a topology with a fresh prefix ("gt" + 4 hex digits) and
// registers its teardown with t.Cleanup. It calls Require first.
func Up(t testing.TB) *Topology {
	t.Helper()
	return UpWith(t, Options{})
}

// UpWithWAN is Up with the wan link (vm 198.51.100.1 -- gw 198.51.100.2)
// going through the WAN emulator in namespace "<prefix>-wan" (see
// scripts/topology.sh --wanemu). Addresses and interface names are the same
// as Up's; the emulator starts with no delay and no loss. It also requires
// the go tool, to build tools/wanemu.
func UpWithWAN(t testing.TB) *Topology {
	t.Helper()
	return UpWith(t, Options{WAN: true})
}

// UpWithCluster2 is Up plus a second cluster: namespaces "<prefix>-gw2",
// "-node2" and "-pod2", with exactly the internal addresses of gw, node and
// pod (vpc 10.0.0.0/24, pod 10.244.1.20, the ClusterIP DNAT on node2), and
// gw2 at GW2Wan on its own link from vm (see scripts/topology.sh
// --cluster2). The hosts of the first cluster are unchanged.
func UpWithCluster2(t testing.TB) *Topology {
	t.Helper()
	return UpWith(t, Options{Cluster2: true})
}

// UpWith builds a topology with the chosen optional parts.
func UpWith(t testing.TB, o Options) *Topology {
	t.Helper()
	wan := o.WAN
	if wan {
		Require(t, "go", "setsid")
	} else {
		Require(t)
	}
	tp := &Topology{Root: RepoRoot(), wan: wan}
	if wan {
		tp.wanemuBin = GoBuild(t, "./tools/wanemu")
	}
	for i := 0; ; i++ {
		tp.Prefix = "gt" + randHex(2)
		if _, err := os.Stat("/run/netns/" + tp.NS("vm")); errors.Is(err, os.ErrNotExist) {
			claim, err := claimPrefix(tp.Prefix)
			if err != nil {
				t.Fatalf("testnet: %v", err)
			}
			if claim != nil {
				tp.claim = claim
				break
			}
		}
		if i > 100 {
			t.Fatal("testnet: no free namespace prefix")
		}
	}
	t.Cleanup(func() {
		if err := tp.Down(); err != nil {
			t.Errorf("testnet: %v", err)
		}
	})
	var flags []string
	if wan {
		flags = append(flags, "--wanemu")
	}
	if o.Cluster2 {
		flags = append(flags, "--cluster2")
	}
	if o.IPv6 {
		flags = append(flags, "--ipv6")
	}
	if o.Replicas {
		flags = append(flags, "--replicas")
	}
	if out, err := tp.script("up", flags...); err != nil {
		t.Fatalf("testnet: topology.sh up %s: %v\n%s", tp.Prefix, err, out)
	}
	return tp
}

// Down removes the topology (killing whatever still runs inside it) and
// checks that none of its namespaces is left. Up's cleanup calls it; calling
// it again is harmless.
func (tp *Topology) Down() error {
	out, err := tp.script("down")
	if err != nil {
		return fmt.Errorf("topology.sh down %s: %v\n%s", tp.Prefix, err, out)
	}
	if tp.claim != nil {
		releasePrefix(tp.claim)
		tp.claim = nil
	}
	var left []string
	for _, h := range append(append(append(Hosts[:len(Hosts):len(Hosts)], "wan"), Cluster2Hosts...), ReplicaHosts...) {
		if _, err := os.Stat("/run/netns/" + tp.NS(h)); err == nil {
			left = append(left, tp.NS(h))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("namespaces left behind: %s", strings.Join(left, " "))
	}
	return nil
}

// script runs topology.sh CMD PREFIX [ARGS...].
func (tp *Topology) script(cmd string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, filepath.Join(tp.Root, "scripts", "topology.sh"), append([]string{cmd, tp.Prefix}, args...)...)
	if tp.wanemuBin != "" {
		c.Env = append(os.Environ(), "WANEMU_BIN="+tp.wanemuBin)
	}
	out, err := c.CombinedOutput()
	return string(out), err
}

func (tp *Topology) requireWAN(t testing.TB) {
	t.Helper()
	if !tp.wan {
		t.Fatal("testnet: this topology has no WAN emulator (build it with UpWithWAN)")
	}
}

// SetWAN restarts the WAN emulator with delay added to each direction of the
// wan link (a round trip gets 2×delay) and lossPct percent of the frames
// dropped at random in each direction independently (a round trip loses
// about twice as many). Frames in flight during the restart are lost. Only
// for topologies built by UpWithWAN.
func (tp *Topology) SetWAN(t testing.TB, delay time.Duration, lossPct float64) {
	t.Helper()
	tp.requireWAN(t)
	if delay < 0 || lossPct < 0 || lossPct > 100 {
		t.Fatalf("testnet: SetWAN(%v, %g): bad delay or loss", delay, lossPct)
	}
	ms := strconv.FormatFloat(float64(delay)/float64(time.Millisecond), 'f', -1, 64)
	pct := strconv.FormatFloat(lossPct, 'f', -1, 64)
	if out, err := tp.script("wanemu", ms, pct); err != nil {
		t.Fatalf("testnet: topology.sh wanemu %s %s %s: %v\n%s", tp.Prefix, ms, pct, err, out)
	}
}

// SetWANBlackhole makes the WAN emulator drop every frame in both directions
// (on) or forward again (off). It holds across SetWAN restarts.
func (tp *Topology) SetWANBlackhole(t testing.TB, on bool) {
	t.Helper()
	tp.requireWAN(t)
	arg := map[bool]string{true: "on", false: "off"}[on]
	if out, err := tp.script("blackhole", arg); err != nil {
		t.Fatalf("testnet: topology.sh blackhole %s %s: %v\n%s", tp.Prefix, arg, err, out)
	}
}

// WANStats are the WAN emulator's counters (see internal/wanstats).
type WANStats = wanstats.Stats

// WANDirectionStats are one direction's counters.
type WANDirectionStats = wanstats.Direction

// WANStats returns the WAN emulator's counters.
func (tp *Topology) WANStats(t testing.TB) WANStats {
	t.Helper()
	tp.requireWAN(t)
	out, err := tp.script("wanemu-stats")
	if err != nil {
		t.Fatalf("testnet: topology.sh wanemu-stats %s: %v\n%s", tp.Prefix, err, out)
	}
	var st WANStats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("testnet: wanemu stats: %v\n%s", err, out)
	}
	return st
}

// NS returns the namespace name of a host: NS("vm") is "<prefix>-vm".
func (tp *Topology) NS(host string) string { return tp.Prefix + "-" + host }

// Command returns an unstarted command running args inside host's namespace.
func (tp *Topology) Command(ctx context.Context, host string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", tp.NS(host)}, args...)...)
}

// Exec runs args inside host's namespace and returns its combined output.
// The error, if any, names the command and includes the output. It is
// bounded by DefaultExecTimeout.
func (tp *Topology) Exec(host string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultExecTimeout)
	defer cancel()
	return tp.ExecContext(ctx, host, args...)
}

// ExecContext is Exec with a caller-chosen context.
func (tp *Topology) ExecContext(ctx context.Context, host string, args ...string) (string, error) {
	out, err := tp.Command(ctx, host, args...).CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%v (%v)", err, ctx.Err())
		}
		return string(out), fmt.Errorf("[%s] %s: %v: %s", host, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error.
func (tp *Topology) MustExec(t testing.TB, host string, args ...string) string {
	t.Helper()
	out, err := tp.Exec(host, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Proc is a background process started by Start.
type Proc struct {
	Cmd     *exec.Cmd
	Host    string
	LogPath string

	done chan struct{}
	err  error // from Cmd.Wait, valid once done is closed
}

// Start runs args in the background inside host's namespace with stdout and
// stderr going to logPath (created or truncated; "" means a file in
// t.TempDir()). t.Cleanup stops it by PID: SIGTERM, then SIGKILL after 5 s,
// and waits for it; if the test failed, the log's tail is printed.
// `ip netns exec` execs the command in place, so Cmd.Process.Pid is the
// command's own PID and signals reach it directly.
func (tp *Topology) Start(t testing.TB, host string, logPath string, args ...string) *Proc {
	t.Helper()
	if len(args) == 0 {
		t.Fatal("testnet: Start needs a command")
	}
	if logPath == "" {
		logPath = filepath.Join(t.TempDir(), host+"-"+filepath.Base(args[0])+".log")
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", tp.NS(host)}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	// If the test binary dies, do not leave the process behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testnet: start [%s] %s: %v", host, strings.Join(args, " "), err)
	}
	p := &Proc{Cmd: cmd, Host: host, LogPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(5 * time.Second)
		if t.Failed() {
			t.Logf("testnet: [%s] %s (pid %d) %s; last lines of %s:\n%s",
				host, strings.Join(args, " "), p.Pid(), p.state(), logPath, p.LogTail(40))
		}
	})
	return p
}

// Pid returns the process ID.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process. It fails once the process has exited.
func (p *Proc) Signal(sig os.Signal) error {
	if p.Exited() {
		return os.ErrProcessDone
	}
	return p.Cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit. It returns the exit code
// and a nil error for a normal exit; 128+N and an error for death by signal N;
// -1 and an error on timeout (the process keeps running).
func (p *Proc) Wait(timeout time.Duration) (exitCode int, err error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		return -1, fmt.Errorf("pid %d still running after %v", p.Pid(), timeout)
	}
	return exitStatus(p.Cmd.ProcessState, p.err)
}

func exitStatus(ps *os.ProcessState, waitErr error) (int, error) {
	if ps == nil {
		return -1, waitErr
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), fmt.Errorf("killed by signal %v", ws.Signal())
	}
	return ps.ExitCode(), nil
}

// Kill9 sends SIGKILL and waits for the process to go away.
func (p *Proc) Kill9() {
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *Proc) stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill9()
	}
}

func (p *Proc) state() string {
	if !p.Exited() {
		return "running"
	}
	code, err := exitStatus(p.Cmd.ProcessState, p.err)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("exit code %d", code)
}

// Log returns the whole log file.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogTail returns the last n lines of the log file.
func (p *Proc) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Eventually calls f every 50 ms until it returns nil; after timeout it fails
// the test with f's last error.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %v: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RepoRoot walks up from the working directory to the directory holding
// go.mod. It panics if there is none.
func RepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("testnet: no go.mod above the working directory")
		}
		dir = parent
	}
}

// GoBuild builds a main package of this module (e.g. "./tools/podhttp",
// "./gtun") into t.TempDir() and returns the binary's path.
func GoBuild(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
