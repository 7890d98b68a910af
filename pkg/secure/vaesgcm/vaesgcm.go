// Package vaesgcm is AES-128-GCM for amd64 CPUs with VAES and VPCLMULQDQ
// (AVX-512): counter mode on sixteen blocks per loop (four per ZMM
// instruction) interleaved with GHASH over sixteen blocks (four carry-less
// products per instruction, one reduction per sixteen blocks). It is a
// drop-in cipher.AEAD that produces exactly what crypto/cipher's GCM
// produces (12-byte nonce, 16-byte tag), verified differentially against
// it by the tests and a fuzz target.
//
// Go's own AES-GCM uses AES-NI and PCLMULQDQ on 128-bit registers; on the
// machines gtun runs on that is the largest user-space cost of a tunnel
// under load, and this more than doubles its throughput on large records
// (1.5x on 1420-byte packets). Use it only when Supported reports true;
// otherwise use crypto/cipher. Supported is false on CPUs without the
// instructions, with GTUN_NO_VAES set, in FIPS 140 mode, and when the
// self-test against crypto/cipher that the first call runs fails.
package vaesgcm

import (
	"crypto/cipher"
	"crypto/fips140"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"os"
	"unsafe"
)

const (
	keySize   = 16
	nonceSize = 12
	tagSize   = 16
	blockSize = 16
	// The bulk loop works on sixteen blocks at a time.
	chunk = 16 * blockSize
)

var errOpen = errors.New("cipher: message authentication failed")

// HasCPUFeatures reports whether this CPU and OS can run the assembly:
// amd64 with AES, PCLMULQDQ, AVX, AVX2, AVX512F/BW/VL, VAES and
// VPCLMULQDQ, the OS saving the YMM and ZMM registers, and a build without
// the purego tag.
func HasCPUFeatures() bool { return hasVAES }

// Supported reports whether this process uses the assembly: the CPU has
// the features, GTUN_NO_VAES is not set (GTUN_NO_VAES=1 forces the standard
// library's AES-GCM, as an escape hatch), FIPS 140 mode is off, and the
// self-test against crypto/cipher passed. The first call with everything
// else in place runs the self-test (about 0.1 ms); a failure is logged
// once, as an error, with slog's default logger.
func Supported() bool { return unavailable(&processSelfTest) == "" }

// unavailable says why the assembly is not used, or "" when it is.
func unavailable(st *selfTest) string {
	switch off := os.Getenv("GTUN_NO_VAES"); {
	case off != "" && off != "0":
		return "GTUN_NO_VAES is set"
	case !hasVAES:
		return "the CPU or OS lacks VAES/VPCLMULQDQ/AVX-512 (or AVX/AVX2), or the build is purego"
	case fips140.Enabled():
		// The FIPS 140-3 validated module is the standard library's own
		// crypto; this assembly is not part of it, so in FIPS mode only the
		// standard library's AES-GCM may run.
		return "FIPS 140 mode is on"
	}
	if err := st.result(); err != nil {
		return "its self-test against crypto/cipher failed: " + err.Error()
	}
	return ""
}

type gcm struct {
	// ks is the AES-128 key schedule, 11 round keys in FIPS 197 byte order.
	ks [176]byte
	// htab holds H^16 .. H^1 (entry i is H^(16-i)), each multiplied by
	// x^-1 and stored as the bit-reflected 128-bit value (low quadword
	// first), the form the assembly multiplies with.
	htab [16][16]byte
}

// New returns AES-128-GCM with a 12-byte nonce and a 16-byte tag. It fails
// unless Supported and the key is 16 bytes.
func New(key []byte) (cipher.AEAD, error) {
	if why := unavailable(&processSelfTest); why != "" {
		return nil, errors.New("vaesgcm: not used: " + why)
	}
	if len(key) != keySize {
		return nil, errors.New("vaesgcm: key must be 16 bytes (AES-128)")
	}
	return newAsm(key), nil
}

// newAsm builds the AEAD without asking Supported: for the self-test,
// which Supported runs, and for New. key is 16 bytes.
func newAsm(key []byte) cipher.AEAD {
	g := new(gcm)
	expandKey128(&g.ks, key)
	var zero, h [16]byte
	encryptBlock(&g.ks, &h, &zero)
	g.initTable(h)
	return g
}

// initTable fills htab with H^16..H^1 in the assembly's form.
func (g *gcm) initTable(h [16]byte) {
	hh := fieldElem{binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(h[8:])}
	p := hh
	for i := 15; i >= 0; i-- {
		// The integer whose bit 127 is x^0 is (hi, lo) as read big-endian;
		// times x^-1 it is shifted left by one, folding x^-1 = x^127 + x^6
		// + x + 1 (0xC2000...01) in when the x^0 coefficient falls out.
		mask := -(p.hi >> 63)
		hi := p.hi<<1 | p.lo>>63
		lo := p.lo << 1
		hi ^= mask & 0xC200000000000000
		lo ^= mask & 1
		binary.LittleEndian.PutUint64(g.htab[i][:8], lo)
		binary.LittleEndian.PutUint64(g.htab[i][8:], hi)
		p = gfMul(p, hh)
	}
}

func (g *gcm) NonceSize() int { return nonceSize }
func (g *gcm) Overhead() int  { return tagSize }

func (g *gcm) Seal(dst, nonce, plaintext, ad []byte) []byte {
	if len(nonce) != nonceSize {
		panic("crypto/cipher: incorrect nonce length given to GCM")
	}
	if uint64(len(plaintext)) > uint64((1<<32)-2)*blockSize {
		panic("crypto/cipher: message too large for GCM")
	}
	ret, out := sliceForAppend(dst, len(plaintext)+tagSize)
	if inexactOverlap(out, plaintext) {
		panic("crypto/cipher: invalid buffer overlap of output and input")
	}
	if anyOverlap(out, ad) {
		panic("crypto/cipher: invalid buffer overlap of output and additional data")
	}

	var j0, ctr, y [16]byte
	g.begin(&j0, &ctr, &y, nonce, ad)

	n := len(plaintext) &^ (chunk - 1)
	if n > 0 {
		sealBlocks(&g.ks, &g.htab, &ctr, &y, &out[0], &plaintext[0], n)
		advance(&ctr, n/blockSize)
	}
	if rest := len(plaintext) - n; rest > 0 {
		var ks [chunk]byte
		keystream(&g.ks, &ctr, &ks)
		subtle.XORBytes(out[n:], plaintext[n:], ks[:rest])
	}
	g.tag((*[16]byte)(out[len(plaintext):]), &y, &j0, out[n:len(plaintext)], len(ad), len(plaintext))
	return ret
}

func (g *gcm) Open(dst, nonce, ciphertext, ad []byte) ([]byte, error) {
	if len(nonce) != nonceSize {
		panic("crypto/cipher: incorrect nonce length given to GCM")
	}
	if len(ciphertext) < tagSize {
		return nil, errOpen
	}
	if uint64(len(ciphertext)) > uint64((1<<32)-2)*blockSize+tagSize {
		return nil, errOpen
	}
	// The overlap rules are crypto/cipher's to the letter: the output is
	// checked against the whole record, tag included, so that a dst that
	// is accepted (or refused, with the same panic) by one implementation
	// is by the other too.
	ret, out := sliceForAppend(dst, len(ciphertext)-tagSize)
	if inexactOverlap(out, ciphertext) {
		panic("crypto/cipher: invalid buffer overlap of output and input")
	}
	if anyOverlap(out, ad) {
		panic("crypto/cipher: invalid buffer overlap of output and additional data")
	}
	var want [16]byte
	copy(want[:], ciphertext[len(ciphertext)-tagSize:])
	ciphertext = ciphertext[:len(ciphertext)-tagSize]

	var j0, ctr, y [16]byte
	g.begin(&j0, &ctr, &y, nonce, ad)

	n := len(ciphertext) &^ (chunk - 1)
	if n > 0 {
		openBlocks(&g.ks, &g.htab, &ctr, &y, &out[0], &ciphertext[0], n)
		advance(&ctr, n/blockSize)
	}
	// Hash the tail before decrypting it: out may be ciphertext itself.
	var got [16]byte
	g.tag(&got, &y, &j0, ciphertext[n:], len(ad), len(ciphertext))
	if rest := len(ciphertext) - n; rest > 0 {
		var ks [chunk]byte
		keystream(&g.ks, &ctr, &ks)
		subtle.XORBytes(out[n:], ciphertext[n:], ks[:rest])
	}
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		// Decryption ran before the check: release nothing of it.
		clear(out)
		return nil, errOpen
	}
	return ret, nil
}

// begin sets up a message: J0 = nonce || 1 (it encrypts the tag), the
// first data counter J0+1, and the hash of the additional data.
func (g *gcm) begin(j0, ctr, y *[16]byte, nonce, ad []byte) {
	copy(j0[:], nonce)
	j0[15] = 1
	*ctr = *j0
	ctr[15] = 2
	g.hash(y, ad)
}

// hash folds data into y, the last partial block padded with zeros.
func (g *gcm) hash(y *[16]byte, data []byte) {
	full := len(data) &^ (blockSize - 1)
	if full > 0 {
		ghashBlocks(&g.htab, y, &data[0], full)
	}
	if full < len(data) {
		var last [16]byte
		copy(last[:], data[full:])
		ghashBlocks(&g.htab, y, &last[0], blockSize)
	}
}

// tag hashes the tail of the ciphertext (less than a chunk, zero-padded to
// a block) and the lengths block in one call, and encrypts the result with
// E(K, J0).
func (g *gcm) tag(out, y, j0 *[16]byte, tail []byte, adLen, textLen int) {
	var buf [chunk + blockSize]byte
	m := (copy(buf[:chunk], tail) + blockSize - 1) &^ (blockSize - 1)
	binary.BigEndian.PutUint64(buf[m:], uint64(adLen)*8)
	binary.BigEndian.PutUint64(buf[m+8:], uint64(textLen)*8)
	ghashBlocks(&g.htab, y, &buf[0], m+blockSize)
	var s [16]byte
	// y holds the reflected value low quadword first; the block is its
	// big-endian form.
	binary.BigEndian.PutUint64(s[:8], binary.LittleEndian.Uint64(y[8:]))
	binary.BigEndian.PutUint64(s[8:], binary.LittleEndian.Uint64(y[:8]))
	var mask [16]byte
	encryptBlock(&g.ks, &mask, j0)
	subtle.XORBytes(out[:], s[:], mask[:])
}

// advance adds n to the 32-bit big-endian counter, modulo 2^32 as GCM
// increments it.
func advance(ctr *[16]byte, n int) {
	c := binary.BigEndian.Uint32(ctr[12:])
	binary.BigEndian.PutUint32(ctr[12:], c+uint32(n))
}

// sliceForAppend extends in by n bytes, reallocating only when its capacity
// is short, and returns the whole slice and the n new bytes.
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	tail = head[len(in):]
	return
}

// anyOverlap and inexactOverlap are crypto/cipher's own overlap tests
// (crypto/internal/fips140/alias, which other modules cannot import),
// copied so that the two implementations refuse exactly the same buffers.

// anyOverlap: x and y share memory at any index.
func anyOverlap(x, y []byte) bool {
	return len(x) > 0 && len(y) > 0 &&
		uintptr(unsafe.Pointer(&x[0])) <= uintptr(unsafe.Pointer(&y[len(y)-1])) &&
		uintptr(unsafe.Pointer(&y[0])) <= uintptr(unsafe.Pointer(&x[len(x)-1]))
}

// inexactOverlap: overlapping but not starting at the same byte (in place
// is allowed, shifted is not).
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	return anyOverlap(x, y)
}
