package ipam

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gtun/gtun/pkg/secure"
)

// memClaimer stands in for the shared store (pkg/store tests the real
// one against etcd): one owner per address, one address per key.
type memClaimer struct {
	mu     sync.Mutex
	byAddr map[netip.Addr]Lease
	byKey  map[secure.PublicKey]netip.Addr
	claims int
}

func newMemClaimer() *memClaimer {
	return &memClaimer{byAddr: map[netip.Addr]Lease{}, byKey: map[secure.PublicKey]netip.Addr{}}
}

func (c *memClaimer) Claim(k secure.PublicKey, name string, a netip.Addr) (netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.claims++
	if got, ok := c.byKey[k]; ok {
		return got, nil
	}
	if l, ok := c.byAddr[a]; ok {
		return netip.Addr{}, &TakenError{Owner: l}
	}
	c.byAddr[a] = Lease{PublicKey: k.String(), Name: name, Address: a.String()}
	c.byKey[k] = a
	return a, nil
}

// A replica starts looking at its own place in the pool; an address the
// store says is taken teaches the pool its owner, and the next is tried; a
// key the store already leased gets that address.
func TestClaimsStartAtTheSpreadAndLearnOwners(t *testing.T) {
	c := newMemClaimer()
	other := key(t)
	if _, err := c.Claim(other, "other", netip.MustParseAddr("100.64.240.100")); err != nil {
		t.Fatal(err)
	}
	p := open(t, pool24, t.TempDir())
	p.SetClaimer(c, 100+256) // wraps around the /24
	k := key(t)
	acquire(t, p, k, "100.64.240.101")
	if ls := p.Leases(); len(ls) != 2 || ls[0].Name != "other" {
		t.Errorf("leases %+v, want other's learned too", ls)
	}
	acquire(t, p, k, "100.64.240.101") // known: no claim
	if c.claims != 3 {
		t.Errorf("%d claims, want 3 (other's, the taken one, the good one)", c.claims)
	}
	q := open(t, pool24, t.TempDir())
	q.SetClaimer(c, 7)
	acquire(t, q, k, "100.64.240.101") // the store's answer, not the replica's first choice
	acquire(t, q, key(t), "100.64.240.7")
}

// Apply brings in the watch's changes; the cache file follows within
// RunCacheWriter's 200 ms, and is written once more when it stops.
func TestApplyAndCacheWriter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		p := open(t, pool24, dir)
		p.SetClaimer(newMemClaimer(), 0)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { p.RunCacheWriter(ctx); close(done) }()
		a, b := key(t), key(t)
		p.Apply([]Lease{{PublicKey: a.String(), Name: "a", Address: "100.64.240.5"}, {PublicKey: b.String(), Name: "b", Address: "100.64.240.6"}}, nil)
		time.Sleep(250 * time.Millisecond)
		if got := readLeases(t, dir); len(got) != 2 || got[a.String()] != "100.64.240.5" {
			t.Errorf("cache after Apply: %v", got)
		}
		p.Apply([]Lease{{PublicKey: a.String(), Name: "a", Address: "100.64.240.9"}}, []string{b.String()})
		if ls := p.Leases(); len(ls) != 1 || ls[0].Address != "100.64.240.9" {
			t.Errorf("leases after a move and a release: %+v", ls)
		}
		acquire(t, p, key(t), "100.64.240.2") // .6 is free again, .2 first
		cancel()
		<-done
		if got := readLeases(t, dir); len(got) != 2 || got[a.String()] != "100.64.240.9" {
			t.Errorf("cache after the writer stopped: %v", got)
		}
	})
}
