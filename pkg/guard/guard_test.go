package guard

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"
)

// Every test runs in a testing/synctest bubble: the guard reads the
// bubble's clock, which stands still but for the test's time.Sleep, so
// "the same instant" and "100 ms later" are exact.

var (
	a = netip.MustParseAddr("198.51.100.1")
	b = netip.MustParseAddr("198.51.100.2")
)

func TestRatePerSource(t *testing.T) { synctest.Test(t, testRatePerSource) }

func testRatePerSource(t *testing.T) {
	g := New(Limits{Rate: 10, Burst: 5, MaxPendingPerSource: 100})
	for i := range 5 {
		tk, why := g.Admit(a)
		if tk == nil {
			t.Fatalf("attempt %d refused: %s", i, why)
		}
		tk.Release()
	}
	if tk, why := g.Admit(a); tk != nil || why != RateLimited {
		t.Fatalf("6th attempt in the same instant: %v %q, want %q", tk, why, RateLimited)
	}
	// Another source has its own bucket.
	if tk, _ := g.Admit(b); tk == nil {
		t.Fatal("other source refused")
	}
	// 100 ms at 10/s refill one token.
	time.Sleep(100 * time.Millisecond)
	if tk, why := g.Admit(a); tk == nil {
		t.Fatalf("refilled token refused: %s", why)
	}
	if tk, why := g.Admit(a); tk != nil || why != RateLimited {
		t.Fatal("second attempt after one refill admitted")
	}
	// A long pause refills up to the burst, not beyond.
	time.Sleep(time.Hour)
	n := 0
	for {
		tk, _ := g.Admit(a)
		if tk == nil {
			break
		}
		tk.Release()
		n++
	}
	if n != 5 {
		t.Fatalf("%d admitted after a long pause, want the burst of 5", n)
	}
}

func TestPendingCaps(t *testing.T) { synctest.Test(t, testPendingCaps) }

func testPendingCaps(t *testing.T) {
	g := New(Limits{Rate: 1000, Burst: 1000, MaxPending: 5, MaxPendingPerSource: 3})
	var held []*Ticket
	for range 3 {
		tk, why := g.Admit(a)
		if tk == nil {
			t.Fatal(why)
		}
		held = append(held, tk)
	}
	if _, why := g.Admit(a); why != TooManyPendingSource {
		t.Fatalf("4th pending from one source: %q, want %q", why, TooManyPendingSource)
	}
	for range 2 {
		tk, why := g.Admit(b)
		if tk == nil {
			t.Fatal(why)
		}
		held = append(held, tk)
	}
	if _, why := g.Admit(netip.MustParseAddr("192.0.2.9")); why != TooManyPending {
		t.Fatalf("6th pending: %q, want %q", why, TooManyPending)
	}
	if s := g.Stats(); s.Pending != 5 {
		t.Fatalf("pending %d, want 5", s.Pending)
	}
	held[0].Release()
	held[0].Release() // twice is harmless
	if s := g.Stats(); s.Pending != 4 {
		t.Fatalf("pending %d after one release, want 4", s.Pending)
	}
	if tk, why := g.Admit(a); tk == nil {
		t.Fatalf("admit after release: %s", why)
	}
}

func TestSourceTableBounded(t *testing.T) { synctest.Test(t, testSourceTableBounded) }

func testSourceTableBounded(t *testing.T) {
	g := New(Limits{Rate: 1, Burst: 2, MaxSources: 100, MaxPending: 1000, MaxPendingPerSource: 10})
	var held []*Ticket
	for i := range 10000 {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		tk, why := g.Admit(src)
		if tk == nil {
			t.Fatalf("source %d refused: %s", i, why)
		}
		if i < 50 {
			held = append(held, tk) // half the table is busy
		} else {
			tk.Release() // leaves a drained bucket behind: remembered
		}
		if n := g.Stats().Sources; n > 100 {
			t.Fatalf("%d sources remembered, limit 100", n)
		}
	}
	// Busy sources are never forgotten: their per-source cap still holds.
	for _, tk := range held {
		if g.sources[tk.addr] == nil {
			t.Fatalf("busy source %s forgotten", tk.addr)
		}
	}
	// Sources that are idle with a full bucket are dropped on release.
	time.Sleep(time.Hour)
	for _, tk := range held {
		tk.Release()
	}
	if n := g.Stats().Sources; n > 50 {
		t.Fatalf("%d sources remembered after the busy ones finished idle, want <= 50", n)
	}
}

func TestIPv4MappedIsOneSource(t *testing.T) { synctest.Test(t, testIPv4MappedIsOneSource) }

func testIPv4MappedIsOneSource(t *testing.T) {
	g := New(Limits{Rate: 1, Burst: 1})
	tk, _ := g.Admit(a)
	if tk == nil {
		t.Fatal("refused")
	}
	mapped := netip.AddrFrom16(a.As16())
	if tk, why := g.Admit(mapped); tk != nil || why != RateLimited {
		t.Fatal(fmt.Sprintf("mapped form of the same source got a fresh bucket: %v %q", tk, why))
	}
}

// An IPv6 source is its /64: another address of the same /64 shares the
// bucket, another /64 has its own.
func TestIPv6SourceIsSlash64(t *testing.T) { synctest.Test(t, testIPv6SourceIsSlash64) }

func testIPv6SourceIsSlash64(t *testing.T) {
	g := New(Limits{Rate: 1, Burst: 1})
	if tk, _ := g.Admit(netip.MustParseAddr("2001:db8:1:2::1")); tk == nil {
		t.Fatal("first refused")
	}
	if tk, why := g.Admit(netip.MustParseAddr("2001:db8:1:2:ffff::9")); tk != nil || why != RateLimited {
		t.Fatalf("same /64, other address: %v %q, want %q", tk, why, RateLimited)
	}
	if tk, why := g.Admit(netip.MustParseAddr("2001:db8:1:3::1")); tk == nil {
		t.Fatalf("other /64 refused: %s", why)
	}
}

func addr4(i, j int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, byte(i), byte(j)}) }

// The attack the reserve is for: 8 sources each holding as many silent
// connections as they may fill every shared slot; a source a known key
// has completed a handshake from still gets one, a stranger does not get
// the reserve.
func TestKnownSourcesReserve(t *testing.T) { synctest.Test(t, testKnownSourcesReserve) }

func testKnownSourcesReserve(t *testing.T) {
	g := New(Limits{Rate: 1000, Burst: 1000, MaxPending: 256, MaxPendingPerSource: 32, MaxPendingKnown: 2})
	known := netip.MustParseAddr("198.51.100.1")
	tk, _ := g.Admit(known)
	tk.Authenticated()
	tk.Release()
	for i := range 8 {
		for range 40 {
			g.Admit(addr4(i, 1)) // not evictable: the reserve alone must let the known peer in
		}
	}
	if st := g.Stats(); st.Pending != 256 || st.Reserved != 0 || st.KnownSources != 1 {
		t.Fatalf("stats %+v, want the 256 shared slots full", st)
	}
	if _, why := g.Admit(netip.MustParseAddr("192.0.2.7")); why != TooManyPending {
		t.Fatalf("stranger when full: %q, want %q", why, TooManyPending)
	}
	var held []*Ticket
	for range 2 {
		tk, why := g.Admit(known)
		if tk == nil {
			t.Fatalf("known source refused: %s", why)
		}
		held = append(held, tk)
	}
	if _, why := g.Admit(known); why != TooManyPending {
		t.Fatalf("past the reserve: %q, want %q", why, TooManyPending)
	}
	if st := g.Stats(); st.Reserved != 2 || st.Pending != 258 {
		t.Fatalf("stats %+v", st)
	}
	held[0].Release()
	if st := g.Stats(); st.Reserved != 1 {
		t.Fatalf("reserve not given back: %+v", st)
	}
}

// A known source is known for KnownSourceTTL after its last handshake,
// and the table of known sources is bounded.
func TestKnownSourcesExpireAndAreBounded(t *testing.T) {
	synctest.Test(t, testKnownSourcesExpireAndAreBounded)
}

func testKnownSourcesExpireAndAreBounded(t *testing.T) {
	g := New(Limits{Rate: 1000, Burst: 1000, MaxPending: 1, MaxPendingKnown: 1, KnownSourceTTL: time.Hour, MaxKnownSources: 3})
	for i := range 5 {
		tk, why := g.Admit(addr4(0, i))
		if tk == nil {
			t.Fatal(why)
		}
		tk.Authenticated()
		tk.Release()
		time.Sleep(time.Minute)
	}
	if n := g.Stats().KnownSources; n != 3 {
		t.Fatalf("%d known sources, bound 3", n)
	}
	if _, ok := g.known[addr4(0, 0)]; ok {
		t.Fatal("the least recent known source kept past the bound")
	}
	filler, _ := g.Admit(addr4(9, 9)) // the one shared slot
	if tk, why := g.Admit(addr4(0, 4)); tk == nil {
		t.Fatalf("known source refused: %s", why)
	} else {
		tk.Release()
	}
	time.Sleep(2 * time.Hour)
	if _, why := g.Admit(addr4(0, 4)); why != TooManyPending {
		t.Fatalf("expired known source: %q, want %q", why, TooManyPending)
	}
	if n := g.Stats().KnownSources; n != 0 {
		t.Fatalf("%d known sources after the TTL", n)
	}
	filler.Release()
}

// When the shared slots are full, a newcomer from a source holding fewer
// takes the oldest waiting connection of the source holding the most;
// sources that hold as many as the heaviest (give or take one) do not.
func TestEvictionMaxMinFair(t *testing.T) { synctest.Test(t, testEvictionMaxMinFair) }

func testEvictionMaxMinFair(t *testing.T) {
	g := New(Limits{Rate: 1000, Burst: 1000, MaxPending: 256, MaxPendingPerSource: 32})
	closed := map[string]int{}
	evictable := func(src netip.Addr, n int) (*Ticket, string) {
		return g.admit(src, func() { closed[fmt.Sprint(src, "#", n)]++ })
	}
	first := map[netip.Addr]*Ticket{}
	for i := range 8 {
		for n := range 32 {
			tk, why := evictable(addr4(i, 1), n)
			if tk == nil {
				t.Fatalf("source %d conn %d: %s", i, n, why)
			}
			if n == 0 {
				first[addr4(i, 1)] = tk
			}
		}
	}
	newcomer := netip.MustParseAddr("192.0.2.7")
	tk, why := g.Admit(newcomer)
	if tk == nil {
		t.Fatalf("newcomer refused: %s", why)
	}
	if len(closed) != 1 {
		t.Fatalf("evicted %v, want one connection", closed)
	}
	var victim netip.Addr
	for a, f := range first {
		if f.Evicted() {
			victim = a
		}
	}
	if !victim.IsValid() || closed[fmt.Sprint(victim, "#0")] != 1 {
		t.Fatalf("evicted %v, not the oldest of a heaviest source", closed)
	}
	first[victim].Release() // what the closed connection's handler does: nothing more
	if st := g.Stats(); st.Pending != 256 || st.Evicted != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The victim's source now holds 31: one of the sources holding 32
	// cannot take from another holding 32, nor from 31.
	if _, why := evictable(victim, 99); why != TooManyPending {
		t.Fatalf("source holding 31 when full: %q, want %q", why, TooManyPending)
	}
	// A connection whose key is proved is never evicted.
	g2 := New(Limits{Rate: 1000, Burst: 1000, MaxPending: 2, MaxPendingPerSource: 2})
	var ended int
	a1, _ := g2.admit(a, func() { ended++ })
	a2, _ := g2.admit(a, func() { ended++ })
	a1.Authenticated()
	a2.Authenticated()
	if tk, why := g2.Admit(b); tk != nil || why != TooManyPending || ended != 0 {
		t.Fatalf("authenticated connection evicted: %v %q, %d ended", tk, why, ended)
	}
}

// The load index agrees with a scan of every source after any sequence of
// admissions, evictions, authentications and releases.
func TestLoadIndexMatchesScan(t *testing.T) { synctest.Test(t, testLoadIndexMatchesScan) }

func testLoadIndexMatchesScan(t *testing.T) {
	g := New(Limits{Rate: 1e6, Burst: 1e6, MaxPending: 64, MaxPendingPerSource: 8, MaxPendingKnown: 4})
	rng := rand.New(rand.NewPCG(1, 2))
	var live []*Ticket
	for i := range 20000 {
		switch op := rng.IntN(10); {
		case op < 6:
			if tk, _ := g.admit(addr4(0, rng.IntN(40)), func() {}); tk != nil {
				live = append(live, tk)
			}
		case op < 9 && len(live) > 0:
			j := rng.IntN(len(live))
			live[j].Release()
			live = append(live[:j], live[j+1:]...)
		case len(live) > 0:
			live[rng.IntN(len(live))].Authenticated()
		}
		want := 0
		for _, s := range g.sources {
			if len(s.waiting) > 0 {
				want = max(want, s.pending)
			}
		}
		got := 0
		if h := g.load.heaviest(); h != nil {
			got = h.pending
			if len(h.waiting) == 0 {
				t.Fatalf("step %d: heaviest source has nothing waiting", i)
			}
		}
		if got != want {
			t.Fatalf("step %d: index says the heaviest holds %d, a scan says %d", i, got, want)
		}
	}
}

// Admission into a full guard, under a flood from every remembered
// source: what each accepted connection costs before anything else.
func BenchmarkAdmitFull(b *testing.B) {
	g := New(Limits{Rate: 1e9, Burst: 1e9, MaxPending: 4096, MaxPendingPerSource: 32})
	for i := range 4096 {
		g.admit(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), func() {})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tk, _ := g.admit(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8 & 15), byte(i)}), func() {})
		tk.Release()
		i++
	}
}
