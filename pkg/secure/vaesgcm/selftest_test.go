package vaesgcm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"log/slog"
	"strings"
	"testing"
)

// The self-test passes on the real assembly, and the process's own run of
// it (the one Supported and New use) passed.
func TestSelfTestPasses(t *testing.T) {
	requireAsm(t)
	if err := compareWithStdlib(newAsm); err != nil {
		t.Fatalf("self-test of the assembly: %v", err)
	}
	if err := processSelfTest.result(); err != nil {
		t.Fatalf("this process's self-test: %v", err)
	}
}

// faultyAEAD is the assembly with one fault put in, as a broken CPU or
// hypervisor could: the self-test must catch each.
type faultyAEAD struct {
	cipher.AEAD
	key   []byte
	fault string
}

func (f faultyAEAD) Seal(dst, nonce, text, ad []byte) []byte {
	switch {
	case f.fault == "panics" && len(text) == 255:
		panic("simulated fault")
	case f.fault == "large seal differs" && len(text) > 16<<10:
		// Only in the bulk loop's output, mid-record.
		out := f.AEAD.Seal(dst, nonce, text, ad)
		out[len(dst)+8<<10] ^= 0x40
		return out
	case f.fault == "tag differs" && len(text) == 1420:
		out := f.AEAD.Seal(dst, nonce, text, ad)
		out[len(out)-1] ^= 1
		return out
	}
	return f.AEAD.Seal(dst, nonce, text, ad)
}

func (f faultyAEAD) Open(dst, nonce, sealed, ad []byte) ([]byte, error) {
	switch f.fault {
	case "open differs":
		out, err := f.AEAD.Open(dst, nonce, sealed, ad)
		if err == nil && len(out) > len(dst) {
			out[len(out)-1] ^= 1
		}
		return out, err
	case "open ignores the tag":
		// Decrypts in counter mode from J0+1 and checks nothing.
		b, _ := aes.NewCipher(f.key)
		iv := make([]byte, 16)
		copy(iv, nonce)
		iv[15] = 2
		text := make([]byte, len(sealed)-tagSize)
		cipher.NewCTR(b, iv).XORKeyStream(text, sealed[:len(text)])
		return append(dst, text...), nil
	}
	return f.AEAD.Open(dst, nonce, sealed, ad)
}

// With a faulty implementation the self-test fails, the VAES path is off
// (unavailable says why; Supported and New ask the same function), and the
// failure is logged once, as an error.
func TestSelfTestFallsBack(t *testing.T) {
	requireAsm(t) // unavailable asks for the CPU features before it runs the self-test
	if fips140.Enabled() {
		t.Skip("skipped: FIPS 140 mode turns the VAES path off before any self-test")
	}
	t.Setenv("GTUN_NO_VAES", "")
	for _, fault := range []string{"panics", "large seal differs", "tag differs", "open differs", "open ignores the tag"} {
		t.Run(strings.ReplaceAll(fault, " ", "_"), func(t *testing.T) {
			var logged bytes.Buffer
			prev := slog.Default()
			slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
			defer slog.SetDefault(prev)

			st := &selfTest{build: func(key []byte) cipher.AEAD {
				return faultyAEAD{AEAD: newAsm(key), key: key, fault: fault}
			}}
			why := unavailable(st)
			if !strings.Contains(why, "self-test against crypto/cipher failed") {
				t.Fatalf("a faulty implementation is used (unavailable = %q)", why)
			}
			if again := unavailable(st); again != why {
				t.Fatalf("the second answer differs: %q, then %q", why, again)
			}
			if n := strings.Count(logged.String(), "self-test"); n != 1 || !strings.Contains(logged.String(), "level=ERROR") {
				t.Fatalf("want one error logged, got %d lines mentioning the self-test:\n%s", n, logged.String())
			}
			t.Logf("%s: %s", fault, why)
		})
	}
	if why := unavailable(&selfTest{build: newAsm}); why != "" {
		t.Fatalf("the real assembly is not used: %s", why)
	}
}
