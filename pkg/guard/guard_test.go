package guard

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTest(l Limits) (*Guard, *clock) {
	c := &clock{t: time.Unix(1000, 0)}
	g := New(l)
	g.now = c.now
	return g, c
}

var (
	a = netip.MustParseAddr("198.51.100.1")
	b = netip.MustParseAddr("198.51.100.2")
)

func TestRatePerSource(t *testing.T) {
	g, c := newTest(Limits{Rate: 10, Burst: 5, MaxPendingPerSource: 100})
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
	c.t = c.t.Add(100 * time.Millisecond)
	if tk, why := g.Admit(a); tk == nil {
		t.Fatalf("refilled token refused: %s", why)
	}
	if tk, why := g.Admit(a); tk != nil || why != RateLimited {
		t.Fatal("second attempt after one refill admitted")
	}
	// A long pause refills up to the burst, not beyond.
	c.t = c.t.Add(time.Hour)
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

func TestPendingCaps(t *testing.T) {
	g, _ := newTest(Limits{Rate: 1000, Burst: 1000, MaxPending: 5, MaxPendingPerSource: 3})
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

func TestSourceTableBounded(t *testing.T) {
	g, c := newTest(Limits{Rate: 1, Burst: 2, MaxSources: 100, MaxPending: 1000, MaxPendingPerSource: 10})
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
	c.t = c.t.Add(time.Hour)
	for _, tk := range held {
		tk.Release()
	}
	if n := g.Stats().Sources; n > 50 {
		t.Fatalf("%d sources remembered after the busy ones finished idle, want <= 50", n)
	}
}

func TestIPv4MappedIsOneSource(t *testing.T) {
	g, _ := newTest(Limits{Rate: 1, Burst: 1})
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
func TestIPv6SourceIsSlash64(t *testing.T) {
	g, _ := newTest(Limits{Rate: 1, Burst: 1})
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
