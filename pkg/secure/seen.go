package secure

import (
	"sync"
	"time"
)

// The replay filter remembers the mac1 of every first message that passed
// mac1, in two generations of at most seenMax entries each: a message is
// remembered for one to two seenWindows (less when a flood of fresh
// messages fills a generation early). Its memory is capped: 2.2 MB of heap
// measured with both generations full. A replayed message costs no DH
// while it is remembered; once forgotten it costs one, which the timestamp
// check (Authorize) refuses, and is remembered again.
const (
	seenWindow = 2 * time.Minute
	seenMax    = 1 << 15
)

// seenFilter is a set of recent mac1 values. It is bounded: when the
// current generation fills before its window ends, it rotates early and
// reports load. An attacker who fills it must send that many fresh
// messages with a valid mac1, each of which costs a DH of its own, so the
// DH that replays of forgotten messages cost stay below what the flood
// itself costs.
type seenFilter struct {
	mu        sync.Mutex
	cur, prev map[[MAC1Size]byte]struct{}
	rotated   time.Time // when cur started
	fullAt    time.Time // when cur last filled before its window ended
	window    time.Duration
	max       int
	now       func() time.Time
}

func newSeenFilter(window time.Duration, max int, now func() time.Time) *seenFilter {
	return &seenFilter{cur: map[[MAC1Size]byte]struct{}{}, prev: map[[MAC1Size]byte]struct{}{},
		rotated: now(), window: window, max: max, now: now}
}

// check reports whether m was seen recently, and remembers it either way:
// a message replayed at least once a window is never forgotten.
func (f *seenFilter) check(m [MAC1Size]byte) bool {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.rotated) >= f.window {
		f.rotateLocked(now)
	}
	if _, ok := f.cur[m]; ok {
		return true
	}
	_, seen := f.prev[m]
	if len(f.cur) >= f.max {
		f.fullAt = now
		f.rotateLocked(now)
	}
	f.cur[m] = struct{}{}
	return seen
}

// rotateLocked makes cur the previous generation and starts an empty one,
// reusing the older map's memory.
func (f *seenFilter) rotateLocked(now time.Time) {
	f.prev, f.cur = f.cur, f.prev
	clear(f.cur)
	f.rotated = now
}

func (f *seenFilter) underLoad() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.fullAt.IsZero() && f.now().Sub(f.fullAt) < f.window
}
