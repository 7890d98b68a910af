package ipam

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/gtun/gtun/pkg/secure"
)

var (
	pool24 = netip.MustParsePrefix("100.64.240.0/24")
	gw24   = netip.MustParseAddr("100.64.240.1")
	quiet  = slog.New(slog.NewTextHandler(io.Discard, nil))
)

func key(t testing.TB) secure.PublicKey {
	t.Helper()
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func open(t testing.TB, prefix netip.Prefix, dir string) *Pool {
	t.Helper()
	p, err := Open(prefix, prefix.Addr().Next(), dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func acquire(t testing.TB, p *Pool, k secure.PublicKey, want string) {
	t.Helper()
	a, err := p.Acquire(k, "peer-"+k.Short())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if a != netip.MustParseAddr(want) {
		t.Fatalf("Acquire = %s, want %s", a, want)
	}
}

// dirNames lists dir, so that tests can see stray temp files.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func readLeases(t testing.TB, dir string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, leaseFile))
	if err != nil {
		t.Fatal(err)
	}
	var ls []Lease
	if err := json.Unmarshal(b, &ls); err != nil {
		t.Fatalf("leases.json: %v\n%s", err, b)
	}
	out := map[string]string{}
	for _, l := range ls {
		out[l.PublicKey] = l.Address
	}
	return out
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{
		"100.64.240.0/24": "100.64.240.255",
		"100.64.0.0/30":   "100.64.0.3",
		"10.0.0.0/8":      "10.255.255.255",
		"100.64.240.8/29": "100.64.240.15",
	} {
		if got := Broadcast(netip.MustParsePrefix(in)); got != netip.MustParseAddr(want) {
			t.Errorf("Broadcast(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestSequentialAllocation(t *testing.T) {
	p := open(t, pool24, t.TempDir())
	// .0 is the network, .1 the server's own: the first client gets .2.
	for _, want := range []string{"100.64.240.2", "100.64.240.3", "100.64.240.4"} {
		acquire(t, p, key(t), want)
	}
}

func TestAllocationSkipsFixedAddresses(t *testing.T) {
	p := open(t, pool24, t.TempDir())
	f1, f2, a, b, c := key(t), key(t), key(t), key(t), key(t)
	fixed := map[secure.PublicKey]netip.Addr{f1: netip.MustParseAddr("100.64.240.2"), f2: netip.MustParseAddr("100.64.240.4")}
	p.SetPeers(fixed, map[secure.PublicKey]bool{f1: true, f2: true, a: true, b: true, c: true})
	acquire(t, p, a, "100.64.240.3")
	acquire(t, p, b, "100.64.240.5")
	acquire(t, p, f2, "100.64.240.4") // a fixed key gets its fixed address
	acquire(t, p, f1, "100.64.240.2")
	acquire(t, p, c, "100.64.240.6")
	for _, l := range p.Leases() {
		if l.PublicKey == f1.String() || l.PublicKey == f2.String() {
			t.Errorf("fixed address stored as a lease: %+v", l)
		}
	}
}

func TestAllocationSkipsBroadcast(t *testing.T) {
	pfx := netip.MustParsePrefix("100.64.240.8/29") // .8 network, .9 server, .10-.14 clients, .15 broadcast
	p := open(t, pfx, t.TempDir())
	for _, want := range []string{"100.64.240.10", "100.64.240.11", "100.64.240.12", "100.64.240.13", "100.64.240.14"} {
		acquire(t, p, key(t), want)
	}
	if a, err := p.Acquire(key(t), "one too many"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Acquire on a full /29 = %v, %v; want ErrExhausted", a, err)
	}
}

func TestExhaustedSlash30(t *testing.T) {
	p := open(t, netip.MustParsePrefix("100.64.0.0/30"), t.TempDir())
	k := key(t)
	acquire(t, p, k, "100.64.0.2") // the only client address of a /30
	a, err := p.Acquire(key(t), "second")
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("second Acquire = %v, %v; want ErrExhausted", a, err)
	}
	if a.IsValid() {
		t.Errorf("exhausted Acquire returned an address %s", a)
	}
	acquire(t, p, k, "100.64.0.2") // the holder keeps it
}

func TestStickyAcrossOpen(t *testing.T) {
	dir := t.TempDir()
	a, b, c := key(t), key(t), key(t)
	p := open(t, pool24, dir)
	acquire(t, p, a, "100.64.240.2")
	acquire(t, p, b, "100.64.240.3")
	acquire(t, p, a, "100.64.240.2") // the same key again: the same lease
	if err := p.PersistError(); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{leaseFile}) {
		t.Errorf("state dir holds %v, want only %s (no temp files)", got, leaseFile)
	}
	want := map[string]string{a.String(): "100.64.240.2", b.String(): "100.64.240.3"}
	if got := readLeases(t, dir); !maps.Equal(got, want) {
		t.Errorf("leases.json = %v, want %v", got, want)
	}

	// A restart: the same keys get the same addresses whatever the order.
	p2 := open(t, pool24, dir)
	acquire(t, p2, c, "100.64.240.4")
	acquire(t, p2, b, "100.64.240.3")
	acquire(t, p2, a, "100.64.240.2")
	ls := p2.Leases()
	if len(ls) != 3 || ls[0].Address != "100.64.240.2" || ls[2].Address != "100.64.240.4" {
		t.Errorf("Leases() = %+v, want three sorted by address", ls)
	}
	if ls[0].Name != "peer-"+a.Short() {
		t.Errorf("lease name = %q", ls[0].Name)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{leaseFile}) {
		t.Errorf("state dir holds %v, want only %s", got, leaseFile)
	}
}

func TestOpenCreatesStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "gtund")
	p := open(t, pool24, dir)
	acquire(t, p, key(t), "100.64.240.2")
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("state dir mode %04o, want no group/other access", perm)
	}
}

func TestSetPeersDropsRemovedKeys(t *testing.T) {
	dir := t.TempDir()
	a, b, c := key(t), key(t), key(t)
	p := open(t, pool24, dir)
	acquire(t, p, a, "100.64.240.2")
	acquire(t, p, b, "100.64.240.3")
	p.SetPeers(nil, map[secure.PublicKey]bool{a: true, c: true})
	if ls := p.Leases(); len(ls) != 1 || ls[0].PublicKey != a.String() {
		t.Fatalf("after removing b: Leases() = %+v", ls)
	}
	if got := readLeases(t, dir); !maps.Equal(got, map[string]string{a.String(): "100.64.240.2"}) {
		t.Errorf("leases.json after SetPeers = %v", got)
	}
	acquire(t, p, c, "100.64.240.3") // b's address is free again

	// The removal survives a restart.
	p2 := open(t, pool24, dir)
	acquire(t, p2, a, "100.64.240.2")
	acquire(t, p2, c, "100.64.240.3")
	acquire(t, p2, b, "100.64.240.4")
}

func TestSetPeersReleasesLeaseOnNewFixedAddress(t *testing.T) {
	p := open(t, pool24, t.TempDir())
	a, b := key(t), key(t)
	acquire(t, p, a, "100.64.240.2")
	// b is given a's address as a fixed one: a's lease goes, a gets another.
	p.SetPeers(map[secure.PublicKey]netip.Addr{b: netip.MustParseAddr("100.64.240.2")}, map[secure.PublicKey]bool{a: true, b: true})
	acquire(t, p, b, "100.64.240.2")
	acquire(t, p, a, "100.64.240.3")
}

func TestOpenDropsInvalidLeases(t *testing.T) {
	dir := t.TempDir()
	a, b, c, d := key(t), key(t), key(t), key(t)
	ls := []Lease{
		{PublicKey: a.String(), Name: "a", Address: "100.64.240.7"},
		{PublicKey: b.String(), Name: "outside", Address: "100.64.241.7"},
		{PublicKey: c.String(), Name: "server's own", Address: "100.64.240.1"},
		{PublicKey: "not a key", Name: "bad key", Address: "100.64.240.8"},
		{PublicKey: d.String(), Name: "same address as a", Address: "100.64.240.7"},
	}
	bs, _ := json.Marshal(ls)
	if err := os.WriteFile(filepath.Join(dir, leaseFile), bs, 0o600); err != nil {
		t.Fatal(err)
	}
	p := open(t, pool24, dir)
	if got := p.Leases(); len(got) != 1 || got[0].PublicKey != a.String() {
		t.Fatalf("Leases() = %+v, want only a's", got)
	}
	acquire(t, p, a, "100.64.240.7")
	acquire(t, p, b, "100.64.240.2")
	acquire(t, p, c, "100.64.240.3")
	acquire(t, p, d, "100.64.240.4")
}

func TestCorruptLeasesMovedAside(t *testing.T) {
	dir := t.TempDir()
	garbage := []byte(`[{"public_key": "x", "address": `)
	if err := os.WriteFile(filepath.Join(dir, leaseFile), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	p := open(t, pool24, dir)
	if ls := p.Leases(); len(ls) != 0 {
		t.Fatalf("Leases() = %+v, want none", ls)
	}
	kept, err := os.ReadFile(filepath.Join(dir, leaseFile+".corrupt"))
	if err != nil {
		t.Fatalf("corrupt file not kept: %v", err)
	}
	if string(kept) != string(garbage) {
		t.Errorf("kept %q, want %q", kept, garbage)
	}
	if _, err := os.Stat(filepath.Join(dir, leaseFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("corrupt leases.json still in place: %v", err)
	}
	k := key(t)
	acquire(t, p, k, "100.64.240.2") // the pool starts empty and works
	if got := readLeases(t, dir); !maps.Equal(got, map[string]string{k.String(): "100.64.240.2"}) {
		t.Errorf("leases.json = %v", got)
	}
}

func TestUnreadableLeasesIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, leaseFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(pool24, gw24, dir, quiet); err == nil {
		t.Fatal("Open succeeded with leases.json a directory")
	}
}

func TestOpenStateDirUnderFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(pool24, gw24, filepath.Join(file, "state"), quiet); err == nil {
		t.Fatal("Open succeeded with state_dir under a regular file")
	}
}

// A lease file that cannot be written does not stop addresses from being
// handed out; the failure is reported, and the next change writes it.
func TestPersistFailureAndRecovery(t *testing.T) {
	dir := t.TempDir()
	p := open(t, pool24, dir)
	a, b, c := key(t), key(t), key(t)
	acquire(t, p, a, "100.64.240.2")

	// Break it: leases.json becomes a directory, so the rename fails.
	lf := filepath.Join(dir, leaseFile)
	if err := os.Remove(lf); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(lf, 0o700); err != nil {
		t.Fatal(err)
	}
	acquire(t, p, b, "100.64.240.3")
	if p.PersistError() == nil {
		t.Fatal("PersistError() = nil after a failed write")
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{leaseFile}) {
		t.Errorf("state dir holds %v after a failed write, want no temp files", got)
	}
	acquire(t, p, b, "100.64.240.3") // still sticky in memory
	if p.PersistError() == nil {
		t.Fatal("PersistError() = nil while the file is still unwritable")
	}

	// Fix it: the next Acquire writes every lease, including b's.
	if err := os.Remove(lf); err != nil {
		t.Fatal(err)
	}
	acquire(t, p, a, "100.64.240.2")
	if err := p.PersistError(); err != nil {
		t.Fatalf("PersistError() = %v after the state dir was fixed", err)
	}
	want := map[string]string{a.String(): "100.64.240.2", b.String(): "100.64.240.3"}
	if got := readLeases(t, dir); !maps.Equal(got, want) {
		t.Errorf("leases.json = %v, want %v", got, want)
	}
	acquire(t, p, c, "100.64.240.4")
	if p2 := open(t, pool24, dir); len(p2.Leases()) != 3 {
		t.Errorf("after reopen: %+v", p2.Leases())
	}
}

func TestPersistFailureStateDirGone(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "state")
	p := open(t, pool24, dir)
	// The state dir is replaced by a regular file: no temp file can be created.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	k := key(t)
	acquire(t, p, k, "100.64.240.2")
	if p.PersistError() == nil {
		t.Fatal("PersistError() = nil")
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	acquire(t, p, key(t), "100.64.240.3")
	if err := p.PersistError(); err != nil {
		t.Fatal(err)
	}
	if got := readLeases(t, dir); len(got) != 2 || got[k.String()] != "100.64.240.2" {
		t.Errorf("leases.json = %v", got)
	}
}

func TestConcurrentAcquire(t *testing.T) {
	dir := t.TempDir()
	p := open(t, pool24, dir)
	const n = 50
	keys := make([]secure.PublicKey, n)
	for i := range keys {
		keys[i] = key(t)
	}
	got := make([]netip.Addr, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a, err := p.Acquire(keys[i], "")
			if err != nil {
				t.Error(err)
			}
			got[i] = a
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, a := range got {
		if seen[a] || !pool24.Contains(a) || a == gw24 || a == pool24.Addr() {
			t.Errorf("bad or duplicate address %s", a)
		}
		seen[a] = true
	}
	if ls := readLeases(t, dir); len(ls) != n {
		t.Errorf("leases.json has %d leases, want %d", len(ls), n)
	}
}

// Retry writes what a failed write left behind once the state dir is
// writable again, without waiting for another lease change.
func TestRetryWritesWhenWritableAgain(t *testing.T) {
	dir := t.TempDir()
	p := open(t, pool24, dir)
	if err := p.Retry(); err != nil {
		t.Fatalf("Retry with nothing pending: %v", err)
	}
	lf := filepath.Join(dir, leaseFile)
	acquire(t, p, key(t), "100.64.240.2")
	if err := os.Remove(lf); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(lf, 0o700); err != nil { // unwritable: the rename fails
		t.Fatal(err)
	}
	k := key(t)
	acquire(t, p, k, "100.64.240.3")
	if err := p.Retry(); err == nil {
		t.Fatal("Retry succeeded while the lease file is unwritable")
	}
	if err := os.Remove(lf); err != nil {
		t.Fatal(err)
	}
	if err := p.Retry(); err != nil {
		t.Fatalf("Retry after the state dir was fixed: %v", err)
	}
	if p.PersistError() != nil {
		t.Fatal("PersistError still set")
	}
	if got := readLeases(t, dir); len(got) != 2 || got[k.String()] != "100.64.240.3" {
		t.Errorf("leases.json = %v", got)
	}
}
