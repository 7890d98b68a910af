// Package ipam hands out tunnel addresses from the server's pool. A client's
// address is sticky: the lease is keyed by its public key and persisted, so
// it gets the same address after a reconnect or a gtund restart, and its
// routes, firewall rules and conntrack entries stay valid.
package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/gtun/gtun/pkg/atomicfile"
	"github.com/gtun/gtun/pkg/secure"
)

// ErrExhausted means every address of the pool is taken.
var ErrExhausted = errors.New("address pool exhausted")

const leaseFile = "leases.json"

// Claimer reserves addresses in a store shared with other gtunds (the
// replicas of one gateway), so that two of them never give one address to
// two keys and a key gets the same address from each.
type Claimer interface {
	// Claim gives a to key unless a is taken or key already holds an
	// address. It returns the address key holds now (a, or its earlier
	// one); a *TakenError when a is another key's.
	Claim(key secure.PublicKey, name string, a netip.Addr) (netip.Addr, error)
}

// TakenError is a Claim of an address another key holds.
type TakenError struct{ Owner Lease }

func (e *TakenError) Error() string {
	return fmt.Sprintf("address %s is leased to %s", e.Owner.Address, e.Owner.Name)
}

// Lease is one persisted assignment.
type Lease struct {
	PublicKey string    `json:"public_key"`
	Name      string    `json:"name"`
	Address   string    `json:"address"`
	Updated   time.Time `json:"updated"`
}

// Pool assigns addresses; safe for concurrent use.
type Pool struct {
	mu     sync.Mutex
	prefix netip.Prefix
	server netip.Addr
	dir    string
	log    *slog.Logger

	fixed  map[secure.PublicKey]netip.Addr // from [[peer]] address
	leases map[secure.PublicKey]Lease
	taken  map[netip.Addr]secure.PublicKey
	dirty  bool // leases changed but could not be written yet

	// claimer, when set, owns the leases (shared by replicas): new ones
	// are claimed there first, and the file in dir is a cache of them.
	claimer Claimer
	pending map[netip.Addr]bool // claims in flight
	start   uint32              // where this replica starts looking for a free address: replicas spread their claims
	kick    chan struct{}       // the cache file is behind (RunCacheWriter writes it)
	lastErr error

	// Group commit: changes are numbered; one caller at a time writes the
	// file with every change so far, the others wait for it.
	cond    *sync.Cond
	gen     uint64 // changes made
	written uint64 // changes on disk
	failed  uint64 // changes whose write failed
	writing bool
}

// Open loads the leases in dir (creating dir if needed). Leases that fall
// outside the pool, belong to keys no longer allowed, or collide with a fixed
// address are dropped.
func Open(prefix netip.Prefix, server netip.Addr, dir string, log *slog.Logger) (*Pool, error) {
	p := &Pool{prefix: prefix, server: server, dir: dir, log: log,
		fixed: map[secure.PublicKey]netip.Addr{}, leases: map[secure.PublicKey]Lease{}, taken: map[netip.Addr]secure.PublicKey{}}
	p.cond = sync.NewCond(&p.mu)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state_dir: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, leaseFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	if len(b) > 0 {
		var ls []Lease
		if err := json.Unmarshal(b, &ls); err != nil {
			// A corrupt file must not stop the server: start fresh, keep the evidence.
			bad := filepath.Join(dir, leaseFile+".corrupt")
			_ = os.Rename(filepath.Join(dir, leaseFile), bad)
			log.Error("lease file is corrupt; starting with no leases", "moved_to", bad, "err", err)
			ls = nil // a partial decode must not half-load leases
		}
		for _, l := range ls {
			k, err1 := secure.ParsePublicKey(l.PublicKey)
			a, err2 := netip.ParseAddr(l.Address)
			if err1 != nil || err2 != nil || !p.usable(a) || p.taken[a] != (secure.PublicKey{}) {
				log.Warn("dropping invalid lease", "name", l.Name, "address", l.Address)
				continue
			}
			p.leases[k] = l
			p.taken[a] = k
		}
	}
	return p, nil
}

// ReadLeases returns the leases persisted in dir (none when there is no
// file), for tools that look at a gtund's state without running it.
func ReadLeases(dir string) ([]Lease, error) {
	b, err := os.ReadFile(filepath.Join(dir, leaseFile))
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(b) == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	var ls []Lease
	if err := json.Unmarshal(b, &ls); err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Join(dir, leaseFile), err)
	}
	return ls, nil
}

func (p *Pool) usable(a netip.Addr) bool {
	return p.prefix.Contains(a) && a != p.prefix.Addr() && a != p.server && a != Broadcast(p.prefix)
}

// SetClaimer makes the pool's leases those of a shared store: Acquire
// claims a new key's address there before using it, leases of keys this
// gtund does not know stay (another replica may know them), and Replace
// and Apply bring in the store's state. The lease file becomes a cache of
// it, written by RunCacheWriter. Replicas pass different spread values
// (a hash of their name): each starts looking for free addresses at its
// own place in the pool, so that replicas allocating at once seldom race
// for the same address. Call before the first Acquire.
func (p *Pool) SetClaimer(c Claimer, spread uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.claimer = c
	p.pending = map[netip.Addr]bool{}
	p.start = spread % (uint32(1) << (32 - p.prefix.Bits()))
	p.kick = make(chan struct{}, 1)
}

// RunCacheWriter writes the lease cache when it is behind, at most every
// 200 ms (a lease file holds every lease: written per claim, thousands of
// clients connecting at once would rewrite it thousands of times), and
// once more when ctx ends. The store, not this file, is what keeps a key's
// address; the file serves a restart while the store is away.
func (p *Pool) RunCacheWriter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			if p.dirty {
				p.persistLocked()
			}
			p.mu.Unlock()
			return
		case <-p.kick:
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		p.mu.Lock()
		if p.dirty {
			p.persistLocked()
		}
		p.mu.Unlock()
	}
}

// saveLocked makes a change of the leases durable: written now (file
// store), or soon by RunCacheWriter (shared store).
func (p *Pool) saveLocked() {
	p.dirty = true
	if p.claimer == nil {
		p.persistLocked()
		return
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Apply brings in leases the store changed (put) and released (the public
// keys in released), as its watch reports them.
func (p *Pool) Apply(put []Lease, released []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	for _, ks := range released {
		k, err := secure.ParsePublicKey(ks)
		if err != nil {
			continue
		}
		if l, ok := p.leases[k]; ok {
			a, _ := netip.ParseAddr(l.Address)
			delete(p.leases, k)
			if p.taken[a] == k {
				delete(p.taken, a)
			}
			changed = true
		}
	}
	for _, l := range put {
		k, err1 := secure.ParsePublicKey(l.PublicKey)
		a, err2 := netip.ParseAddr(l.Address)
		if err1 != nil || err2 != nil || !p.usable(a) {
			p.log.Warn("ignoring a lease of the store that does not fit this pool", "name", l.Name, "address", l.Address, "pool", p.prefix)
			continue
		}
		if old, ok := p.leases[k]; ok {
			if old == l {
				continue
			}
			if oa, _ := netip.ParseAddr(old.Address); p.taken[oa] == k {
				delete(p.taken, oa)
			}
		}
		p.leases[k] = l
		p.taken[a] = k
		changed = true
	}
	if changed {
		p.saveLocked()
	}
}

// Replace sets the leases to those of the shared store (all of them, as of
// one revision) and writes them to the cache file.
func (p *Pool) Replace(ls []Lease) {
	p.mu.Lock()
	defer p.mu.Unlock()
	leases := make(map[secure.PublicKey]Lease, len(ls))
	taken := make(map[netip.Addr]secure.PublicKey, len(ls))
	for _, l := range ls {
		k, err1 := secure.ParsePublicKey(l.PublicKey)
		a, err2 := netip.ParseAddr(l.Address)
		if err1 != nil || err2 != nil || !p.usable(a) {
			p.log.Warn("ignoring a lease of the store that does not fit this pool", "name", l.Name, "address", l.Address, "pool", p.prefix)
			continue
		}
		leases[k] = l
		taken[a] = k
	}
	if maps.Equal(leases, p.leases) {
		return
	}
	p.leases, p.taken = leases, taken
	p.saveLocked()
}

// SetPeers tells the pool which keys may hold addresses and which have fixed
// ones. Leases of keys that are gone, or that sit on a now-fixed address,
// are released.
func (p *Pool) SetPeers(fixed map[secure.PublicKey]netip.Addr, allowed map[secure.PublicKey]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fixed = fixed
	fixedAddrs := map[netip.Addr]bool{}
	for _, a := range fixed {
		fixedAddrs[a] = true
	}
	for k, l := range p.leases {
		a, _ := netip.ParseAddr(l.Address)
		if p.claimer != nil {
			// The store's leases are the store's to release (gtund peer
			// remove): another replica may serve keys this one does not.
			if fixedAddrs[a] && fixed[k] != a {
				p.log.Warn("a fixed address of this gtund's config is leased in the store to another key; give fixed addresses with gtund peer add --address", "address", a, "leased_to", l.Name)
			}
			continue
		}
		if !allowed[k] || fixedAddrs[a] {
			delete(p.leases, k)
			delete(p.taken, a)
			p.dirty = true
		}
	}
	if p.dirty {
		p.persistLocked()
	}
}

// Acquire returns the address of key: its fixed address, its existing
// lease, or the lowest free address, which is then persisted. A failure to
// persist is logged and retried on the next change; the address stands.
func (p *Pool) Acquire(key secure.PublicKey, name string) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.fixed[key]; ok {
		return a, nil
	}
	if l, ok := p.leases[key]; ok {
		a, _ := netip.ParseAddr(l.Address)
		if p.dirty && p.claimer == nil {
			p.persistLocked()
		}
		return a, nil
	}
	if p.claimer != nil {
		return p.claimLocked(key, name)
	}
	a, ok := p.freeLocked()
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: %s has no free address", ErrExhausted, p.prefix)
	}
	p.leases[key] = Lease{PublicKey: key.String(), Name: name, Address: a.String(), Updated: time.Now().UTC()}
	p.taken[a] = key
	p.dirty = true
	p.persistLocked()
	return a, nil
}

// freeLocked is the lowest address nobody holds, has fixed or is claiming.
func (p *Pool) freeLocked() (netip.Addr, bool) {
	fixedAddrs := map[netip.Addr]bool{}
	for _, a := range p.fixed {
		fixedAddrs[a] = true
	}
	base := p.prefix.Addr().As4()
	b := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	size := uint32(1) << (32 - p.prefix.Bits())
	for i := range size {
		v := b + (p.start+i)%size
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if !p.usable(a) || fixedAddrs[a] || p.pending[a] {
			continue
		}
		if _, taken := p.taken[a]; taken {
			continue
		}
		return a, true
	}
	return netip.Addr{}, false
}

// claimLocked gets key an address from the shared store: the lowest free
// one as far as this replica knows, claimed there (the store refuses it if
// another replica was faster, and then this one learns the owner and
// tries the next). p.mu is released while the store answers, so that
// other keys' claims (and known keys) do not wait for it.
func (p *Pool) claimLocked(key secure.PublicKey, name string) (netip.Addr, error) {
	for {
		a, ok := p.freeLocked()
		if !ok {
			return netip.Addr{}, fmt.Errorf("%w: %s has no free address", ErrExhausted, p.prefix)
		}
		p.pending[a] = true
		p.mu.Unlock()
		got, err := p.claimer.Claim(key, name, a)
		p.mu.Lock()
		delete(p.pending, a)
		var taken *TakenError
		switch {
		case errors.As(err, &taken):
			if k, err := secure.ParsePublicKey(taken.Owner.PublicKey); err == nil {
				p.leases[k] = taken.Owner
				p.taken[a] = k
				p.saveLocked()
			}
			continue
		case err != nil:
			return netip.Addr{}, fmt.Errorf("claim an address for a new key: %w", err)
		case !p.usable(got):
			return netip.Addr{}, fmt.Errorf("the store leases %s to this key, outside pool %s", got, p.prefix)
		}
		if l, ok := p.leases[key]; ok { // meanwhile from the store's watch
			if old, _ := netip.ParseAddr(l.Address); old != got {
				delete(p.taken, old)
			}
		}
		p.leases[key] = Lease{PublicKey: key.String(), Name: name, Address: got.String(), Updated: time.Now().UTC()}
		p.taken[got] = key
		p.saveLocked()
		return got, nil
	}
}

// Leases returns the current leases, sorted by address.
func (p *Pool) Leases() []Lease {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Lease, 0, len(p.leases))
	for _, l := range p.leases {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := netip.ParseAddr(out[i].Address)
		b, _ := netip.ParseAddr(out[j].Address)
		return a.Less(b)
	})
	return out
}

// PersistError is the last failure to write the lease file, nil when the
// file is current.
func (p *Pool) PersistError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// Retry writes the leases again when the last write failed (say state_dir
// was read-only for a while). The owner calls it periodically, so that the
// leases reach the disk once it is writable again rather than with the
// next lease change, which may never come.
func (p *Pool) Retry() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastErr == nil && !p.dirty {
		return nil
	}
	p.persistLocked()
	return p.lastErr
}

// persistLocked returns once the leases as they are now are on disk (or
// writing them failed: logged, kept dirty, retried with the next change).
// Callers changing leases at the same time share one write: whoever finds
// no write in progress writes everything pending while the others wait, so
// a thousand clients connecting at once cost a few dozen writes, not a
// thousand (each of which re-encodes every lease and fsyncs).
func (p *Pool) persistLocked() {
	p.gen++
	mine := p.gen
	for p.written < mine && p.failed < mine {
		if p.writing {
			p.cond.Wait()
			continue
		}
		p.writing = true
		gen := p.gen
		ls := make([]Lease, 0, len(p.leases))
		for _, l := range p.leases {
			ls = append(ls, l)
		}
		p.mu.Unlock()
		sort.Slice(ls, func(i, j int) bool { return ls[i].Address < ls[j].Address })
		b, _ := json.MarshalIndent(ls, "", "  ")
		err := atomicfile.Write(filepath.Join(p.dir, leaseFile), append(b, '\n'))
		p.mu.Lock()
		p.writing = false
		p.cond.Broadcast()
		if err != nil {
			if p.lastErr == nil {
				p.log.Error("cannot persist leases; addresses stay assigned in memory and the write is retried", "err", err)
			}
			p.lastErr, p.failed = err, gen
			return
		}
		if p.lastErr != nil {
			p.log.Info("leases persisted again")
		}
		p.lastErr, p.written = nil, gen
		if p.written == p.gen {
			p.dirty = false
		}
	}
}

// Broadcast is the last address of an IPv4 prefix.
func Broadcast(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= uint32(1)<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
