package client

import (
	"bytes"
	"testing"
	"time"
)

// A reload adds and removes [[server]]s live: a server added connects and
// carries its routes; a server removed has its session closed, its routes
// and address leave the data plane and the TUN, and it leaves the status;
// the server kept all along keeps its one session throughout.
func TestServersAddedAndRemovedLive(t *testing.T) {
	c1, c2 := twoServers(t)
	m := newMemClient(t, false, c1)
	if _, addrs := m.dev.Config(); len(addrs) != 1 {
		t.Fatalf("TUN addresses %v, want c1's", addrs)
	}
	sess1 := c1.session()

	m.reconfigure(c1, c2)
	m.waitState(c2.name, "connected")
	deadline := time.Now().Add(wait)
	for _, addrs := m.dev.Config(); len(addrs) != 2; _, addrs = m.dev.Config() {
		if time.Now().After(deadline) {
			t.Fatalf("TUN addresses %v, want one from each server", addrs)
		}
		time.Sleep(time.Millisecond)
	}
	f := frame("100.64.240.2", "192.168.3.4") // c2's route
	m.dev.Inject(f)
	if got := c2.next(); !bytes.Equal(got, f) {
		t.Fatalf("c2 got % x", got)
	}

	m.reconfigure(c1)
	if len(m.c.Status().Servers) != 1 {
		t.Errorf("status lists %+v after c2 was removed", m.c.Status().Servers)
	}
	// Its session ends at the server too.
	for deadline := time.Now().Add(wait); c2.ended.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("c2's session still up after its removal")
		}
	}
	before := m.c.drops.Get(DropNoRoute)
	m.dev.Inject(frame("100.64.240.2", "192.168.3.4"))
	m.waitDrops(DropNoRoute, before+1)
	if _, addrs := m.dev.Config(); len(addrs) != 1 || addrs[0].String() != "100.64.240.2/24" {
		t.Errorf("TUN addresses %v after c2 was removed, want c1's alone", addrs)
	}
	f = frame("100.64.240.2", "10.244.1.20")
	m.dev.Inject(f)
	if got := c1.next(); !bytes.Equal(got, f) {
		t.Fatalf("c1 got % x", got)
	}
	c1.mu.Lock()
	n := c1.sessions
	c1.mu.Unlock()
	if n != 1 || c1.session() != sess1 || m.upstream(c1.name).reconnects != 0 {
		t.Errorf("c1 had %d sessions (%d reconnects) across the reloads, want 1 untouched", n, m.upstream(c1.name).reconnects)
	}
	c2.quiet()
}
