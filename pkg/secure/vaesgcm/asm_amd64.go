//go:build amd64 && !purego

package vaesgcm

import "golang.org/x/sys/cpu"

// hasVAES: every instruction set the assembly uses, the VEX-encoded AVX
// and AVX2 ones (VPXOR and VEXTRACTI128 on XMM and YMM) and BMI2's BZHI
// (the tail's masks) as well as the AVX-512 ones. AVX-512F implies AVX2 on every CPU made so far, but a
// hypervisor may mask features in CPUID one by one, and x/sys/cpu
// reports AVX and AVX2 only when the OS saves the YMM state, and the
// AVX-512 features only when it saves the ZMM state (XCR0): so this is
// also the OS check.
var hasVAES = cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ &&
	cpu.X86.HasAVX && cpu.X86.HasAVX2 && cpu.X86.HasBMI2 &&
	cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL &&
	cpu.X86.HasAVX512VAES && cpu.X86.HasAVX512VPCLMULQDQ

// Implemented in gcm_amd64.s.

//go:noescape
func sealGCM(ks *[176]byte, htab *[50][16]byte, dst, src *byte, n int, nonce, ad *byte, adLen int)

//go:noescape
func openGCM(ks *[176]byte, htab *[50][16]byte, dst, src *byte, n int, nonce, ad *byte, adLen int) bool

//go:noescape
func keystream(ks *[176]byte, ctr *[16]byte, out *[256]byte)

//go:noescape
func encryptBlock(ks *[176]byte, dst, src *[16]byte)
