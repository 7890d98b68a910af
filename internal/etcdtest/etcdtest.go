// Package etcdtest runs a real etcd cluster (the etcd binary, e.g.
// Debian's etcd-server) for tests: one or more members on loopback or on
// addresses inside a network namespace, each a process of its own that a
// test can kill, stop and start again. Missing etcd skips the test, or
// fails it when CI is set (testnet.Missing).
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
)

// Options place the members.
type Options struct {
	Members int
	// Netns runs the members in this network namespace (ip netns exec);
	// empty: here.
	Netns string
	// Hosts are the members' addresses (one each); default 127.0.0.1 with
	// a free port pair each.
	Hosts []string
	// TLS serves clients over https with this certificate and key, and
	// asks them for a certificate signed by CA (etcd's --client-cert-auth).
	TLS *TLS
}

// TLS are the PEM files of an etcd serving clients over TLS.
type TLS struct{ CA, Cert, Key string }

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	opts    Options
	dir     string
	members []*Member
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	peerURL   string
	args      []string
	log       string
	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{}
}

// Require skips (or fails in CI) without the etcd binary.
func Require(t testing.TB) {
	t.Helper()
	testnet.RequireTools(t, "etcd", "etcdctl")
}

// Start runs a cluster and waits until it has a leader; t.Cleanup stops it.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	Require(t)
	if o.Members == 0 {
		o.Members = 1
	}
	c := &Cluster{t: t, opts: o, dir: t.TempDir()}
	var initial []string
	for i := range o.Members {
		m := &Member{Name: fmt.Sprintf("m%d", i+1)}
		scheme := "http://"
		if o.TLS != nil {
			scheme = "https://"
		}
		if len(o.Hosts) > i {
			m.ClientURL = scheme + net.JoinHostPort(o.Hosts[i], "2379")
			m.peerURL = "http://" + net.JoinHostPort(o.Hosts[i], "2380")
		} else {
			m.ClientURL = scheme + "127.0.0.1:" + freePort(t)
			m.peerURL = "http://127.0.0.1:" + freePort(t)
		}
		initial = append(initial, m.Name+"="+m.peerURL)
		c.members = append(c.members, m)
	}
	for _, m := range c.members {
		m.log = filepath.Join(c.dir, m.Name+".log")
		m.args = []string{"etcd", "--name", m.Name, "--data-dir", filepath.Join(c.dir, m.Name),
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "gtun-test-" + filepath.Base(c.dir),
			// Tests share a loaded 2-core machine: beats often enough for
			// a quick election, timeouts long enough not to flap.
			"--heartbeat-interval", "100", "--election-timeout", "1000"}
		if o.TLS != nil {
			m.args = append(m.args, "--cert-file", o.TLS.Cert, "--key-file", o.TLS.Key, "--trusted-ca-file", o.TLS.CA, "--client-cert-auth")
		}
		if o.Netns != "" {
			m.args = append([]string{"ip", "netns", "exec", o.Netns}, m.args...)
		}
		m.start(t)
	}
	t.Cleanup(c.StopAll)
	c.WaitHealthy(t, 20*time.Second)
	return c
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

func (m *Member) start(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(m.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(m.args[0], m.args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH=")
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("etcd %s: %v", m.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	m.mu.Lock()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()
}

// Endpoints are the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Member i (from 0).
func (c *Cluster) Member(i int) *Member { return c.members[i] }

// Kill9 kills member i at once.
func (c *Cluster) Kill9(i int) { c.members[i].signal(syscall.SIGKILL) }

// Stop ends member i cleanly (SIGTERM, then SIGKILL after 5 s).
func (c *Cluster) Stop(i int) { c.members[i].stop() }

// StopAll stops every member.
func (c *Cluster) StopAll() {
	for _, m := range c.members {
		m.stop()
	}
}

// Restart starts member i again with its data.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	m := c.members[i]
	m.stop()
	m.start(t)
}

// RestartAll starts every stopped member again and waits for a leader.
func (c *Cluster) RestartAll(t testing.TB) {
	t.Helper()
	for _, m := range c.members {
		if !m.running() {
			m.start(t)
		}
	}
	c.WaitHealthy(t, 20*time.Second)
}

func (m *Member) running() bool {
	cmd, _ := m.process()
	return cmd != nil
}

// process is the member's etcd and the channel closed when it has exited;
// nil, nil when none runs.
func (m *Member) process() (*exec.Cmd, chan struct{}) {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if cmd == nil || done == nil {
		return nil, nil
	}
	select {
	case <-done:
		return nil, nil
	default:
		return cmd, done
	}
}

func (m *Member) signal(sig syscall.Signal) {
	cmd, done := m.process()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	if sig == syscall.SIGKILL {
		<-done
	}
}

func (m *Member) stop() {
	cmd, done := m.process()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Log is member i's output.
func (c *Cluster) Log(i int) string {
	b, _ := os.ReadFile(c.members[i].log)
	return string(b)
}

// WaitHealthy waits until etcdctl endpoint health passes on a quorum (a
// put goes through).
func (c *Cluster) WaitHealthy(t testing.TB, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		if out, err := c.Ctl("put", "/gtun-test-health", "ok"); err == nil {
			return
		} else {
			last = fmt.Sprintf("%v: %s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var logs strings.Builder
	for i := range c.members {
		l := c.Log(i)
		if len(l) > 2000 {
			l = l[len(l)-2000:]
		}
		fmt.Fprintf(&logs, "--- %s:\n%s\n", c.members[i].Name, l)
	}
	t.Fatalf("etcd cluster not healthy within %v: %s\n%s", limit, last, logs.String())
}

// Ctl runs etcdctl (v3 API) against the running members.
func (c *Cluster) Ctl(args ...string) (string, error) {
	var eps []string
	for _, m := range c.members {
		if m.running() {
			eps = append(eps, m.ClientURL)
		}
	}
	if len(eps) == 0 {
		return "", fmt.Errorf("no member running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	full := []string{"etcdctl", "--endpoints", strings.Join(eps, ","), "--command-timeout", "2s"}
	if c.opts.TLS != nil {
		full = append(full, "--cacert", c.opts.TLS.CA, "--cert", c.opts.TLS.Cert, "--key", c.opts.TLS.Key)
	}
	full = append(full, args...)
	if c.opts.Netns != "" {
		full = append([]string{"ip", "netns", "exec", c.opts.Netns}, full...)
	}
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
