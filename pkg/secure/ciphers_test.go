package secure

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/secure/vaesgcm"
)

// The two AES-128-GCM implementations meet on the wire (one end may have
// VAES and the other not, or GTUN_NO_VAES=1): each must open what the other
// seals, and AESImplementation must name the one newAEAD picks.
func TestAESImplementationsInteroperate(t *testing.T) {
	if !hasAESHardware() {
		testnet.Missing(t, "AES instructions (AES-128-GCM is offered only with them)")
	}
	var key [32]byte
	for i := range key {
		key[i] = byte(i * 7)
	}
	t.Setenv("GTUN_NO_VAES", "1")
	if got := AESImplementation(); got == "vaes-avx512" {
		t.Fatalf("AESImplementation with GTUN_NO_VAES=1: %s", got)
	}
	std, err := newAEAD(AES128GCM, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("GTUN_NO_VAES", "")
	if !vaesgcm.Supported() {
		if runtime.GOARCH != "amd64" {
			t.Skip("the VAES path is amd64 only")
		}
		testnet.Missing(t, "VAES/VPCLMULQDQ/AVX-512 (the VAES path is untested)")
	}
	if got := AESImplementation(); got != "vaes-avx512" {
		t.Fatalf("AESImplementation = %s, want vaes-avx512", got)
	}
	fast, err := newAEAD(AES128GCM, key)
	if err != nil {
		t.Fatal(err)
	}
	nonce, ad := make([]byte, 12), []byte{0, 0, 5, 0x9c}
	for _, n := range []int{0, 40, 1420, 65535} {
		pt := bytes.Repeat([]byte{byte(n)}, n)
		for _, dir := range [][2]interface {
			Seal(dst, nonce, plaintext, ad []byte) []byte
			Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
		}{{fast, std}, {std, fast}} {
			sealed := dir[0].Seal(nil, nonce, pt, ad)
			back, err := dir[1].Open(nil, nonce, sealed, ad)
			if err != nil || !bytes.Equal(back, pt) {
				t.Fatalf("len %d: the other implementation cannot open it: %v", n, err)
			}
		}
	}
}
