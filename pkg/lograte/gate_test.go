package lograte

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The gate opens for the first event, then once per interval, and says
// how many events it held back; Flush hands over a count held back once
// the interval has passed, and nothing twice.
func TestGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Gate
		const interval = 10 * time.Second
		if held, ok := g.Allow(interval); !ok || held != 0 {
			t.Fatalf("first event: %d, %v", held, ok)
		}
		for range 99 {
			if _, ok := g.Allow(interval); ok {
				t.Fatal("a second event within the interval let through")
			}
		}
		if _, ok := g.Flush(interval); ok {
			t.Fatal("Flush within the interval")
		}
		time.Sleep(interval - time.Nanosecond)
		if _, ok := g.Allow(interval); ok {
			t.Fatal("let through a nanosecond before the interval ended")
		}
		time.Sleep(time.Nanosecond)
		if held, ok := g.Allow(interval); !ok || held != 100 {
			t.Fatalf("after the interval: held %d, %v; want 100 held (99 and the one at its edge)", held, ok)
		}
		g.Allow(interval)
		g.Allow(interval)
		time.Sleep(interval)
		if held, ok := g.Flush(interval); !ok || held != 2 {
			t.Fatalf("Flush after a stopped flood: %d, %v; want 2", held, ok)
		}
		if _, ok := g.Flush(interval); ok {
			t.Fatal("Flush handed the same events over twice")
		}
		time.Sleep(interval)
		if _, ok := g.Flush(interval); ok {
			t.Fatal("Flush with nothing held")
		}
		if held, ok := g.Allow(interval); !ok || held != 0 {
			t.Fatalf("after a quiet interval: %d, %v", held, ok)
		}
	})
}

// Of many goroutines dropping at once, exactly one logs per interval, and
// no event is lost from the counts.
func TestGateConcurrent(t *testing.T) {
	var g Gate
	var mu sync.Mutex
	allowed, held := 0, uint64(0)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10000 {
				if h, ok := g.Allow(time.Hour); ok {
					mu.Lock()
					allowed++
					held += h
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed != 1 || held != 0 {
		t.Fatalf("%d let through within an hour (held %d), want 1", allowed, held)
	}
	if g.held.Load() != 80000-1 {
		t.Fatalf("%d held, want %d", g.held.Load(), 80000-1)
	}
}

func TestGateAllocs(t *testing.T) {
	var g Gate
	if n := testing.AllocsPerRun(1000, func() { g.Allow(time.Hour) }); n != 0 {
		t.Errorf("%v allocations per event", n)
	}
}
