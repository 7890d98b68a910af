package lograte

import (
	"sync/atomic"
	"time"
)

// Gate lets one kind of event be logged at most once per interval, without
// a lock or an allocation: the data path asks it before it builds a log
// line for a packet it drops, so that a flood costs an atomic load per
// packet. Unlike a Limiter it keeps no message: the caller builds the line
// when the gate opens and says how many events it held back since the last
// one. The zero value is ready.
type Gate struct {
	next atomic.Int64  // unix nanoseconds before which the gate stays shut
	held atomic.Uint64 // events refused since the last one let through
}

// Allow reports whether an event now may be logged: yes for the first one,
// then at most once per interval. held is how many it refused since the
// last one it let through (the line says so).
func (g *Gate) Allow(interval time.Duration) (held uint64, ok bool) {
	now := time.Now().UnixNano()
	next := g.next.Load()
	if now < next || !g.next.CompareAndSwap(next, now+int64(interval)) {
		g.held.Add(1)
		return 0, false
	}
	return g.held.Swap(0), true
}

// Flush takes the events held back since the last line once an interval
// has passed since it: a periodic flush logs them, so that a flood that
// stops still gets its count into the log.
func (g *Gate) Flush(interval time.Duration) (held uint64, ok bool) {
	if g.held.Load() == 0 {
		return 0, false
	}
	now := time.Now().UnixNano()
	next := g.next.Load()
	if now < next || !g.next.CompareAndSwap(next, now+int64(interval)) {
		return 0, false
	}
	held = g.held.Swap(0)
	return held, held > 0
}
