// Package stats has the small counters the daemons report in status.
package stats

import (
	"maps"
	"sync"
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
