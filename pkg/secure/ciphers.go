package secure

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"runtime"
	"strings"

	"github.com/gtun/gtun/pkg/secure/vaesgcm"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// Ciphers is a set of record ciphers, as offered and chosen in the handshake.
// The handshake itself always uses ChaCha20-Poly1305 (Noise); the records
// after it use the fastest cipher both ends run in hardware. On this
// project's 2-core machine (Sapphire Rapids), sealing 64 KiB records:
// AES-128-GCM ~11-12 GB/s with pkg/secure/vaesgcm (VAES + VPCLMULQDQ on
// AVX-512, used when the CPU has them) and ~5 GB/s with crypto/cipher
// (AES-NI + PCLMULQDQ on 128-bit registers; 1420-byte packets 9.5-11 against
// 3.8-4.5 GB/s), AES-256-GCM ~3.9 GB/s, ChaCha20-Poly1305 ~1.6 GB/s. Both AES
// implementations produce the same bytes, so the two ends need not agree on
// one: only the cipher name goes on the wire. AES-128 and not 256:
// the keys come from an X25519 exchange, which offers about 128-bit
// security, so a 256-bit record key would cost 30% more CPU per byte and
// protect nothing the handshake does not already bound (TLS 1.3's default
// suite makes the same choice). Without AES instructions AES-GCM is slow (and
// only constant-time in software at a further cost), so it is offered only
// when the CPU has them.
type Ciphers uint8

// The record ciphers.
const (
	ChaCha20Poly1305 Ciphers = 1 << iota
	AES128GCM
)

// LocalCiphers is what this machine offers: AES-128-GCM when the CPU has
// AES and carry-less multiplication instructions, ChaCha20-Poly1305 always.
func LocalCiphers() Ciphers {
	c := ChaCha20Poly1305
	if hasAESHardware() {
		c |= AES128GCM
	}
	return c
}

func hasAESHardware() bool {
	switch runtime.GOARCH {
	case "amd64":
		return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ
	case "arm64":
		return cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	}
	return false
}

// AESImplementation names the AES-128-GCM code this process runs, for the
// startup log: "vaes-avx512" (pkg/secure/vaesgcm), "aes-ni" (crypto/cipher
// on amd64: also the fallback when GTUN_NO_VAES=1, FIPS 140 mode or a
// failed self-test turns vaesgcm off), "armv8-aes" (crypto/cipher on arm64)
// or "none" (AES-GCM not offered: no AES instructions). The first call may
// run vaesgcm's self-test, so a failure is logged before the line that
// names the fallback.
func AESImplementation() string {
	switch {
	case !hasAESHardware():
		return "none"
	case vaesgcm.Supported():
		return "vaes-avx512"
	case runtime.GOARCH == "arm64":
		return "armv8-aes"
	}
	return "aes-ni"
}

// pickCipher chooses from what both sides have, preferring AES-128-GCM.
func pickCipher(offer, accept Ciphers) Ciphers {
	common := offer & accept
	switch {
	case common&AES128GCM != 0:
		return AES128GCM
	case common&ChaCha20Poly1305 != 0:
		return ChaCha20Poly1305
	}
	return 0
}

func (c Ciphers) String() string {
	var names []string
	if c&ChaCha20Poly1305 != 0 {
		names = append(names, "chacha20-poly1305")
	}
	if c&AES128GCM != 0 {
		names = append(names, "aes-128-gcm")
	}
	if rest := c &^ (ChaCha20Poly1305 | AES128GCM); rest != 0 {
		names = append(names, fmt.Sprintf("unknown(%#x)", uint8(rest)))
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "+")
}

// ParseCiphers reads a config value: "auto" (or ""), "chacha20-poly1305",
// "aes-128-gcm".
func ParseCiphers(s string) (Ciphers, error) {
	switch s {
	case "", "auto":
		return 0, nil
	case "chacha20-poly1305":
		return ChaCha20Poly1305, nil
	case "aes-128-gcm":
		return AES128GCM, nil
	}
	return 0, fmt.Errorf("unknown cipher %q (auto, chacha20-poly1305 or aes-128-gcm)", s)
}

func newAEAD(c Ciphers, key [32]byte) (cipher.AEAD, error) {
	switch c {
	case ChaCha20Poly1305:
		return chacha20poly1305.New(key[:])
	case AES128GCM:
		// The first half of the 32-byte Noise key. vaesgcm only where it
		// is supported, allowed and passed its self-test; crypto/cipher
		// otherwise (and always in FIPS 140 mode).
		if vaesgcm.Supported() {
			return vaesgcm.New(key[:16])
		}
		b, err := aes.NewCipher(key[:16])
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	}
	return nil, fmt.Errorf("no cipher %v", c)
}
