package reconcile

import (
	"slices"
	"sync"
	"time"

	"github.com/gtun/gtun/pkg/nlwatch"
	"github.com/gtun/gtun/pkg/stats"
)

// Book counts one daemon's repairs and fights by kind, for status and
// metrics: every Loop of the daemon counts in the same Book, so there is
// one way of counting heals. The zero value is ready to use.
type Book struct {
	heals  stats.Reasons
	fights stats.Reasons

	mu       sync.Mutex
	lastTook map[string]time.Duration
	fighting map[string]bool
}

func (b *Book) healed(kind string, n int, took time.Duration) {
	b.heals.Add(kind, uint64(n))
	b.mu.Lock()
	if b.lastTook == nil {
		b.lastTook = map[string]time.Duration{}
	}
	b.lastTook[kind] = took
	b.mu.Unlock()
}

func (b *Book) fightBegan(kind string) {
	b.fights.Inc(kind)
	b.mu.Lock()
	if b.fighting == nil {
		b.fighting = map[string]bool{}
	}
	b.fighting[kind] = true
	b.mu.Unlock()
}

func (b *Book) fightEnded(kind string) {
	b.mu.Lock()
	delete(b.fighting, kind)
	b.mu.Unlock()
}

// Heal returns how many repairs of kind were made and what the last took.
func (b *Book) Heal(kind string) (n uint64, last time.Duration) {
	b.mu.Lock()
	last = b.lastTook[kind]
	b.mu.Unlock()
	return b.heals.Get(kind), last
}

// Heals returns the repairs by kind (nil when there were none).
func (b *Book) Heals() map[string]uint64 { return b.heals.Snapshot() }

// Fights returns the fights by kind (nil when there were none): times
// something kept undoing a part until its repairs hit their bound.
func (b *Book) Fights() map[string]uint64 { return b.fights.Snapshot() }

// Fighting returns the kinds in a fight now, sorted.
func (b *Book) Fighting() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for k := range b.fighting {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Shared is what the self-healing parts of one daemon share: its netlink
// subscriptions (one socket per kind of event, whatever the number of
// parts) and its Book. A part given zero fields makes its own.
type Shared struct {
	Events *nlwatch.Hub
	Book   *Book
}
