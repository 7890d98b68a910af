package vaesgcm

// fieldElem is an element of GCM's GF(2^128) in the specification's bit
// order: hi holds bytes 0..7 of the block big-endian, so its top bit is the
// coefficient of x^0. Used only to precompute the powers of H at New, in
// constant time (no branch or index depends on H).
type fieldElem struct{ hi, lo uint64 }

// gfMul is the specification's bit-serial multiplication (NIST SP 800-38D
// algorithm 1).
func gfMul(x, y fieldElem) fieldElem {
	var z fieldElem
	v := y
	for i := 0; i < 128; i++ {
		var bit uint64
		if i < 64 {
			bit = x.hi >> (63 - i) & 1
		} else {
			bit = x.lo >> (127 - i) & 1
		}
		m := -bit
		z.hi ^= v.hi & m
		z.lo ^= v.lo & m
		// v *= x: shift towards x^127, reduce by x^128 = x^7+x^2+x+1.
		r := -(v.lo & 1)
		v.lo = v.lo>>1 | v.hi<<63
		v.hi = v.hi>>1 ^ r&0xE100000000000000
	}
	return z
}
