package stats

import (
	"sync"
	"testing"
)

type reason uint8

const (
	red reason = iota
	green
	blue
)

func (r reason) String() string { return [...]string{"red", "green", "blue"}[r] }

func TestCounts(t *testing.T) {
	var c Counts[reason]
	if c.Snapshot() != nil {
		t.Fatal("a snapshot of no events is not nil")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				c.Inc(red)
				c.Inc(blue)
				c.Inc(blue)
			}
		})
	}
	wg.Wait()
	s := c.Snapshot()
	if len(s) != 2 || s["red"] != 4000 || s["blue"] != 8000 || c.Get(green) != 0 || c.Get(blue) != 8000 {
		t.Fatalf("snapshot %v", s)
	}
	if n := testing.AllocsPerRun(1000, func() { c.Inc(green) }); n != 0 {
		t.Errorf("%v allocations per event", n)
	}
}
