package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/etcdtest"
	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/secure"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func dial(t *testing.T, endpoints []string, prefix string) *Etcd {
	t.Helper()
	e, err := Dial(config.Store{Backend: config.StoreEtcd, Endpoints: endpoints, Prefix: prefix, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func newKey(t *testing.T) secure.PublicKey {
	t.Helper()
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func accept([]config.PeerSection) error { return nil }

// Peers added on two replicas at once are all kept; a name or a key added
// twice is refused the second time, whoever is second.
func TestAddPeerConcurrently(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	a, b := dial(t, c.Endpoints(), "/t"), dial(t, c.Endpoints(), "/t")
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		for j, e := range []*Etcd{a, b} {
			wg.Go(func() {
				if err := e.AddPeer(config.PeerSection{Name: fmt.Sprintf("r%d-%d", j, i), PublicKey: newKey(t).String()}, accept); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	snap, err := a.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Peers) != 40 {
		t.Fatalf("%d peers stored, want 40", len(snap.Peers))
	}
	// The same name from both at once: exactly one wins.
	var wins, conflicts int
	var mu sync.Mutex
	for _, e := range []*Etcd{a, b} {
		wg.Go(func() {
			err := e.AddPeer(config.PeerSection{Name: "same", PublicKey: newKey(t).String()}, accept)
			var ce *ConflictError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.As(err, &ce):
				conflicts++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || conflicts != 1 {
		t.Errorf("same name twice at once: %d added, %d refused; want 1 and 1", wins, conflicts)
	}
	// A check that refuses stops the change.
	if err := a.AddPeer(config.PeerSection{Name: "bad", PublicKey: newKey(t).String()}, func([]config.PeerSection) error { return errors.New("no") }); err == nil {
		t.Error("a refused check stored the peer")
	}
}

// A fixed address is held like a lease: no replica leases it to another
// key, and removing the peer frees it.
func TestFixedAddressAndRemove(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	e := dial(t, c.Endpoints(), "/t")
	k1, k2 := newKey(t), newKey(t)
	if err := e.AddPeer(config.PeerSection{Name: "fixed", PublicKey: k1.String(), Address: "100.64.240.2"}, accept); err != nil {
		t.Fatal(err)
	}
	_, err := e.Claim(k2, "other", netip.MustParseAddr("100.64.240.2"))
	var taken *ipam.TakenError
	if !errors.As(err, &taken) || taken.Owner.Name != "fixed" {
		t.Fatalf("claim of a fixed address: %v, want taken by fixed", err)
	}
	if _, err := e.RemovePeer("fixed"); err != nil {
		t.Fatal(err)
	}
	if got, err := e.Claim(k2, "other", netip.MustParseAddr("100.64.240.2")); err != nil || got != netip.MustParseAddr("100.64.240.2") {
		t.Fatalf("claim after remove: %v %v", got, err)
	}
	if _, err := e.RemovePeer("fixed"); err == nil {
		t.Error("removing a removed peer succeeded")
	}
}

// Two replicas' pools allocating at once, for distinct keys and for the
// same keys: no address is ever held by two keys, and a key has the same
// address on both. Reports allocations per second under this contention,
// with both replicas starting at the same place in the pool (every address
// raced for) and with their own starting places, as gtund gives them.
func TestClaimsUnderContention(t *testing.T) {
	for _, spread := range [][2]uint32{{0, 0}, {0, 2048}} {
		t.Run(fmt.Sprintf("start %d and %d", spread[0], spread[1]), func(t *testing.T) { claimRace(t, spread) })
	}
}

func claimRace(t *testing.T, spread [2]uint32) {
	c := etcdtest.Start(t, etcdtest.Options{})
	prefix := netip.MustParsePrefix("100.64.0.0/20")
	pools := make([]*ipam.Pool, 2)
	for i := range pools {
		p, err := ipam.Open(prefix, netip.MustParseAddr("100.64.0.1"), t.TempDir(), quiet)
		if err != nil {
			t.Fatal(err)
		}
		p.SetClaimer(dial(t, c.Endpoints(), "/t"), spread[i])
		pools[i] = p
	}
	const n = 600
	keys := make([]secure.PublicKey, n)
	for i := range keys {
		keys[i] = newKey(t)
	}
	got := make([][]netip.Addr, 2)
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range pools {
		got[i] = make([]netip.Addr, n)
		for w := range 8 { // 8 connecting clients at a time on each replica
			wg.Go(func() {
				for j := w; j < n; j += 8 {
					// Replica 0 goes up the key list, replica 1 down it:
					// each key is asked for on both, at different times.
					k := j
					if i == 1 {
						k = n - 1 - j
					}
					a, err := p.Acquire(keys[k], fmt.Sprint("k", k))
					if err != nil {
						t.Error(err)
						return
					}
					got[i][k] = a
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d acquisitions (%d keys, each on both replicas) in %v: %.0f/s", 2*n, n, elapsed, float64(2*n)/elapsed.Seconds())
	owner := map[netip.Addr]int{}
	for k := range n {
		if got[0][k] != got[1][k] {
			t.Errorf("key %d has %v on one replica and %v on the other", k, got[0][k], got[1][k])
		}
		if o, dup := owner[got[0][k]]; dup {
			t.Errorf("address %v given to keys %d and %d", got[0][k], o, k)
		}
		owner[got[0][k]] = k
	}
}

// The mirror brings a peer added elsewhere to the server within a second,
// writes it to the cache peers file, and follows leases; with etcd gone it
// reports the outage and keeps the cache; back, it converges.
func TestMirror(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	e, writer := dial(t, c.Endpoints(), "/t"), dial(t, c.Endpoints(), "/t")
	dir := t.TempDir()
	peersCh := make(chan struct{}, 16)
	sink := &leaseSink{}
	m := NewMirror(e, dir, "r1", quiet, func() { peersCh <- struct{}{} }, sink)
	ctx := t.Context()
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { <-done })
	waitPeers := func(what string) time.Duration {
		start := time.Now()
		select {
		case <-peersCh:
			return time.Since(start)
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no peers change", what)
		}
		return 0
	}
	waitPeers("first load")
	start := time.Now()
	if err := writer.AddPeer(config.PeerSection{Name: "vm1", PublicKey: newKey(t).String()}, accept); err != nil {
		t.Fatal(err)
	}
	waitPeers("add")
	if took := time.Since(start); took > time.Second {
		t.Errorf("a peer added took %v to reach the mirror, want < 1s", took)
	}
	b, err := os.ReadFile(filepath.Join(dir, config.PeersFileName))
	if err != nil || !strings.Contains(string(b), `name = "vm1"`) {
		t.Fatalf("cache peers file: %v\n%s", err, b)
	}
	if _, err := writer.Claim(newKey(t), "x", netip.MustParseAddr("100.64.240.9")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.leases) == 1 && sink.leases[0].Address == "100.64.240.9"
	})
	if st := m.Status(); !st.Connected || st.Revision == 0 {
		t.Errorf("status while up: %+v", st)
	}

	c.StopAll()
	eventually(t, 5*time.Second, func() bool { return !m.Status().Connected })
	if err := writer.AddPeer(config.PeerSection{Name: "vm2", PublicKey: newKey(t).String()}, accept); err == nil {
		t.Fatal("add with etcd stopped succeeded")
	} else if ue := (*UnavailableError)(nil); !errors.As(err, &ue) || !strings.Contains(err.Error(), c.Endpoints()[0]) {
		t.Errorf("add with etcd stopped: %v, want an UnavailableError naming the endpoint", err)
	}
	if b2, _ := os.ReadFile(filepath.Join(dir, config.PeersFileName)); string(b2) != string(b) {
		t.Error("the cache changed while etcd was away")
	}

	c.RestartAll(t)
	eventually(t, 10*time.Second, func() bool { return m.Status().Connected })
	vm2 := config.PeerSection{Name: "vm2", PublicKey: newKey(t).String()}
	eventually(t, 10*time.Second, func() bool { // its connection may still be in backoff
		err := writer.AddPeer(vm2, accept)
		var ce *ConflictError // a try that timed out after etcd committed it
		return err == nil || errors.As(err, &ce)
	})
	waitPeers("add after the outage")
	b, _ = os.ReadFile(filepath.Join(dir, config.PeersFileName))
	if !strings.Contains(string(b), `name = "vm2"`) {
		t.Errorf("cache after the outage:\n%s", b)
	}
}

func eventually(t *testing.T, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not within %v", limit)
}

// An import larger than one transaction may hold (etcd's max-txn-ops,
// 128 by default) goes in batches; importing it again changes nothing.
func TestImportInBatches(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	e := dial(t, c.Endpoints(), "/t")
	var peers []config.PeerSection
	var leases []ipam.Lease
	for i := range 1000 {
		k := newKey(t).String()
		peers = append(peers, config.PeerSection{Name: fmt.Sprint("p", i), PublicKey: k})
		leases = append(leases, ipam.Lease{PublicKey: k, Name: fmt.Sprint("p", i), Address: fmt.Sprintf("100.64.%d.%d", 4+i/250, 1+i%250)})
	}
	if err := e.Import(peers, leases); err != nil {
		t.Fatal(err)
	}
	snap, err := e.Load(t.Context())
	if err != nil || len(snap.Peers) != 1000 || len(snap.Leases) != 1000 {
		t.Fatalf("after import: %v, %d peers, %d leases", err, len(snap.Peers), len(snap.Leases))
	}
	var ce *ConflictError
	if err := e.Import(peers[:1], nil); !errors.As(err, &ce) {
		t.Errorf("import of a peer that is there: %v", err)
	}
}

// leaseSink records what a Mirror hands to the pool.
type leaseSink struct {
	mu     sync.Mutex
	leases []ipam.Lease
}

func (s *leaseSink) Replace(all []ipam.Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leases = all
}

func (s *leaseSink) Apply(put []ipam.Lease, released []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range put {
		i := slices.IndexFunc(s.leases, func(o ipam.Lease) bool { return o.PublicKey == l.PublicKey })
		if i < 0 {
			s.leases = append(s.leases, l)
		} else {
			s.leases[i] = l
		}
	}
	s.leases = slices.DeleteFunc(s.leases, func(o ipam.Lease) bool { return slices.Contains(released, o.PublicKey) })
}
