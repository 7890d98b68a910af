package secure

import (
	"bytes"
	"crypto/fips140"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/gtun/gtun/pkg/secure/vaesgcm"
)

// The two AES-128-GCM implementations meet on the wire (one end may have
// VAES and the other not, or GTUN_NO_VAES=1): each must open what the other
// seals, and AESImplementation must name the one newAEAD picks. A missing
// CPU feature skips, with the reason logged, in CI too: no setup step can
// add one.
func TestAESImplementationsInteroperate(t *testing.T) {
	if !hasAESHardware() {
		t.Skip("skipped: this CPU has no AES instructions, so AES-128-GCM is not offered")
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
	if !vaesgcm.HasCPUFeatures() {
		t.Skip("skipped: this CPU cannot run the VAES path (VAES/VPCLMULQDQ/AVX-512, amd64 only)")
	}
	if fips140.Enabled() {
		t.Skip("skipped: FIPS 140 mode is on, which turns the VAES path off")
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

// In FIPS 140 mode only the standard library's (validated) AES-GCM runs,
// even on a CPU with VAES. The mode is fixed at process start
// (GODEBUG=fips140=on), so the test runs itself again in a child process
// with it on.
func TestFIPSModeUsesStdlibAES(t *testing.T) {
	const child = "GTUN_TEST_FIPS_CHILD"
	if os.Getenv(child) == "1" {
		checkFIPSChild(t)
		return
	}
	if !hasAESHardware() || !vaesgcm.HasCPUFeatures() {
		t.Skip("skipped: this CPU cannot run the VAES path, so there is nothing for FIPS 140 mode to turn off")
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestFIPSModeUsesStdlibAES$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), child+"=1", "GODEBUG=fips140=on", "GTUN_NO_VAES=")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFIPSModeUsesStdlibAES") {
		t.Fatalf("the child in FIPS 140 mode: %v\n%s", err, out)
	}
	t.Logf("child in FIPS 140 mode:\n%s", out)
}

func checkFIPSChild(t *testing.T) {
	if !fips140.Enabled() {
		t.Fatal("GODEBUG=fips140=on did not turn FIPS 140 mode on")
	}
	if vaesgcm.Supported() {
		t.Fatal("vaesgcm.Supported in FIPS 140 mode")
	}
	if _, err := vaesgcm.New(make([]byte, 16)); err == nil || !strings.Contains(err.Error(), "FIPS") {
		t.Fatalf("vaesgcm.New in FIPS 140 mode: %v", err)
	}
	if got := AESImplementation(); got != "aes-ni" {
		t.Fatalf("AESImplementation in FIPS 140 mode = %s, want aes-ni", got)
	}
	a, err := newAEAD(AES128GCM, [32]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	if typ := fmt.Sprintf("%T", a); strings.Contains(typ, "vaesgcm") {
		t.Fatalf("newAEAD in FIPS 140 mode returned %s", typ)
	}
	nonce, ad, pt := make([]byte, 12), []byte{0, 0, 0, 1}, []byte("in FIPS 140 mode")
	if back, err := a.Open(nil, nonce, a.Seal(nil, nonce, pt, ad), ad); err != nil || !bytes.Equal(back, pt) {
		t.Fatalf("AES-128-GCM in FIPS 140 mode: %v", err)
	}
	t.Logf("FIPS 140 mode: AESImplementation %s, newAEAD %T", AESImplementation(), a)
}
