package dgram

import (
	"math/rand/v2"
	"testing"
)

// accepts runs check and, when it passes, accept: what the opener does for
// a datagram whose tag opens.
func (w *replayWindow) accepts(c uint64) bool {
	if !w.check(c) {
		return false
	}
	w.accept(c)
	return true
}

func TestReplayWindowInOrderDuplicatesAndReorder(t *testing.T) {
	var w replayWindow
	for c := range uint64(1000) {
		if !w.accepts(c) {
			t.Fatalf("counter %d refused in order", c)
		}
		if w.accepts(c) {
			t.Fatalf("counter %d accepted twice", c)
		}
	}
	// Reordered within the window: a gap filled later opens, once.
	if !w.accepts(1010) || !w.accepts(1005) || !w.accepts(1001) {
		t.Fatal("reordered counters within the window refused")
	}
	if w.accepts(1005) || w.accepts(1010) {
		t.Fatal("reordered counter accepted twice")
	}
	for _, c := range []uint64{1000, 1002, 1009} {
		if !w.accepts(c) {
			t.Fatalf("gap %d refused", c)
		}
	}
}

func TestReplayWindowEdges(t *testing.T) {
	var w replayWindow
	if !w.accepts(0) {
		t.Fatal("counter 0 refused first")
	}
	if w.accepts(0) {
		t.Fatal("counter 0 accepted twice")
	}
	top := uint64(100000)
	if !w.accepts(top) {
		t.Fatal("jump forward refused")
	}
	// The oldest counter still inside, and the first one behind it.
	if !w.accepts(top - windowSize + 1) {
		t.Errorf("counter %d (window-1 behind) refused", top-windowSize+1)
	}
	if w.accepts(top - windowSize) {
		t.Errorf("counter %d (a whole window behind) accepted", top-windowSize)
	}
	// A jump of more than the ring clears it entirely: old bits do not
	// refuse new counters that land on the same ring slots.
	far := top + 10*ringBlocks*blockBits
	if !w.accepts(far) {
		t.Fatal("far jump refused")
	}
	for c := far - 200; c < far; c++ {
		if !w.accepts(c) {
			t.Fatalf("counter %d after a far jump refused (stale bits)", c)
		}
	}
}

// check never records: a counter that fails to open (forged) can be sent
// again by the real peer.
func TestReplayWindowCheckDoesNotRecord(t *testing.T) {
	var w replayWindow
	w.accepts(10)
	for range 3 {
		if !w.check(500) || !w.check(5) {
			t.Fatal("check refused an unseen counter")
		}
	}
	if w.highest != 10 {
		t.Fatalf("check moved the window to %d", w.highest)
	}
}

// Against a map of everything accepted: any order, any duplicates.
func TestReplayWindowRandomAgainstModel(t *testing.T) {
	var w replayWindow
	seen := map[uint64]bool{}
	var highest uint64
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200000 {
		base := uint64(i * 3)
		c := base + uint64(r.IntN(2*windowSize)) - min(base, uint64(r.IntN(windowSize+500)))
		want := !seen[c] && (len(seen) == 0 || c > highest || highest-c < windowSize)
		if got := w.accepts(c); got != want {
			t.Fatalf("step %d counter %d (highest %d): accepted=%v, model says %v", i, c, highest, got, want)
		}
		if want {
			seen[c] = true
			highest = max(highest, c)
		}
	}
}

func BenchmarkReplayWindow(b *testing.B) {
	var w replayWindow
	b.ReportAllocs()
	for i := range b.N {
		w.accepts(uint64(i) ^ 3)
	}
}
