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
// under load, and this more than doubles its throughput: 2.3-2.5x on
// large records and on 1420-byte packets, 3.5-4.5x on 64-byte ones. A whole
// Seal or Open is one assembly call (additional data, bulk loop, tail,
// tag), and the tail (what is left after the 256-byte chunks) is done with
// masked loads and stores and only as many registers of keystream and
// hash as it fills, so that a packet costs little more than its bytes at
// the bulk rate: on a Xeon (Emerald Rapids, KVM, shared) 1420 bytes take
// 115-150 ns, by the machine's load, where the bulk rate (12-14 GB/s)
// gives 104-118.
//
// Use it only when Supported reports true; otherwise use crypto/cipher.
// Supported is false on CPUs without the instructions, with GTUN_NO_VAES
// set, in FIPS 140 mode, and when the self-test against crypto/cipher that
// the first call runs fails.
package vaesgcm

import (
	"crypto/cipher"
	"crypto/fips140"
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
// amd64 with AES, PCLMULQDQ, AVX, AVX2, BMI2, AVX512F/BW/VL, VAES and
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
		return "the CPU or OS lacks VAES/VPCLMULQDQ/AVX-512 (or AVX/AVX2/BMI2), or the build is purego"
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
	// htab holds H^34 .. H^1 (entry i is H^(34-i)), each multiplied by
	// x^-1 and stored as the bit-reflected 128-bit value (low quadword
	// first), the form the assembly multiplies with, then zeros. The bulk
	// loop uses H^16..H^1; Seal hashes its last chunk, its tail of m < 17
	// blocks and the lengths block in one group (H^(m+17)..H^1), a short
	// additional data block goes with the first group (up to H^(m+18)),
	// and a tail's powers are loaded as four registers from H^(m+1) on, so
	// the table runs on far enough for the loads past H^1 to stay inside
	// it (their products are with zero blocks).
	htab [50][16]byte
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

// initTable fills htab with H^34..H^1 in the assembly's form.
func (g *gcm) initTable(h [16]byte) {
	hh := fieldElem{binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(h[8:])}
	p := hh
	for i := 33; i >= 0; i-- {
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

	sealGCM(&g.ks, &g.htab, &out[0], unsafe.SliceData(plaintext), len(plaintext),
		&nonce[0], unsafe.SliceData(ad), len(ad))
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
	n := len(ciphertext) - tagSize
	if !openGCM(&g.ks, &g.htab, unsafe.SliceData(out), &ciphertext[0], n,
		&nonce[0], unsafe.SliceData(ad), len(ad)) {
		// Decryption ran before the check: release nothing of it.
		clear(out)
		return nil, errOpen
	}
	return ret, nil
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
