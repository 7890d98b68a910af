//go:build amd64 && !purego

// AES-128-GCM kernels with VAES and VPCLMULQDQ on ZMM registers (AVX-512).
//
// Representation (see gcm.go): a GHASH block is byte-reversed when loaded,
// so the 128-bit lane holds the field element with x^0 at bit 127. The
// hash key powers in the table are pre-multiplied by x^-1, which absorbs
// the one-bit offset of a carry-less product of two such values; the
// reduction then folds the low 128 bits of the 256-bit product into the
// high half with two multiplications by 0xC200000000000000.
//
// Counters are kept byte-reversed too, so the 32-bit GCM counter is dword 0
// of each lane and VPADDD increments it modulo 2^32 as GCM defines.

#include "textflag.h"

// Byte reversal of each 128-bit lane.
DATA bswapMask<>+0x00(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x08(SB)/8, $0x0001020304050607
GLOBL bswapMask<>(SB), RODATA|NOPTR, $16

// Counter offsets of the four lanes of the first register: 0, 1, 2, 3.
DATA laneInc<>+0x00(SB)/8, $0
DATA laneInc<>+0x08(SB)/8, $0
DATA laneInc<>+0x10(SB)/8, $1
DATA laneInc<>+0x18(SB)/8, $0
DATA laneInc<>+0x20(SB)/8, $2
DATA laneInc<>+0x28(SB)/8, $0
DATA laneInc<>+0x30(SB)/8, $3
DATA laneInc<>+0x38(SB)/8, $0
GLOBL laneInc<>(SB), RODATA|NOPTR, $64

// Four blocks further, in every lane.
DATA inc4<>+0x00(SB)/8, $4
DATA inc4<>+0x08(SB)/8, $0
GLOBL inc4<>(SB), RODATA|NOPTR, $16

// One block further (XMM).
DATA inc1<>+0x00(SB)/8, $1
DATA inc1<>+0x08(SB)/8, $0
GLOBL inc1<>(SB), RODATA|NOPTR, $16

// Reduction constant: x^-128 folding for the reflected polynomial.
DATA poly<>+0x00(SB)/8, $0xC200000000000000
DATA poly<>+0x08(SB)/8, $0xC200000000000000
GLOBL poly<>(SB), RODATA|NOPTR, $16

// Registers of the bulk loops:
//   Z0-Z3   counter blocks, then keystream, then output
//   Z4-Z7   GHASH input blocks
//   Z8 Z9 Z10  low, high and middle product sums
//   Z11 Z12 temporaries
//   Z13 next counters (byte-reversed), Z14 GHASH accumulator (lane 0)
//   Z15 counter step of 4 per lane
//   Z16-Z26 round keys, Z27 byte reversal, Z28-Z31 powers H^16..H^1

#define LOAD_KEYS(KS) \
	VBROADCASTI32X4 0(KS), Z16; \
	VBROADCASTI32X4 16(KS), Z17; \
	VBROADCASTI32X4 32(KS), Z18; \
	VBROADCASTI32X4 48(KS), Z19; \
	VBROADCASTI32X4 64(KS), Z20; \
	VBROADCASTI32X4 80(KS), Z21; \
	VBROADCASTI32X4 96(KS), Z22; \
	VBROADCASTI32X4 112(KS), Z23; \
	VBROADCASTI32X4 128(KS), Z24; \
	VBROADCASTI32X4 144(KS), Z25; \
	VBROADCASTI32X4 160(KS), Z26

#define SETUP_CTR(CTR) \
	VBROADCASTI32X4 bswapMask<>(SB), Z27; \
	VBROADCASTI32X4 0(CTR), Z13; \
	VPSHUFB Z27, Z13, Z13; \
	VPADDD laneInc<>(SB), Z13, Z13; \
	VBROADCASTI32X4 inc4<>(SB), Z15

// Sixteen counter blocks encrypted into Z0-Z3; Z13 advances by 16.
#define CTR16 \
	CTR_START; \
	AESROUND(Z17); \
	AESROUND(Z18); \
	AESROUND(Z19); \
	AESROUND(Z20); \
	AESROUND(Z21); \
	AESROUND(Z22); \
	AESROUND(Z23); \
	AESROUND(Z24); \
	AESROUND(Z25); \
	AESLAST

// The next sixteen counter blocks into Z0-Z3, xored with round key 0.
#define CTR_START \
	VPSHUFB Z27, Z13, Z0; \
	VPADDD Z15, Z13, Z13; \
	VPSHUFB Z27, Z13, Z1; \
	VPADDD Z15, Z13, Z13; \
	VPSHUFB Z27, Z13, Z2; \
	VPADDD Z15, Z13, Z13; \
	VPSHUFB Z27, Z13, Z3; \
	VPADDD Z15, Z13, Z13; \
	VPXORQ Z16, Z0, Z0; \
	VPXORQ Z16, Z1, Z1; \
	VPXORQ Z16, Z2, Z2; \
	VPXORQ Z16, Z3, Z3

#define AESLAST \
	VAESENCLAST Z26, Z0, Z0; \
	VAESENCLAST Z26, Z1, Z1; \
	VAESENCLAST Z26, Z2, Z2; \
	VAESENCLAST Z26, Z3, Z3

// Sixteen blocks of counter mode (into Z0-Z3) with the hash of sixteen
// other blocks (Z4-Z7, accumulator already xored in) interleaved between
// the rounds: independent work for the AES and the carry-less
// multiplication units, issued together.
#define STITCHED \
	CTR_START; \
	AESROUND(Z17); \
	GHASH_FIRST; \
	AESROUND(Z18); \
	GHASH_ACC(Z5, Z29); \
	AESROUND(Z19); \
	GHASH_ACC(Z6, Z30); \
	AESROUND(Z20); \
	GHASH_ACC(Z7, Z31); \
	AESROUND(Z21); \
	GHASH_REDUCE; \
	AESROUND(Z22); \
	AESROUND(Z23); \
	AESROUND(Z24); \
	AESROUND(Z25); \
	AESLAST

#define AESROUND(K) \
	VAESENC K, Z0, Z0; \
	VAESENC K, Z1, Z1; \
	VAESENC K, Z2, Z2; \
	VAESENC K, Z3, Z3

// Products of Z4..Z7 (already byte-reversed, accumulator xored into Z4)
// with the powers in Z28..Z31, summed into Z8 (low), Z9 (high), Z10 (middle).
#define GHASH_MUL16 \
	GHASH_FIRST; \
	GHASH_ACC(Z5, Z29); \
	GHASH_ACC(Z6, Z30); \
	GHASH_ACC(Z7, Z31)

#define GHASH_FIRST \
	VPCLMULQDQ $0x00, Z28, Z4, Z8; \
	VPCLMULQDQ $0x11, Z28, Z4, Z9; \
	VPCLMULQDQ $0x01, Z28, Z4, Z10; \
	VPCLMULQDQ $0x10, Z28, Z4, Z11; \
	VPXORQ Z11, Z10, Z10

#define GHASH_ACC(X, H) \
	VPCLMULQDQ $0x00, H, X, Z11; \
	VPCLMULQDQ $0x11, H, X, Z12; \
	VPXORQ Z11, Z8, Z8; \
	VPXORQ Z12, Z9, Z9; \
	VPCLMULQDQ $0x01, H, X, Z11; \
	VPCLMULQDQ $0x10, H, X, Z12; \
	VPTERNLOGQ $0x96, Z12, Z11, Z10

// Sum the lanes of the 256-bit products and reduce into X14 (which zeroes
// the upper lanes of Z14, so it xors into lane 0 only of the next input).
#define GHASH_REDUCE \
	VPSLLDQ $8, Z10, Z11; \
	VPSRLDQ $8, Z10, Z12; \
	VPXORQ Z11, Z8, Z8; \
	VPXORQ Z12, Z9, Z9; \
	VEXTRACTI64X4 $1, Z8, Y11; \
	VEXTRACTI64X4 $1, Z9, Y12; \
	VPXOR Y11, Y8, Y8; \
	VPXOR Y12, Y9, Y9; \
	VEXTRACTI128 $1, Y8, X11; \
	VEXTRACTI128 $1, Y9, X12; \
	VPXOR X11, X8, X8; \
	VPXOR X12, X9, X9; \
	REDUCE(X8, X9, X14, X11)

// R = (HI:LO) * x^-128 mod P, with T a temporary.
#define REDUCE(LO, HI, R, T) \
	VPCLMULQDQ $0x00, poly<>(SB), LO, T; \
	VPSHUFD $0x4E, LO, LO; \
	VPXOR T, LO, LO; \
	VPCLMULQDQ $0x00, poly<>(SB), LO, T; \
	VPSHUFD $0x4E, LO, LO; \
	VPXOR T, LO, LO; \
	VPXOR HI, LO, R

// Xor the keystream in Z0-Z3 with 256 bytes at SI, store them at DI, keep
// them byte-reversed in Z4-Z7 for the hash, and advance.
#define SEAL_STORE \
	VPXORQ 0(SI), Z0, Z0; \
	VPXORQ 64(SI), Z1, Z1; \
	VPXORQ 128(SI), Z2, Z2; \
	VPXORQ 192(SI), Z3, Z3; \
	VMOVDQU64 Z0, 0(DI); \
	VMOVDQU64 Z1, 64(DI); \
	VMOVDQU64 Z2, 128(DI); \
	VMOVDQU64 Z3, 192(DI); \
	VPSHUFB Z27, Z0, Z4; \
	VPSHUFB Z27, Z1, Z5; \
	VPSHUFB Z27, Z2, Z6; \
	VPSHUFB Z27, Z3, Z7; \
	ADDQ $256, SI; \
	ADDQ $256, DI; \
	SUBQ $256, R8

#define LOAD_STATE(HTAB, Y) \
	VMOVDQU64 0(HTAB), Z28; \
	VMOVDQU64 64(HTAB), Z29; \
	VMOVDQU64 128(HTAB), Z30; \
	VMOVDQU64 192(HTAB), Z31; \
	VMOVDQU 0(Y), X14

// func sealBlocks(ks *[176]byte, htab *[16][16]byte, ctr *[16]byte, y *[16]byte, dst, src *byte, n int)
// Encrypts n bytes (a multiple of 256, at least 256) with counters from
// *ctr on and hashes the ciphertext into *y. dst may equal src. The loop
// is pipelined: it hashes the previous sixteen blocks of ciphertext (kept
// byte-reversed in Z4-Z7) while it encrypts the next sixteen, so that the
// hash chain does not wait for the AES rounds.
TEXT ·sealBlocks(SB), NOSPLIT, $0-56
	MOVQ ks+0(FP), AX
	MOVQ htab+8(FP), BX
	MOVQ ctr+16(FP), CX
	MOVQ y+24(FP), DX
	MOVQ dst+32(FP), DI
	MOVQ src+40(FP), SI
	MOVQ n+48(FP), R8
	LOAD_KEYS(AX)
	SETUP_CTR(CX)
	LOAD_STATE(BX, DX)
	CMPQ R8, $256
	JB   sealDone
	CTR16
	SEAL_STORE

sealLoop:
	CMPQ R8, $256
	JB   sealLast
	VPXORQ Z14, Z4, Z4
	STITCHED
	SEAL_STORE
	JMP  sealLoop

sealLast:
	VPXORQ Z14, Z4, Z4
	GHASH_MUL16
	GHASH_REDUCE

sealDone:
	VMOVDQU X14, 0(DX)
	VZEROUPPER
	RET

// func openBlocks(ks *[176]byte, htab *[16][16]byte, ctr *[16]byte, y *[16]byte, dst, src *byte, n int)
// Hashes n bytes (a multiple of 256) of ciphertext into *y and decrypts
// them. dst may equal src.
TEXT ·openBlocks(SB), NOSPLIT, $0-56
	MOVQ ks+0(FP), AX
	MOVQ htab+8(FP), BX
	MOVQ ctr+16(FP), CX
	MOVQ y+24(FP), DX
	MOVQ dst+32(FP), DI
	MOVQ src+40(FP), SI
	MOVQ n+48(FP), R8
	LOAD_KEYS(AX)
	SETUP_CTR(CX)
	LOAD_STATE(BX, DX)

openLoop:
	CMPQ R8, $256
	JB   openDone
	VMOVDQU64 0(SI), Z4
	VMOVDQU64 64(SI), Z5
	VMOVDQU64 128(SI), Z6
	VMOVDQU64 192(SI), Z7
	VPSHUFB Z27, Z4, Z4
	VPSHUFB Z27, Z5, Z5
	VPSHUFB Z27, Z6, Z6
	VPSHUFB Z27, Z7, Z7
	VPXORQ Z14, Z4, Z4
	STITCHED
	VPXORQ 0(SI), Z0, Z0
	VPXORQ 64(SI), Z1, Z1
	VPXORQ 128(SI), Z2, Z2
	VPXORQ 192(SI), Z3, Z3
	VMOVDQU64 Z0, 0(DI)
	VMOVDQU64 Z1, 64(DI)
	VMOVDQU64 Z2, 128(DI)
	VMOVDQU64 Z3, 192(DI)
	ADDQ $256, SI
	ADDQ $256, DI
	SUBQ $256, R8
	JMP  openLoop

openDone:
	VMOVDQU X14, 0(DX)
	VZEROUPPER
	RET

// func keystream(ks *[176]byte, ctr *[16]byte, out *[256]byte)
// Sixteen blocks of keystream from counter *ctr on, for the tail.
TEXT ·keystream(SB), NOSPLIT, $0-24
	MOVQ ks+0(FP), AX
	MOVQ ctr+8(FP), CX
	MOVQ out+16(FP), DI
	LOAD_KEYS(AX)
	SETUP_CTR(CX)
	CTR16
	VMOVDQU64 Z0, 0(DI)
	VMOVDQU64 Z1, 64(DI)
	VMOVDQU64 Z2, 128(DI)
	VMOVDQU64 Z3, 192(DI)
	VZEROUPPER
	RET

// func ghashBlocks(htab *[16][16]byte, y *[16]byte, src *byte, n int)
// Hashes n bytes (a multiple of 16) into *y, for the AAD and the tail: up
// to sixteen blocks per reduction, block j of m multiplied by H^(m-j)
// (table entry 16-m+j).
TEXT ·ghashBlocks(SB), NOSPLIT, $0-32
	MOVQ htab+0(FP), BX
	MOVQ y+8(FP), DX
	MOVQ src+16(FP), SI
	MOVQ n+24(FP), R8
	VMOVDQU bswapMask<>(SB), X7
	VMOVDQU 0(DX), X14

ghashGroup:
	CMPQ R8, $16
	JB   ghashDone
	// R9: bytes in this group, at most 256; R10: the power for its first block.
	MOVQ R8, R9
	CMPQ R9, $256
	JBE  ghashGroupSize
	MOVQ $256, R9

ghashGroupSize:
	LEAQ 256(BX), R10
	SUBQ R9, R10
	VMOVDQU 0(SI), X4
	VPSHUFB X7, X4, X4
	VPXOR X14, X4, X4
	VMOVDQU 0(R10), X6
	VPCLMULQDQ $0x00, X6, X4, X8
	VPCLMULQDQ $0x11, X6, X4, X9
	VPCLMULQDQ $0x01, X6, X4, X10
	VPCLMULQDQ $0x10, X6, X4, X11
	VPXOR X11, X10, X10
	ADDQ $16, SI
	ADDQ $16, R10
	SUBQ $16, R8
	SUBQ $16, R9

ghashBlock:
	TESTQ R9, R9
	JZ    ghashReduce
	VMOVDQU 0(SI), X4
	VPSHUFB X7, X4, X4
	VMOVDQU 0(R10), X6
	VPCLMULQDQ $0x00, X6, X4, X11
	VPCLMULQDQ $0x11, X6, X4, X12
	VPCLMULQDQ $0x01, X6, X4, X13
	VPCLMULQDQ $0x10, X6, X4, X5
	VPXOR X11, X8, X8
	VPXOR X12, X9, X9
	VPXOR X13, X10, X10
	VPXOR X5, X10, X10
	ADDQ $16, SI
	ADDQ $16, R10
	SUBQ $16, R8
	SUBQ $16, R9
	JMP  ghashBlock

ghashReduce:
	VPSLLDQ $8, X10, X11
	VPSRLDQ $8, X10, X12
	VPXOR X11, X8, X8
	VPXOR X12, X9, X9
	REDUCE(X8, X9, X14, X11)
	JMP  ghashGroup

ghashDone:
	VMOVDQU X14, 0(DX)
	VZEROUPPER
	RET

// func encryptBlock(ks *[176]byte, dst, src *[16]byte)
TEXT ·encryptBlock(SB), NOSPLIT, $0-24
	MOVQ ks+0(FP), AX
	MOVQ dst+8(FP), DI
	MOVQ src+16(FP), SI
	MOVOU 0(SI), X0
	MOVOU 0(AX), X1
	PXOR X1, X0
	MOVOU 16(AX), X1
	AESENC X1, X0
	MOVOU 32(AX), X1
	AESENC X1, X0
	MOVOU 48(AX), X1
	AESENC X1, X0
	MOVOU 64(AX), X1
	AESENC X1, X0
	MOVOU 80(AX), X1
	AESENC X1, X0
	MOVOU 96(AX), X1
	AESENC X1, X0
	MOVOU 112(AX), X1
	AESENC X1, X0
	MOVOU 128(AX), X1
	AESENC X1, X0
	MOVOU 144(AX), X1
	AESENC X1, X0
	MOVOU 160(AX), X1
	AESENCLAST X1, X0
	MOVOU X0, 0(DI)
	RET
