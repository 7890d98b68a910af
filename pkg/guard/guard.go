// Package guard decides which unauthenticated connections gtund lets start a
// handshake. A handshake costs a goroutine, a socket and two Curve25519
// operations before the server knows who is asking, so before any of that:
// each source address has a token bucket of handshakes, and the handshakes
// in progress are capped in total and per source. The table of sources is
// bounded, so a flood from many addresses cannot grow it without limit.
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
)

// Limits are the admission limits. Zero values mean the defaults.
type Limits struct {
	Rate                float64 // handshakes per second each source (IPv4 address, IPv6 /64) may start, refilled continuously
	Burst               int     // handshakes a quiet source may start at once
	MaxPending          int     // handshakes in progress, all sources together
	MaxPendingPerSource int     // handshakes in progress from one source
	MaxSources          int     // sources remembered; beyond it idle ones are forgotten
}

// Defaults: generous for a whole VPC behind one NAT reconnecting at once,
// tight for one host trying thousands of handshakes.
const (
	DefaultRate                = 20
	DefaultBurst               = 64
	DefaultMaxPending          = 256
	DefaultMaxPendingPerSource = 32
	DefaultMaxSources          = 4096
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
	return l
}

// Guard admits handshakes. Safe for concurrent use.
type Guard struct {
	mu      sync.Mutex
	limits  Limits
	sources map[netip.Addr]*source
	pending int
	now     func() time.Time
}

type source struct {
	tokens  float64
	last    time.Time // when tokens was last refilled
	pending int
}

// New returns a guard with limits l.
func New(l Limits) *Guard {
	return &Guard{limits: l.withDefaults(), sources: map[netip.Addr]*source{}, now: time.Now}
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
	g    *Guard
	addr netip.Addr
	done bool
}

// Admit decides whether src may start a handshake. It returns a ticket, or
// the reason for refusing (RateLimited, TooManyPending, TooManyPendingSource).
func (g *Guard) Admit(src netip.Addr) (*Ticket, string) {
	src = sourceOf(src)
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	l := g.limits
	s := g.sources[src]
	if s == nil {
		if len(g.sources) >= l.MaxSources && !g.evictLocked() {
			return nil, TooManyPending // every remembered source has a handshake in progress
		}
		s = &source{tokens: float64(l.Burst), last: now}
		g.sources[src] = s
	}
	s.refill(now, l)
	switch {
	case s.pending >= l.MaxPendingPerSource:
		return nil, TooManyPendingSource
	case g.pending >= l.MaxPending:
		return nil, TooManyPending
	case s.tokens < 1:
		return nil, RateLimited
	}
	s.tokens--
	s.pending++
	g.pending++
	return &Ticket{g: g, addr: src}, ""
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

// evictLocked forgets one source without a handshake in progress (map
// iteration starts at a random entry), preferring nothing in particular: a
// forgotten source only gets a fresh bucket, while the caps on handshakes
// in progress still hold. It reports whether one was found.
func (g *Guard) evictLocked() bool {
	for a, s := range g.sources {
		if s.pending == 0 {
			delete(g.sources, a)
			return true
		}
	}
	return false
}

// Release ends the ticket's handshake; calling it again does nothing.
func (t *Ticket) Release() {
	if t == nil {
		return
	}
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.done {
		return
	}
	t.done = true
	g.pending--
	if s := g.sources[t.addr]; s != nil {
		s.pending--
		// A source back to a full bucket with nothing pending is worth
		// nothing to remember.
		s.refill(g.now(), g.limits)
		if s.pending == 0 && s.tokens >= float64(g.limits.Burst) {
			delete(g.sources, t.addr)
		}
	}
}

// Stats is the guard's state for status.
type Stats struct {
	Pending int `json:"pending"` // handshakes in progress
	Sources int `json:"sources"` // sources remembered (recently active)
}

// Stats snapshots the guard.
func (g *Guard) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return Stats{Pending: g.pending, Sources: len(g.sources)}
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
