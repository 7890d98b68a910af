package vaesgcm

// expandKey128 writes the AES-128 key schedule (FIPS 197 section 5.2) as
// eleven 16-byte round keys in the byte order AESENC takes them.
func expandKey128(ks *[176]byte, key []byte) {
	copy(ks[:16], key)
	rcon := byte(1)
	for i := 16; i < 176; i += 4 {
		t0, t1, t2, t3 := ks[i-4], ks[i-3], ks[i-2], ks[i-1]
		if i%16 == 0 {
			t0, t1, t2, t3 = sbox(t1)^rcon, sbox(t2), sbox(t3), sbox(t0)
			rcon = xtime(rcon)
		}
		ks[i] = ks[i-16] ^ t0
		ks[i+1] = ks[i-15] ^ t1
		ks[i+2] = ks[i-14] ^ t2
		ks[i+3] = ks[i-13] ^ t3
	}
}

// xtime multiplies by x in AES's GF(2^8), without a branch.
func xtime(a byte) byte {
	return a<<1 ^ byte(-(int8(a)>>7&1))&0x1b
}

// gmul multiplies in GF(2^8) modulo x^8+x^4+x^3+x+1, without a branch or
// a table indexed by a secret.
func gmul(a, b byte) byte {
	var p byte
	for i := 0; i < 8; i++ {
		p ^= a & -(b & 1)
		a = xtime(a)
		b >>= 1
	}
	return p
}

// sbox computes the AES S-box (inverse a^254, then the affine map) rather
// than looking it up, so that the key schedule has no key-dependent memory
// access.
func sbox(a byte) byte {
	a2 := gmul(a, a)
	a3 := gmul(a2, a)
	a6 := gmul(a3, a3)
	a12 := gmul(a6, a6)
	a15 := gmul(a12, a3)
	a30 := gmul(a15, a15)
	a60 := gmul(a30, a30)
	a120 := gmul(a60, a60)
	a240 := gmul(a120, a120)
	a252 := gmul(a240, a12)
	inv := gmul(a252, a2) // a^254, and 0 for 0
	s := inv ^ rotl(inv, 1) ^ rotl(inv, 2) ^ rotl(inv, 3) ^ rotl(inv, 4) ^ 0x63
	return s
}

func rotl(b byte, n uint) byte { return b<<n | b>>(8-n) }
