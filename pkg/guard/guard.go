// Package guard decides which unauthenticated connections gtund lets start a
// handshake. A handshake costs a goroutine, a socket and, once the first
// message passes its cheap checks, Curve25519 work before the server knows
// who is asking, so before any of that: each source address has a token
// bucket of handshakes, and the handshakes in progress are capped in total
// and per source. The table of sources is bounded, so a flood from many
// addresses cannot grow it without limit.
//
// Known peers first: sources from which a known key completed a handshake
// are remembered (bounded, expiring), and a reserve of handshakes in
// progress is theirs alone, so strangers filling every other slot keep no
// known peer out. A newcomer from an unknown source is not shut out either:
// when the slots are full, the oldest connection still waiting to prove a
// key from the source holding the most is closed to make room for a source
// holding fewer (max-min fairness), so a few addresses holding silent
// connections cannot keep out a source they do not outnumber.
package guard

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Refusal reasons, as counted in gtund's handshake failures.
const (
	RateLimited          = "rate_limited"
	TooManyPending       = "too_many_pending"
	TooManyPendingSource = "too_many_pending_source"
	// Evicted is a connection closed to make room for a source holding
	// fewer handshakes in progress.
	Evicted = "evicted"
)

// Limits are the admission limits. Zero values mean the defaults.
type Limits struct {
	Rate                float64       // handshakes per second each source (IPv4 address, IPv6 /64) may start, refilled continuously
	Burst               int           // handshakes a quiet source may start at once
	MaxPending          int           // handshakes in progress, all sources together
	MaxPendingPerSource int           // handshakes in progress from one source
	MaxSources          int           // sources remembered; beyond it idle ones are forgotten
	MaxPendingKnown     int           // handshakes in progress set aside for known sources, beyond MaxPending
	KnownSourceTTL      time.Duration // how long a source stays known after a known key's last handshake from it
	MaxKnownSources     int           // known sources remembered; beyond it the least recent is forgotten
}

// Defaults: generous for a whole VPC behind one NAT reconnecting at once,
// tight for one host trying thousands of handshakes.
const (
	DefaultRate                = 20
	DefaultBurst               = 64
	DefaultMaxPending          = 256
	DefaultMaxPendingPerSource = 32
	DefaultMaxSources          = 4096
	DefaultMaxPendingKnown     = 64
	DefaultKnownSourceTTL      = 7 * 24 * time.Hour
	DefaultMaxKnownSources     = 4096
)

func (l Limits) withDefaults() Limits {
	if l.Rate <= 0 {
		l.Rate = DefaultRate
	}
	if l.Burst <= 0 {
		l.Burst = DefaultBurst
	}
	if l.MaxPending <= 0 {
		l.MaxPending = DefaultMaxPending
	}
	if l.MaxPendingPerSource <= 0 {
		l.MaxPendingPerSource = DefaultMaxPendingPerSource
	}
	if l.MaxSources <= 0 {
		l.MaxSources = DefaultMaxSources
	}
	if l.MaxPendingKnown <= 0 {
		l.MaxPendingKnown = DefaultMaxPendingKnown
	}
	if l.KnownSourceTTL <= 0 {
		l.KnownSourceTTL = DefaultKnownSourceTTL
	}
	if l.MaxKnownSources <= 0 {
		l.MaxKnownSources = DefaultMaxKnownSources
	}
	return l
}

// Guard admits handshakes. Safe for concurrent use.
type Guard struct {
	mu       sync.Mutex
	limits   Limits
	sources  map[netip.Addr]*source
	known    map[netip.Addr]time.Time // known sources: when a known key last completed a handshake from each
	pending  int                      // handshakes in progress in the shared slots (MaxPending)
	reserved int                      // handshakes in progress in the known sources' reserve (MaxPendingKnown)
	evicted  uint64
	load     loadIndex // sources with waiting tickets by pending count, for eviction
}

type source struct {
	tokens  float64
	last    time.Time // when tokens was last refilled
	pending int
	waiting []*Ticket // its evictable tickets (shared slots, no key proved yet), oldest first
	level   int       // where load files it: its pending count while it has waiting tickets, else -1
	slot    int
}

// New returns a guard with limits l.
func New(l Limits) *Guard {
	return &Guard{limits: l.withDefaults(), sources: map[netip.Addr]*source{}, known: map[netip.Addr]time.Time{}}
}

// SetLimits changes the limits (a reload); handshakes in progress stay.
func (g *Guard) SetLimits(l Limits) {
	g.mu.Lock()
	g.limits = l.withDefaults()
	g.mu.Unlock()
}

// Ticket is an admitted handshake; Release it when the connection is
// authenticated or closed.
type Ticket struct {
	g       *Guard
	addr    netip.Addr
	reserve bool   // holds a slot of the known sources' reserve
	evict   func() // ends the connection; nil: never evicted
	evicted bool
	done    bool
}

// Admit decides whether src may start a handshake. It returns a ticket, or
// the reason for refusing (RateLimited, TooManyPending, TooManyPendingSource).
func (g *Guard) Admit(src netip.Addr) (*Ticket, string) { return g.admit(src, nil) }

// AdmitConn is Admit for a connection that the guard may close (before
// its key is proved) to make room for a source holding fewer handshakes.
func (g *Guard) AdmitConn(c net.Conn) (*Ticket, string) {
	return g.admit(SourceOf(c), func() { c.Close() })
}

func (g *Guard) admit(src netip.Addr, evict func()) (*Ticket, string) {
	src = sourceOf(src)
	now := time.Now()
	var victim *Ticket
	defer func() {
		if victim != nil {
			victim.evict() // outside the lock: Close may take time
		}
	}()
	g.mu.Lock()
	defer g.mu.Unlock()
	l := g.limits
	s := g.sources[src]
	if s == nil {
		if len(g.sources) >= l.MaxSources && !g.forgetIdleLocked() {
			return nil, TooManyPending // every remembered source has a handshake in progress
		}
		s = &source{tokens: float64(l.Burst), last: now, level: -1}
		g.sources[src] = s
	}
	s.refill(now, l)
	if s.pending >= l.MaxPendingPerSource {
		return nil, TooManyPendingSource
	}
	if s.tokens < 1 {
		return nil, RateLimited
	}
	var reserve bool
	switch {
	case g.reserved < l.MaxPendingKnown && g.isKnownLocked(src, now):
		reserve = true
		g.reserved++
	case g.pending < l.MaxPending:
		g.pending++
	default:
		if victim = g.victimLocked(s); victim == nil {
			return nil, TooManyPending
		}
		g.dropLocked(victim)
		victim.evicted = true
		g.evicted++
		g.pending++
	}
	t := &Ticket{g: g, addr: src, reserve: reserve}
	s.tokens--
	s.pending++
	if !reserve && evict != nil {
		t.evict = evict
		s.waiting = append(s.waiting, t)
	}
	g.load.update(s)
	return t, ""
}

// victimLocked picks the ticket to evict for a newcomer from s: the
// oldest waiting one of the source holding the most handshakes, if that
// source holds at least two more than s (so that taking one from it does
// not just move the imbalance).
func (g *Guard) victimLocked(s *source) *Ticket {
	heaviest := g.load.heaviest()
	if heaviest == nil || heaviest.pending < s.pending+2 {
		return nil
	}
	return heaviest.waiting[0]
}

func (g *Guard) isKnownLocked(src netip.Addr, now time.Time) bool {
	at, ok := g.known[src]
	if ok && now.Sub(at) > g.limits.KnownSourceTTL {
		delete(g.known, src)
		return false
	}
	return ok
}

// sourceOf is the unit limits apply to: an IPv4 address, or an IPv6 /64,
// which one host or subscriber usually has whole (per address, the limits
// would mean nothing to an attacker with 2^64 of them).
func sourceOf(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func (s *source) refill(now time.Time, l Limits) {
	if d := now.Sub(s.last); d > 0 {
		s.tokens = min(float64(l.Burst), s.tokens+d.Seconds()*l.Rate)
		s.last = now
	}
}

// forgetIdleLocked forgets one source without a handshake in progress (map
// iteration starts at a random entry), preferring nothing in particular: a
// forgotten source only gets a fresh bucket, while the caps on handshakes
// in progress still hold. It reports whether one was found.
func (g *Guard) forgetIdleLocked() bool {
	for a, s := range g.sources {
		if s.pending == 0 {
			delete(g.sources, a)
			return true
		}
	}
	return false
}

// Authenticated marks the ticket's handshake as having proved a known
// key: its source becomes known (it may use the reserve from now on) and
// the connection is no longer evicted.
func (t *Ticket) Authenticated() {
	if t == nil {
		return
	}
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := g.sources[t.addr]; s != nil && !t.done {
		s.unwait(t)
		g.load.update(s)
	}
	now := time.Now()
	if _, ok := g.known[t.addr]; !ok && len(g.known) >= g.limits.MaxKnownSources {
		g.forgetLeastRecentKnownLocked()
	}
	g.known[t.addr] = now
}

func (g *Guard) forgetLeastRecentKnownLocked() {
	var oldest netip.Addr
	var at time.Time
	for a, t := range g.known {
		if !oldest.IsValid() || t.Before(at) {
			oldest, at = a, t
		}
	}
	delete(g.known, oldest)
}

// Evicted reports whether the guard closed the ticket's connection to make
// room for another source.
func (t *Ticket) Evicted() bool {
	if t == nil {
		return false
	}
	t.g.mu.Lock()
	defer t.g.mu.Unlock()
	return t.evicted
}

func (s *source) unwait(t *Ticket) {
	for i, w := range s.waiting {
		if w == t {
			s.waiting = append(s.waiting[:i], s.waiting[i+1:]...)
			return
		}
	}
}

// Release ends the ticket's handshake; calling it again does nothing.
func (t *Ticket) Release() {
	if t == nil {
		return
	}
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dropLocked(t)
}

// dropLocked ends t's handshake in the counts, once.
func (g *Guard) dropLocked(t *Ticket) {
	if t.done {
		return
	}
	t.done = true
	if t.reserve {
		g.reserved--
	} else {
		g.pending--
	}
	if s := g.sources[t.addr]; s != nil {
		s.pending--
		s.unwait(t)
		g.load.update(s)
		// A source back to a full bucket with nothing pending is worth
		// nothing to remember.
		s.refill(time.Now(), g.limits)
		if s.pending == 0 && s.tokens >= float64(g.limits.Burst) {
			delete(g.sources, t.addr)
		}
	}
}

// Stats is the guard's state for status.
type Stats struct {
	Pending      int    `json:"pending"`       // handshakes in progress, reserve included
	Reserved     int    `json:"reserved"`      // of which in the known sources' reserve
	Sources      int    `json:"sources"`       // sources remembered (recently active)
	KnownSources int    `json:"known_sources"` // sources a known key completed a handshake from, within known_source_ttl
	Evicted      uint64 `json:"evicted"`       // waiting connections closed to make room for a source holding fewer
}

// Stats snapshots the guard.
func (g *Guard) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	for a := range g.known {
		g.isKnownLocked(a, now) // forgets the expired
	}
	return Stats{Pending: g.pending + g.reserved, Reserved: g.reserved, Sources: len(g.sources), KnownSources: len(g.known), Evicted: g.evicted}
}

// SourceOf is the address a connection comes from (TCP or UDP); the zero
// Addr when it has none (tests' pipes), which the guard treats as one source.
func SourceOf(c net.Conn) netip.Addr {
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
