package packet

import (
	"net/netip"
	"sort"
)

// Table maps prefixes to values and answers longest-prefix-match lookups.
// It is immutable once built, so the data path can read it without locks
// while a new one is swapped in atomically by its owner.
type Table[V any] struct {
	// byLen holds one map per prefix length present, longest first; a lookup
	// masks the address once per length. With the handful of distinct lengths
	// a VPN carries this beats a trie and allocates nothing.
	byLen []lenBucket[V]
}

type lenBucket[V any] struct {
	bits int
	m    map[netip.Prefix]V
}

// NewTable builds a table; later duplicates of a prefix replace earlier ones.
func NewTable[V any](entries map[netip.Prefix]V) *Table[V] {
	idx := map[int]int{}
	t := &Table[V]{}
	for p, v := range entries {
		p = p.Masked()
		bits := p.Bits()
		if p.Addr().Is4() {
			bits += 96 // keep IPv4 and IPv6 lengths apart
		}
		i, ok := idx[bits]
		if !ok {
			i = len(t.byLen)
			idx[bits] = i
			t.byLen = append(t.byLen, lenBucket[V]{bits: bits, m: map[netip.Prefix]V{}})
		}
		t.byLen[i].m[p] = v
	}
	sort.Slice(t.byLen, func(a, b int) bool { return t.byLen[a].bits > t.byLen[b].bits })
	return t
}

// Lookup returns the value of the longest prefix containing a.
func (t *Table[V]) Lookup(a netip.Addr) (V, bool) {
	var zero V
	if t == nil {
		return zero, false
	}
	is4 := a.Is4()
	for i := range t.byLen {
		b := &t.byLen[i]
		bits := b.bits
		if is4 {
			if bits < 96 {
				continue
			}
			bits -= 96
		} else if bits > 128 {
			continue
		}
		p, err := a.Prefix(bits)
		if err != nil {
			continue
		}
		if v, ok := b.m[p]; ok {
			return v, true
		}
	}
	return zero, false
}

// Len is the number of prefixes in the table.
func (t *Table[V]) Len() int {
	if t == nil {
		return 0
	}
	n := 0
	for _, b := range t.byLen {
		n += len(b.m)
	}
	return n
}

// Within reports whether p lies inside one of routes (equal counts).
func Within(p netip.Prefix, routes []netip.Prefix) bool {
	for _, r := range routes {
		if r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
			return true
		}
	}
	return false
}
