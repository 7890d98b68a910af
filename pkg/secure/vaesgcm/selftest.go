package vaesgcm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync"
)

// selfTest compares the assembly with crypto/cipher once per process,
// before the first record goes through it. The differential tests and the
// fuzz target prove the code; this guards the machine it lands on: a
// hypervisor that advertises VAES or AVX-512 but loses the ZMM state, a CPU
// erratum, a microcode or kernel regression. Any of those would otherwise
// corrupt every record (or, worse, pass forged ones) until someone looked.
type selfTest struct {
	// build makes the implementation under test for a 16-byte key: the
	// assembly in production, a broken one in the fallback's unit test.
	build func(key []byte) cipher.AEAD

	once sync.Once
	err  error
}

var processSelfTest = selfTest{build: newAsm}

// result runs the test on the first call and returns its outcome, logging
// a failure once.
func (s *selfTest) result() error {
	s.once.Do(func() {
		s.err = compareWithStdlib(s.build)
		if s.err != nil {
			slog.Error("vaesgcm: the VAES AES-GCM self-test against crypto/cipher failed; "+
				"this process uses crypto/cipher's AES-GCM instead", "err", s.err)
		}
	})
	return s.err
}

// selfTestCases are the record lengths checked, each with the additional
// data length it is checked with: empty, under, at and over one block,
// under one bulk chunk, a tunnel packet, and a large record that runs the
// bulk loop 64 times before a 3-byte tail. 4 bytes of additional data is
// what gtun's records carry.
var selfTestCases = [...]struct{ textLen, adLen int }{
	{0, 0}, {1, 4}, {15, 13}, {16, 16}, {17, 17}, {255, 4}, {1420, 4}, {16<<10 + 3, 100},
}

// compareWithStdlib seals random texts with random keys, nonces and
// additional data with both implementations and compares ciphertext and
// tag byte for byte; the implementation under test must also open
// crypto/cipher's record and refuse it with one tag bit changed. A panic
// counts as a failure.
func compareWithStdlib(build func(key []byte) cipher.AEAD) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	for i, c := range selfTestCases {
		key, nonce, ad, text := random(keySize), random(nonceSize), random(c.adLen), random(c.textLen)
		block, err := aes.NewCipher(key)
		if err != nil {
			return fmt.Errorf("crypto/aes: %w", err)
		}
		std, err := cipher.NewGCM(block)
		if err != nil {
			return fmt.Errorf("crypto/cipher: %w", err)
		}
		impl := build(key)

		want := std.Seal(nil, nonce, text, ad)
		if got := impl.Seal(nil, nonce, text, ad); !bytes.Equal(got, want) {
			return fmt.Errorf("Seal of %d bytes with %d bytes of additional data differs from crypto/cipher", c.textLen, c.adLen)
		}
		opened, err := impl.Open(nil, nonce, want, ad)
		if err != nil {
			return fmt.Errorf("Open of crypto/cipher's %d-byte record with %d bytes of additional data: %w", c.textLen, c.adLen, err)
		}
		if !bytes.Equal(opened, text) {
			return fmt.Errorf("Open of crypto/cipher's %d-byte record with %d bytes of additional data gave other bytes", c.textLen, c.adLen)
		}
		want[len(want)-1-i] ^= 1 << (i % 8)
		if _, err := impl.Open(nil, nonce, want, ad); err == nil {
			return fmt.Errorf("Open accepted a %d-byte record whose tag was changed", c.textLen)
		}
	}
	return nil
}
