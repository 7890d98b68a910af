package server

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/session"
)

// writeServerConfig writes m's gtund config as a file, with routes and
// the peers named (their keys from peerKey), and makes it the file a
// reload reads.
func (m *memServer) writeServerConfig(routes []string, peers ...string) {
	m.t.Helper()
	dir := m.t.TempDir()
	key := filepath.Join(dir, "gtund.key")
	if err := os.WriteFile(key, []byte(m.s.cfg.PrivateKey.Encode()+"\n"), 0o600); err != nil {
		m.t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[server]\nprivate_key_file = %q\ntun = %q\nmtu = %d\npool = %q\nkeepalive = \"1m\"\ndead_after = 3\nroutes = [\"%s\"]\n",
		key, m.s.cfg.Tun, m.s.cfg.MTU, m.s.cfg.Pool, strings.Join(routes, `", "`))
	for _, name := range peers {
		fmt.Fprintf(&b, "\n[[peer]]\nname = %q\npublic_key = %q\n", name, peerKey(m.t, name).Public())
	}
	path := filepath.Join(dir, "gtund.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		m.t.Fatal(err)
	}
	m.s.cfg.File = path
}

// nextPush waits for the next config gtund pushes to c.
func (c *memClient) nextPush() *session.Msg {
	c.t.Helper()
	select {
	case m := <-c.pushed:
		c.lastPushed = m.Routes
		return m
	case <-time.After(wait):
		c.t.Fatalf("no config pushed (pushed before: %v)", c.lastPushed)
		return nil
	}
}

// A reload does not wait for a client whose writes stall (it reads
// nothing: its socket buffers and gtund's queue for it are full, as for a
// blackholed client). Each reload returns at once; the peer that reads
// gets each new set of routes; the peer removed is cut off as the reload
// returns and told why; the stalled one, once it reads again, gets the
// newest config, after at most the one that was being written when it
// stalled (a config still waiting is replaced by a newer one).
func TestReloadDoesNotWaitForAStalledPeer(t *testing.T) {
	m := newMemServer(t, testConfig(t, config.Peer{Name: "stalled"}, config.Peer{Name: "vm"}, config.Peer{Name: "gone"}))
	hold := make(chan struct{})
	stalled := m.dial("stalled", hold)
	released := false
	release := func() {
		if !released {
			released = true
			close(hold)
		}
	}
	defer release() // before the clients' cleanups, which wait for their sessions
	m.waitRouted(stalled.addr, true)
	vm := m.connect("vm")
	gone := m.connect("gone")
	goneSession := m.s.route(gone.addr)

	big := frame("10.244.1.20", stalled.addr.String(), 17, make([]byte, 16000)...)
	p := m.s.route(stalled.addr).peer
	// Once gtund's queue for it drops, its writer is stuck on the full
	// socket: any write to this session blocks.
	for deadline := time.Now().Add(wait); p.drops.Get(DropQueueFull) == 0; m.dev.Inject(big) {
		if time.Now().After(deadline) {
			t.Fatal("the stalled peer's queue never filled")
		}
	}

	routes := []string{"10.244.0.0/16", "10.96.0.0/12"}
	for i, added := range []string{"10.100.0.0/16", "10.101.0.0/16", "10.102.0.0/16"} {
		routes = append(routes, added)
		m.writeServerConfig(routes, "stalled", "vm")
		done := make(chan error, 1)
		go func() {
			_, err := m.s.reload()
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("reload %d: %v", i+1, err)
			}
		case <-time.After(wait):
			t.Fatalf("reload %d still running after %v: it waits for the stalled peer", i+1, wait)
		}
		if got := vm.nextPush(); !slices.Contains(got.Routes, added) {
			t.Fatalf("reload %d: vm was pushed routes %v, want them with %s", i+1, got.Routes, added)
		}
		if i > 0 {
			continue
		}
		// Cut off as the reload returns, though its notice may still be
		// on its way: nothing is routed to it, nothing from it passes.
		if m.s.route(gone.addr) != nil {
			t.Error("the removed peer's address is still routed to it after the reload")
		}
		if r, drop := m.s.checkFromPeer(goneSession, frame(gone.addr.String(), "10.244.1.20", 17, udp53...)); !drop || r != DropACL {
			t.Errorf("a frame of the removed peer: dropped %v (%v), want dropped for the ACL", drop, r)
		}
		select {
		case why := <-gone.endedBy:
			if !strings.Contains(why, "peer removed") {
				t.Errorf("the removed peer's session ended with %q, want the reload's notice", why)
			}
		case <-time.After(wait):
			t.Error("the removed peer's session did not end")
		}
	}
	select {
	case m := <-stalled.pushed:
		t.Fatalf("the stalled peer got a config while it read nothing: %v", m.Routes)
	default:
	}

	release()
	slices.Sort(routes) // as a config lists them
	var got [][]string
	for len(got) == 0 || !slices.Equal(slices.Sorted(slices.Values(got[len(got)-1])), routes) {
		got = append(got, stalled.nextPush().Routes)
	}
	if len(got) > 2 {
		t.Errorf("the stalled peer was pushed %d configs (%v): more than the one in flight and the newest", len(got), got)
	}
	m.sync(stalled) // it reads and is served again
}
