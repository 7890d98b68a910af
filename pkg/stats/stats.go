// Package stats has the small counters the daemons report in status.
package stats

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Reasons counts events (drops, refused handshakes) by reason.
type Reasons struct {
	mu sync.Mutex
	m  map[string]uint64
}

// Inc counts one event of reason.
func (c *Reasons) Inc(reason string) { c.Add(reason, 1) }

// Add counts n events of reason.
func (c *Reasons) Add(reason string, n uint64) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]uint64{}
	}
	c.m[reason] += n
	c.mu.Unlock()
}

// Get returns the count of reason.
func (c *Reasons) Get(reason string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[reason]
}

// Snapshot returns a copy of the counts (nil when there are none).
func (c *Reasons) Snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

// Reason is a small enumeration of why an event happened (why a packet was
// dropped): its values run from 0 up, below MaxReasons, and String names
// each as status and metrics show it.
type Reason interface {
	~uint8
	String() string
}

// MaxReasons bounds the values of a Reason.
const MaxReasons = 16

// Counts counts events by a Reason in a fixed array of atomic counters: Inc
// takes no lock and allocates nothing, so the data path counts every
// packet it drops, floods included. The zero value is ready.
type Counts[R Reason] struct {
	n [MaxReasons]atomic.Uint64
}

// Inc counts one event of reason r.
func (c *Counts[R]) Inc(r R) { c.n[r].Add(1) }

// Get returns the count of reason r.
func (c *Counts[R]) Get(r R) uint64 { return c.n[r].Load() }

// Snapshot returns the counts that are not zero, by name (nil when all
// are), as Reasons.Snapshot does.
func (c *Counts[R]) Snapshot() map[string]uint64 {
	var m map[string]uint64
	for i := range c.n {
		if v := c.n[i].Load(); v > 0 {
			if m == nil {
				m = map[string]uint64{}
			}
			m[R(i).String()] += v
		}
	}
	return m
}
