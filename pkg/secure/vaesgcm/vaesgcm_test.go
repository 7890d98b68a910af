package vaesgcm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// requireAsm skips, with the reason in the test log, when this machine
// cannot run the assembly. A missing CPU feature is the one prerequisite
// that skips in CI too (testnet.Missing would fail there): no setup step
// can add an instruction set to a CPU, and on such a CPU production runs
// crypto/cipher, not this code.
func requireAsm(t testing.TB) {
	t.Helper()
	if !hasVAES {
		t.Skipf("skipped: this %s machine cannot run the VAES assembly (it needs amd64 with AES, PCLMULQDQ, "+
			"AVX, AVX2, AVX-512F/BW/VL, VAES and VPCLMULQDQ, the OS saving the ZMM state, and a build without purego)",
			runtime.GOARCH)
	}
}

// newPair returns the assembly AEAD and the standard library's for key.
func newPair(t testing.TB, key []byte) (vaes, std cipher.AEAD) {
	t.Helper()
	v := newUnchecked(t, key)
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return v, s
}

// newUnchecked builds the AEAD whatever GTUN_NO_VAES says (tests may run
// with it set to check the fallback elsewhere).
func newUnchecked(t testing.TB, key []byte) cipher.AEAD {
	t.Helper()
	requireAsm(t)
	t.Setenv("GTUN_NO_VAES", "")
	v, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestKeyScheduleMatchesCryptoAES(t *testing.T) {
	requireAsm(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		key := randBytes(rng, 16)
		var ks [176]byte
		expandKey128(&ks, key)
		var in, got, want [16]byte
		copy(in[:], randBytes(rng, 16))
		encryptBlock(&ks, &got, &in)
		b, _ := aes.NewCipher(key)
		b.Encrypt(want[:], in[:])
		if got != want {
			t.Fatalf("key %x block %x: got %x, crypto/aes %x", key, in, got, want)
		}
	}
}

func TestFieldMulMatchesSpec(t *testing.T) {
	// From the GCM specification, test case 2: H = 66e94bd4ef8a2c3b884cfa59ca342b2e,
	// C = 0388dace60b6a392f328c2b971b2fe78, GHASH(H, {}, C) = f38cbb1ad69223dcc3457ae5b6b0f885,
	// which for one block and the lengths block is (C*H + L)*H.
	h := elem("66e94bd4ef8a2c3b884cfa59ca342b2e")
	c := elem("0388dace60b6a392f328c2b971b2fe78")
	l := elem("00000000000000000000000000000080")
	x := gfMul(c, h)
	x = gfMul(fieldElem{x.hi ^ l.hi, x.lo ^ l.lo}, h)
	if want := elem("f38cbb1ad69223dcc3457ae5b6b0f885"); x != want {
		t.Fatalf("GHASH = %016x%016x, want %016x%016x", x.hi, x.lo, want.hi, want.lo)
	}
}

func elem(s string) fieldElem {
	b, _ := hex.DecodeString(s)
	var e fieldElem
	for i := 0; i < 8; i++ {
		e.hi = e.hi<<8 | uint64(b[i])
		e.lo = e.lo<<8 | uint64(b[8+i])
	}
	return e
}

// The AES-128 cases (1-6) of McGrew and Viega, "The Galois/Counter Mode of
// Operation", appendix B. Cases 5 and 6 use 8- and 60-byte IVs, which GCM
// hashes into J0; this AEAD takes only 12-byte nonces, so they are checked
// to be rejected by the standard library's 12-byte API as well, and only
// cases 1-4 are run here.
var specVectors = []struct {
	key, iv, pt, ad, ct, tag string
}{
	{
		key: "00000000000000000000000000000000",
		iv:  "000000000000000000000000",
		tag: "58e2fccefa7e3061367f1d57a4e7455a",
	},
	{
		key: "00000000000000000000000000000000",
		iv:  "000000000000000000000000",
		pt:  "00000000000000000000000000000000",
		ct:  "0388dace60b6a392f328c2b971b2fe78",
		tag: "ab6e47d42cec13bdf53a67b21257bddf",
	},
	{
		key: "feffe9928665731c6d6a8f9467308308",
		iv:  "cafebabefacedbaddecaf888",
		pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
		ct: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e" +
			"21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
		tag: "4d5c2af327cd64a62cf35abd2ba6fab4",
	},
	{
		key: "feffe9928665731c6d6a8f9467308308",
		iv:  "cafebabefacedbaddecaf888",
		pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
		ad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
		ct: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e" +
			"21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
		tag: "5bc94fbc3221a5db94fae95ae7121a47",
	},
}

func TestSpecVectors(t *testing.T) {
	for i, v := range specVectors {
		key, iv, pt, ad := unhex(v.key), unhex(v.iv), unhex(v.pt), unhex(v.ad)
		want := append(unhex(v.ct), unhex(v.tag)...)
		a := newUnchecked(t, key)
		got := a.Seal(nil, iv, pt, ad)
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d: Seal = %x, want %x", i+1, got, want)
		}
		back, err := a.Open(nil, iv, got, ad)
		if err != nil || !bytes.Equal(back, pt) {
			t.Fatalf("case %d: Open = %x, %v; want %x", i+1, back, err, pt)
		}
	}
}

// The same cases through a long message: case 3's plaintext repeated past
// several bulk chunks, compared with the standard library (the spec has no
// long vector).
func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// check compares Seal and Open of both implementations for one input, in
// every buffer arrangement the cipher.AEAD contract allows.
func check(t *testing.T, v, s cipher.AEAD, nonce, pt, ad []byte) {
	t.Helper()
	want := s.Seal(nil, nonce, pt, ad)

	// Separate dst.
	if got := v.Seal(nil, nonce, pt, ad); !bytes.Equal(got, want) {
		t.Fatalf("len %d ad %d: Seal differs from crypto/cipher\n got %x\nwant %x", len(pt), len(ad), got, want)
	}
	// Appending after a prefix.
	prefix := []byte("prefix-")
	got := v.Seal(append([]byte(nil), prefix...), nonce, pt, ad)
	if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
		t.Fatalf("len %d: Seal after a prefix differs", len(pt))
	}
	// In place, as pkg/secure does: Seal(p[:0], nonce, p, ad).
	buf := make([]byte, len(pt), len(pt)+tagSize)
	copy(buf, pt)
	got = v.Seal(buf[:0], nonce, buf, ad)
	if !bytes.Equal(got, want) || &got[0] != &buf[:1][0] {
		t.Fatalf("len %d: in-place Seal differs or moved", len(pt))
	}

	// Open: separate, prefix, in place.
	back, err := v.Open(nil, nonce, want, ad)
	if err != nil || !bytes.Equal(back, pt) {
		t.Fatalf("len %d: Open = %v, plaintext equal %v", len(pt), err, bytes.Equal(back, pt))
	}
	back, err = v.Open(append([]byte(nil), prefix...), nonce, want, ad)
	if err != nil || !bytes.Equal(back[:len(prefix)], prefix) || !bytes.Equal(back[len(prefix):], pt) {
		t.Fatalf("len %d: Open after a prefix: %v", len(pt), err)
	}
	sealed := append([]byte(nil), want...)
	back, err = v.Open(sealed[:0], nonce, sealed, ad)
	if err != nil || !bytes.Equal(back, pt) {
		t.Fatalf("len %d: in-place Open: %v", len(pt), err)
	}
}

// 16 is pkg/dgram's data header.
var adLens = []int{0, 4, 13, 16, 100}

func TestDifferentialEveryLength(t *testing.T) {
	requireAsm(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 0; n <= 640; n++ {
		for _, adLen := range adLens {
			v, s := newPair(t, randBytes(rng, 16))
			check(t, v, s, randBytes(rng, 12), randBytes(rng, n), randBytes(rng, adLen))
		}
	}
}

// Every length within 17 bytes of a multiple of the bulk loop's chunk, up
// to eight chunks and around a tunnel packet: the bulk loop runs 0..8
// times and leaves a tail of every size near empty and near a whole chunk
// (the tail's keystream and hash fill from one to four registers).
func TestDifferentialChunkBoundaries(t *testing.T) {
	requireAsm(t)
	rng := rand.New(rand.NewPCG(11, 12))
	var lens []int
	for k := 1; k <= 8; k++ {
		for d := -17; d <= 17; d++ {
			lens = append(lens, k*chunk+d)
		}
	}
	for n := 1400; n <= 1520; n++ {
		lens = append(lens, n)
	}
	for _, n := range lens {
		for _, adLen := range adLens {
			v, s := newPair(t, randBytes(rng, 16))
			check(t, v, s, randBytes(rng, 12), randBytes(rng, n), randBytes(rng, adLen))
		}
	}
}

func TestDifferentialLarge(t *testing.T) {
	requireAsm(t)
	rng := rand.New(rand.NewPCG(5, 6))
	lens := []int{1420, 1500, 4095, 4096, 4097, 16384, 65536, 65536 + 1024 + 1}
	for i := 0; i < 40; i++ {
		lens = append(lens, rng.IntN(66*1024+1))
	}
	for _, n := range lens {
		for _, adLen := range adLens {
			v, s := newPair(t, randBytes(rng, 16))
			check(t, v, s, randBytes(rng, 12), randBytes(rng, n), randBytes(rng, adLen))
		}
	}
}

// Records sit at any offset of the receive buffer (after a header), so
// the assembly's loads and stores must not assume alignment.
func TestDifferentialUnaligned(t *testing.T) {
	requireAsm(t)
	rng := rand.New(rand.NewPCG(9, 10))
	for off := 1; off < 64; off += 3 {
		for _, n := range []int{255, 256, 257, 1420, 4096 + 77} {
			v, s := newPair(t, randBytes(rng, 16))
			nonce, ad := randBytes(rng, 12), randBytes(rng, 4)
			pt := randBytes(rng, n)
			want := s.Seal(nil, nonce, pt, ad)
			big := make([]byte, off+n+tagSize+64)
			buf := big[off : off+n : off+n+tagSize]
			copy(buf, pt)
			got := v.Seal(buf[:0], nonce, buf, ad)
			if !bytes.Equal(got, want) {
				t.Fatalf("offset %d len %d: Seal differs", off, n)
			}
			back, err := v.Open(got[:0], nonce, got, ad)
			if err != nil || !bytes.Equal(back, pt) {
				t.Fatalf("offset %d len %d: Open: %v", off, n, err)
			}
			if !bytes.Equal(big[:off], make([]byte, off)) || !bytes.Equal(big[off+n+tagSize:], make([]byte, 64)) {
				t.Fatalf("offset %d len %d: wrote outside the buffer", off, n)
			}
		}
	}
}

// The 32-bit block counter wraps without carrying into the nonce bytes;
// crypto/cipher's 12-byte nonce starts it at 2, so a wrap needs 2^32 blocks
// and cannot be reached through Seal. Check the assembly's counter lanes
// (the macros sealGCM and openGCM use) through keystream against
// crypto/cipher's CTR mode from a counter just below the wrap.
func TestCounterWrap(t *testing.T) {
	requireAsm(t)
	key := make([]byte, 16)
	var ks [176]byte
	expandKey128(&ks, key)
	var ctr [16]byte
	ctr[11] = 7
	ctr[12], ctr[13], ctr[14], ctr[15] = 0xff, 0xff, 0xff, 0xf8 // wraps after 8 blocks
	var got [256]byte
	keystream(&ks, &ctr, &got)
	want := make([]byte, 256)
	b, _ := aes.NewCipher(key)
	for i := 0; i < 16; i++ {
		blk := ctr
		binary.BigEndian.PutUint32(blk[12:], binary.BigEndian.Uint32(ctr[12:])+uint32(i))
		b.Encrypt(want[16*i:], blk[:])
	}
	if !bytes.Equal(got[:], want) {
		t.Fatalf("keystream across the counter wrap differs:\n got %x\nwant %x", got, want)
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, 15, 16, 255, 256, 257, 1420, 16384} {
		key, nonce := randBytes(rng, 16), randBytes(rng, 12)
		pt, ad := randBytes(rng, n), randBytes(rng, 4)
		v := newUnchecked(t, key)
		sealed := v.Seal(nil, nonce, pt, ad)

		try := func(what string, sealed, nonce, ad []byte) {
			t.Helper()
			m := len(sealed) - tagSize // the plaintext area
			buf := append([]byte(nil), sealed...)
			out, err := v.Open(buf[:0], nonce, buf, ad)
			if err == nil || out != nil {
				t.Fatalf("len %d, %s: Open accepted it", n, what)
			}
			// In place: the plaintext area must hold no plaintext.
			if !bytes.Equal(buf[:m], make([]byte, m)) {
				t.Fatalf("len %d, %s: in-place Open left data in dst", n, what)
			}
			dst := make([]byte, 0, m)
			out, err = v.Open(dst, nonce, sealed, ad)
			if err == nil || out != nil || !bytes.Equal(dst[:m], make([]byte, m)) {
				t.Fatalf("len %d, %s: Open into a separate dst released data", n, what)
			}
		}
		for _, i := range []int{0, n / 2, n - 1, n, n + 15} {
			if i < 0 || i >= len(sealed) {
				continue
			}
			bad := append([]byte(nil), sealed...)
			bad[i] ^= 0x01
			try("flipped byte", bad, nonce, ad)
		}
		badAD := append([]byte(nil), ad...)
		badAD[3] ^= 0x80
		try("changed AAD", sealed, nonce, badAD)
		try("no AAD", sealed, nonce, nil)
		badNonce := append([]byte(nil), nonce...)
		badNonce[11] ^= 1
		try("changed nonce", sealed, badNonce, ad)
		if len(sealed) > tagSize {
			try("truncated", sealed[:len(sealed)-1], nonce, ad)
		}
		if _, err := v.Open(nil, nonce, sealed[:tagSize-1], ad); err == nil {
			t.Fatalf("Open accepted a ciphertext shorter than the tag")
		}
	}
}

func TestContract(t *testing.T) {
	v := newUnchecked(t, make([]byte, 16))
	if v.NonceSize() != 12 || v.Overhead() != 16 {
		t.Fatalf("NonceSize %d Overhead %d", v.NonceSize(), v.Overhead())
	}
	for _, f := range []func(){
		func() { v.Seal(nil, make([]byte, 8), nil, nil) },
		func() { v.Open(nil, make([]byte, 16), make([]byte, 16), nil) },
		func() { p := make([]byte, 64); v.Seal(p[1:1], make([]byte, 12), p[:32], nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("no panic")
				}
			}()
			f()
		}()
	}
	if _, err := New(make([]byte, 32)); err == nil {
		t.Fatalf("New accepted a 32-byte key")
	}
	if _, err := New(make([]byte, 24)); err == nil {
		t.Fatalf("New accepted a 24-byte key")
	}
}

func TestNoVAESEnv(t *testing.T) {
	t.Setenv("GTUN_NO_VAES", "1")
	if Supported() {
		t.Fatal("Supported with GTUN_NO_VAES=1")
	}
	if _, err := New(make([]byte, 16)); err == nil {
		t.Fatal("New succeeded with GTUN_NO_VAES=1")
	}
	t.Setenv("GTUN_NO_VAES", "")
	if want := hasVAES && !fips140.Enabled(); Supported() != want {
		t.Fatalf("with GTUN_NO_VAES unset Supported = %v, want %v (CPU features %v, FIPS 140 mode %v)",
			Supported(), want, hasVAES, fips140.Enabled())
	}
}

func TestZeroAllocs(t *testing.T) {
	v := newUnchecked(t, make([]byte, 16))
	nonce := make([]byte, 12)
	buf := make([]byte, 1420+tagSize)
	ad := make([]byte, 4)
	allocs := testing.AllocsPerRun(100, func() {
		sealed := v.Seal(buf[:0], nonce, buf[:1420], ad)
		if _, err := v.Open(sealed[:0], nonce, sealed, ad); err != nil {
			panic(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per Seal+Open", allocs)
	}
}

var benchSizes = []int{64, 512, 1420, 16384, 65536}

func benchAEADs(b *testing.B) []struct {
	name string
	a    cipher.AEAD
} {
	v, s := newPair(b, make([]byte, 16))
	return []struct {
		name string
		a    cipher.AEAD
	}{{"vaes", v}, {"stdlib", s}}
}

// BenchmarkSeal seals in place with 16 bytes of additional data, as
// pkg/dgram does (its data header).
func BenchmarkSeal(b *testing.B) {
	for _, n := range benchSizes {
		for _, impl := range benchAEADs(b) {
			b.Run(fmt.Sprintf("%d/%s", n, impl.name), func(b *testing.B) {
				buf := make([]byte, n+tagSize)
				nonce, ad := make([]byte, 12), make([]byte, 16)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					impl.a.Seal(buf[:0], nonce, buf[:n], ad)
				}
			})
		}
	}
}

// BenchmarkOpen opens a valid record into a separate buffer (in place
// would need a fresh copy of the record each time, which the benchmark
// would then measure too; the cost is the same).
func BenchmarkOpen(b *testing.B) {
	for _, n := range benchSizes {
		for _, impl := range benchAEADs(b) {
			b.Run(fmt.Sprintf("%d/%s", n, impl.name), func(b *testing.B) {
				nonce, ad := make([]byte, 12), make([]byte, 16)
				sealed := impl.a.Seal(nil, nonce, make([]byte, n), ad)
				out := make([]byte, n)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := impl.a.Open(out[:0], nonce, sealed, ad); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkFastest reports, as fastest-ns/op, the quickest of the
// windows of calls (about 40 KB of records each; one window per
// iteration, so -benchtime 400x runs 400) to Seal in place or Open into a
// separate buffer, with 16 bytes of additional data. On a shared, loaded
// machine the mean (ns/op) moves with the other load by a third; the
// fastest window, short enough to run between interruptions, much less.
func BenchmarkFastest(b *testing.B) {
	for _, op := range []string{"Seal", "Open"} {
		for _, n := range benchSizes {
			for _, impl := range benchAEADs(b) {
				b.Run(fmt.Sprintf("%s/%d/%s", op, n, impl.name), func(b *testing.B) {
					a := impl.a
					nonce, ad := make([]byte, 12), make([]byte, 16)
					buf := make([]byte, n+tagSize)
					sealed := a.Seal(nil, nonce, make([]byte, n), ad)
					out := make([]byte, n)
					call := func() { a.Seal(buf[:0], nonce, buf[:n], ad) }
					if op == "Open" {
						call = func() {
							if _, err := a.Open(out[:0], nonce, sealed, ad); err != nil {
								b.Fatal(err)
							}
						}
					}
					calls := 1 + 40000/(n+100)
					fastest := time.Duration(math.MaxInt64)
					for b.Loop() {
						start := time.Now()
						for range calls {
							call()
						}
						fastest = min(fastest, time.Since(start))
					}
					b.ReportMetric(float64(b.Elapsed())/float64(b.N*calls), "ns/op")
					b.ReportMetric(float64(fastest)/float64(calls), "fastest-ns/op")
				})
			}
		}
	}
}

// Every length of additional data from 0 to 1100 bytes. The additional
// data is hashed by its own code, before the text: sixteen blocks per
// pass, then what is left in whole blocks, then the zero-padded last
// block; up to 1100 bytes every remainder mod 16 meets every count of
// passes up to four. Each with an empty text, one block, and a text that
// fills the bulk loop once and leaves a tail.
func TestDifferentialEveryADLength(t *testing.T) {
	requireAsm(t)
	rng := rand.New(rand.NewPCG(11, 12))
	for adLen := 0; adLen <= 1100; adLen++ {
		v, s := newPair(t, randBytes(rng, 16))
		ad := randBytes(rng, adLen)
		for _, n := range []int{0, 16, chunk + 1} {
			check(t, v, s, randBytes(rng, 12), randBytes(rng, n), ad)
		}
	}
}

// Every one of the 128 tag bits, changed alone, is refused, for records
// that end inside the tail code, right after the bulk loop, and between
// the two; no plaintext is left in dst. crypto/cipher refuses the same
// records (a control that the records were the valid one, changed).
func TestOpenRejectsEveryTagBit(t *testing.T) {
	requireAsm(t)
	rng := rand.New(rand.NewPCG(13, 14))
	for _, n := range []int{0, 1, 15, 16, 17, 255, 256, 257, 1420, 16<<10 + 3} {
		v, s := newPair(t, randBytes(rng, 16))
		nonce, ad, pt := randBytes(rng, 12), randBytes(rng, 4), randBytes(rng, n)
		sealed := v.Seal(nil, nonce, pt, ad)
		bad := make([]byte, len(sealed))
		for bit := 0; bit < 8*tagSize; bit++ {
			copy(bad, sealed)
			bad[n+bit/8] ^= 1 << (bit % 8)
			if _, err := s.Open(nil, nonce, bad, ad); err == nil {
				t.Fatalf("len %d tag bit %d: crypto/cipher accepted it (the test is wrong)", n, bit)
			}
			out, err := v.Open(bad[:0], nonce, bad, ad)
			if err == nil || out != nil {
				t.Fatalf("len %d: Open accepted the record with tag bit %d changed", n, bit)
			}
			if !bytes.Equal(bad[:n], make([]byte, n)) {
				t.Fatalf("len %d tag bit %d: the refused in-place Open left data in dst", n, bit)
			}
		}
	}
}

// aeadCall is one Seal or Open, run in a buffer the test laid out.
type aeadCall func(a cipher.AEAD, mem []byte) ([]byte, error)

// outcome runs call on a copy of mem and returns what a caller can see:
// the panic message, or the result, the error and all of memory after it.
func outcome(a cipher.AEAD, mem []byte, call aeadCall) (panicked string, out []byte, err error, after []byte) {
	after = append([]byte(nil), mem...)
	defer func() {
		if r := recover(); r != nil {
			panicked = fmt.Sprint(r)
		}
	}()
	out, err = call(a, after)
	return "", append([]byte(nil), out...), err, after
}

// The cipher.AEAD contract on overlapping buffers is crypto/cipher's, to
// the letter: dst may start where the input starts or not touch it at all;
// anything else, or dst over the additional data, panics with the same
// message. Here dst starts at every offset of one buffer that also holds
// the input and the additional data (before, inside and after the record,
// and apart), and the two implementations must panic alike, or return the
// same and leave the buffer the same.
func TestOverlapLikeCryptoCipher(t *testing.T) {
	requireAsm(t)
	rng := rand.New(rand.NewPCG(15, 16))
	v, s := newPair(t, randBytes(rng, 16))
	nonce := randBytes(rng, 12)
	const src, adLen = 64, 4 // where the input starts; the records' AAD length
	panics := map[string]int{}
	for _, n := range []int{0, 1, 16, 17, 300} {
		recLen := n + tagSize
		size := src + recLen + 64 + recLen
		pt := randBytes(rng, n)
		separateAD := randBytes(rng, adLen)
		// -1: the additional data is not in the buffer.
		for _, adAt := range []int{-1, 0, src - adLen, src + n/2, src + n + 2, src + recLen + 8} {
			ad := func(mem []byte) []byte {
				if adAt < 0 {
					return separateAD
				}
				return mem[adAt : adAt+adLen]
			}
			sealMem := randBytes(rng, size)
			copy(sealMem[src:], pt)
			// Open's record is sealed with the additional data where it
			// lies, so it must not lie inside the record.
			openMem := append([]byte(nil), sealMem...)
			recordHoldsAD := adAt >= 0 && adAt < src+recLen && adAt+adLen > src
			if !recordHoldsAD {
				s.Seal(openMem[src:src], nonce, pt, ad(openMem))
			}
			for dstAt := 0; dstAt+recLen <= size; dstAt++ {
				calls := map[string]struct {
					mem  []byte
					call aeadCall
				}{
					"Seal": {sealMem, func(a cipher.AEAD, mem []byte) ([]byte, error) {
						return a.Seal(mem[dstAt:dstAt], nonce, mem[src:src+n], ad(mem)), nil
					}},
				}
				if !recordHoldsAD {
					calls["Open"] = struct {
						mem  []byte
						call aeadCall
					}{openMem, func(a cipher.AEAD, mem []byte) ([]byte, error) {
						return a.Open(mem[dstAt:dstAt], nonce, mem[src:src+recLen], ad(mem))
					}}
				}
				for name, c := range calls {
					sp, sOut, sErr, sAfter := outcome(s, c.mem, c.call)
					vp, vOut, vErr, vAfter := outcome(v, c.mem, c.call)
					where := fmt.Sprintf("%s len %d, dst at %d, input at %d, AAD at %d", name, n, dstAt, src, adAt)
					switch {
					case vp != sp:
						t.Fatalf("%s: panic %q, crypto/cipher's %q", where, vp, sp)
					case sp != "":
						panics[sp]++
					case (vErr == nil) != (sErr == nil) || !bytes.Equal(vOut, sOut) || !bytes.Equal(vAfter, sAfter):
						t.Fatalf("%s: result or memory differs from crypto/cipher's (error %v, crypto/cipher's %v)", where, vErr, sErr)
					case sErr != nil:
						t.Fatalf("%s: %v (the test is wrong)", where, sErr)
					}
				}
			}
		}
	}
	// A control that the layouts reach both panics.
	for _, msg := range []string{
		"crypto/cipher: invalid buffer overlap of output and input",
		"crypto/cipher: invalid buffer overlap of output and additional data",
	} {
		if panics[msg] == 0 {
			t.Fatalf("no layout panicked with %q: %v", msg, panics)
		}
	}
	t.Logf("panics, alike: %v", panics)
}
