//go:build amd64 && !purego

// AES-128-GCM kernels with VAES and VPCLMULQDQ on ZMM registers (AVX-512).
//
// Representation (see vaesgcm.go): a GHASH block is byte-reversed when loaded,
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

// Counter offsets 1, 2, 3, 4: the first data block is J0+1.
DATA laneInc1<>+0x00(SB)/8, $1
DATA laneInc1<>+0x08(SB)/8, $0
DATA laneInc1<>+0x10(SB)/8, $2
DATA laneInc1<>+0x18(SB)/8, $0
DATA laneInc1<>+0x20(SB)/8, $3
DATA laneInc1<>+0x28(SB)/8, $0
DATA laneInc1<>+0x30(SB)/8, $4
DATA laneInc1<>+0x38(SB)/8, $0
GLOBL laneInc1<>(SB), RODATA|NOPTR, $64

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
// with the powers in Z28..Z31, added to the sums in Z8 (low), Z9 (high),
// Z10 (middle). The sums are zero after each reduction, except that a
// short additional data block's products wait in them for the first
// group of the text (see HASH_AD).
#define GHASH_MUL16 \
	GHASH_FIRST; \
	GHASH_ACC(Z5, Z29); \
	GHASH_ACC(Z6, Z30); \
	GHASH_ACC(Z7, Z31)

#define GHASH_FIRST GHASH_ACC(Z4, Z28)

// The products of X and H added to the sums in Z8, Z9, Z10.
#define GHASH_ACC(X, H) \
	VPCLMULQDQ $0x00, H, X, Z11; \
	VPCLMULQDQ $0x11, H, X, Z12; \
	VPXORQ Z11, Z8, Z8; \
	VPXORQ Z12, Z9, Z9; \
	VPCLMULQDQ $0x01, H, X, Z11; \
	VPCLMULQDQ $0x10, H, X, Z12; \
	VPTERNLOGQ $0x96, Z12, Z11, Z10

// Sum the lanes of the 256-bit products and reduce into X14 (which zeroes
// the upper lanes of Z14, so it xors into lane 0 only of the next input);
// the sums start again from zero.
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
	REDUCE(X8, X9, X14, X11); \
	VPXOR X8, X8, X8; \
	VPXOR X9, X9, X9; \
	VPXOR X10, X10, X10

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

// Registers of sealGCM and openGCM besides those of the bulk loops:
//   AX round keys, BX the power table (H^34 at 0 .. H^1 at 528, zeros
//   after), CX nonce, DX additional data, DI dst, SI src, R8 bytes of text
//   left, R9 bytes of additional data left, R10-R13 temporaries.
//   K1-K4 byte masks of the four registers of a tail (< 256 bytes).
//   In the tail: Z13 J0, then E(K, J0); Z15 and Z16 (free once the tail's
//   counters are made and xored with round key 0) carry two more products,
//   the running hash and the lengths block, with their powers. In the
//   additional data's hash Z0 and Z1 carry the running hash and its power.

// J0 = nonce || 1 into R (the byte order of the block).
#define LOAD_J0(R) \
	VMOVQ 0(CX), R; \
	VPINSRD $2, 8(CX), R, R; \
	MOVL $0x01000000, R10; \
	VPINSRD $3, R10, R, R

// K1-K4 = masks of the first LEN bytes (0..255) of 256, 64 bits per
// register: BZHI keeps all 64 bits for any count of 64 or more, and a
// count below zero is clamped to zero.
#define TAIL_MASKS(LEN) \
	MOVQ $-1, R11; \
	XORL R13, R13; \
	MOVQ LEN, R10; \
	BZHIQ R10, R11, R12; \
	KMOVQ R12, K1; \
	SUBQ $64, R10; \
	CMOVQLT R13, R10; \
	BZHIQ R10, R11, R12; \
	KMOVQ R12, K2; \
	SUBQ $64, R10; \
	CMOVQLT R13, R10; \
	BZHIQ R10, R11, R12; \
	KMOVQ R12, K3; \
	SUBQ $64, R10; \
	CMOVQLT R13, R10; \
	BZHIQ R10, R11, R12; \
	KMOVQ R12, K4

// Up to 255 bytes (LEN) at PTR, zero-padded, into A-D (masks K1-K4). The
// masked-off bytes are not read. Only the registers that hold some of
// the bytes are loaded: a masked-off byte cannot fault, but one in a page
// that is not present costs a microcode assist (hundreds of cycles) on
// every access, so no access reaches further than the register the data
// ends in.
#define LOAD_TAIL(PTR, LEN, A, B, C, D, DONE) \
	VPXORQ A, A, A; \
	VPXORQ B, B, B; \
	VPXORQ C, C, C; \
	VPXORQ D, D, D; \
	TESTQ LEN, LEN; \
	JZ    DONE; \
	VMOVDQU8.Z 0(PTR), K1, A; \
	CMPQ LEN, $64; \
	JBE  DONE; \
	VMOVDQU8.Z 64(PTR), K2, B; \
	CMPQ LEN, $128; \
	JBE  DONE; \
	VMOVDQU8.Z 128(PTR), K3, C; \
	CMPQ LEN, $192; \
	JBE  DONE; \
	VMOVDQU8.Z 192(PTR), K4, D; \
DONE:

// Z0-Z3 to the first LEN bytes at PTR (masks K1-K4), touching only the
// registers' worth of memory that holds some of them, as LOAD_TAIL.
#define STORE_TAIL(PTR, LEN, DONE) \
	TESTQ LEN, LEN; \
	JZ    DONE; \
	VMOVDQU8 Z0, K1, 0(PTR); \
	CMPQ LEN, $64; \
	JBE  DONE; \
	VMOVDQU8 Z1, K2, 64(PTR); \
	CMPQ LEN, $128; \
	JBE  DONE; \
	VMOVDQU8 Z2, K3, 128(PTR); \
	CMPQ LEN, $192; \
	JBE  DONE; \
	VMOVDQU8 Z3, K4, 192(PTR); \
DONE:

#define BSWAP_Z4_Z7 \
	VPSHUFB Z27, Z4, Z4; \
	VPSHUFB Z27, Z5, Z5; \
	VPSHUFB Z27, Z6, Z6; \
	VPSHUFB Z27, Z7, Z7

// The tail's work is sized to it: R registers of keystream (R = 0..4,
// the registers that hold some of its bytes) and as many of products, so
// that a short tail does not pay for sixteen blocks of AES and GHASH. The
// macros below come in one variant per R, named by it; the ones that
// drive them take the variant's macros as arguments.

// The tail's counter blocks into Z0.., and J0 into Z13, xored with round
// key 0.
#define CTR_T0 \
	LOAD_J0(X13); \
	VPXORQ Z16, Z13, Z13

#define CTR_T1 \
	VPSHUFB Z27, Z13, Z0; \
	VPXORQ Z16, Z0, Z0; \
	CTR_T0

#define CTR_T2 \
	VPSHUFB Z27, Z13, Z0; \
	VPADDD Z15, Z13, Z13; \
	VPSHUFB Z27, Z13, Z1; \
	VPXORQ Z16, Z0, Z0; \
	VPXORQ Z16, Z1, Z1; \
	CTR_T0

#define CTR_T3 \
	VPSHUFB Z27, Z13, Z0; \
	VPADDD Z15, Z13, Z13; \
	VPSHUFB Z27, Z13, Z1; \
	VPADDD Z15, Z13, Z13; \
	VPSHUFB Z27, Z13, Z2; \
	VPXORQ Z16, Z0, Z0; \
	VPXORQ Z16, Z1, Z1; \
	VPXORQ Z16, Z2, Z2; \
	CTR_T0

#define CTR_T4 \
	VPSHUFB Z27, Z13, Z0; \
	VPADDD Z15, Z13, Z13; \
	VPSHUFB Z27, Z13, Z1; \
	VPADDD Z15, Z13, Z13; \
	VPSHUFB Z27, Z13, Z2; \
	VPADDD Z15, Z13, Z13; \
	VPSHUFB Z27, Z13, Z3; \
	VPXORQ Z16, Z0, Z0; \
	VPXORQ Z16, Z1, Z1; \
	VPXORQ Z16, Z2, Z2; \
	VPXORQ Z16, Z3, Z3; \
	CTR_T0

// One AES round (K) on the tail's counters and J0.
#define AES_T0(K) VAESENC K, Z13, Z13
#define AES_T1(K) VAESENC K, Z0, Z0; AES_T0(K)
#define AES_T2(K) VAESENC K, Z1, Z1; AES_T1(K)
#define AES_T3(K) VAESENC K, Z2, Z2; AES_T2(K)
#define AES_T4(K) VAESENC K, Z3, Z3; AES_T3(K)

#define LAST_T0 VAESENCLAST Z26, Z13, Z13
#define LAST_T1 VAESENCLAST Z26, Z0, Z0; LAST_T0
#define LAST_T2 VAESENCLAST Z26, Z1, Z1; LAST_T1
#define LAST_T3 VAESENCLAST Z26, Z2, Z2; LAST_T2
#define LAST_T4 VAESENCLAST Z26, Z3, Z3; LAST_T3

// Steps of a hash, for the drivers: the products of one register with its
// powers. The tail's and the additional data's extra products (Z15 with
// Z16) come first, so that every variant has one to start the sums.
#define G_ACCX GHASH_ACC(Z15, Z16)
#define G_ACC4 GHASH_ACC(Z4, Z28)
#define G_ACC5 GHASH_ACC(Z5, Z29)
#define G_ACC6 GHASH_ACC(Z6, Z30)
#define G_ACC7 GHASH_ACC(Z7, Z31)
#define G_NONE

// The rest of the rounds after CTR_T*: the keystream into Z0.. and E(K, J0)
// into Z13.
#define TAIL_ROUNDS(ROUND, LAST) \
	ROUND(Z17); \
	ROUND(Z18); \
	ROUND(Z19); \
	ROUND(Z20); \
	ROUND(Z21); \
	ROUND(Z22); \
	ROUND(Z23); \
	ROUND(Z24); \
	ROUND(Z25); \
	LAST

// TAIL_ROUNDS with a hash of five steps (G1-G5) interleaved between the
// rounds and reduced into X14: independent work for the AES and the
// carry-less multiplication units.
#define TAIL_STITCHED(ROUND, LAST, G1, G2, G3, G4, G5, REDUCTION) \
	ROUND(Z17); \
	G1; \
	ROUND(Z18); \
	G2; \
	ROUND(Z19); \
	G3; \
	ROUND(Z20); \
	G4; \
	ROUND(Z21); \
	G5; \
	ROUND(Z22); \
	REDUCTION; \
	ROUND(Z23); \
	ROUND(Z24); \
	ROUND(Z25); \
	LAST

// Jumps to L0..L4 by the number of 64-byte registers that LEN bytes
// (0..255) occupy.
#define BY_REGISTERS(LEN, L0, L1, L2, L3, L4) \
	TESTQ LEN, LEN; \
	JZ    L0; \
	CMPQ  LEN, $64; \
	JBE   L1; \
	CMPQ  LEN, $128; \
	JBE   L2; \
	CMPQ  LEN, $192; \
	JBE   L3; \
	JMP   L4

// Powers H^16..H^1 into Z28-Z31 for the bulk loop.
#define LOAD_BULK_POWERS \
	VMOVDQU64 288(BX), Z28; \
	VMOVDQU64 352(BX), Z29; \
	VMOVDQU64 416(BX), Z30; \
	VMOVDQU64 480(BX), Z31

// Four registers of powers from P on into Z28-Z31 (256 bytes at P).
#define LOAD_POWERS(P) \
	VMOVDQU64 0(P), Z28; \
	VMOVDQU64 64(P), Z29; \
	VMOVDQU64 128(P), Z30; \
	VMOVDQU64 192(P), Z31

// Sets up a message: the byte reversal (Z27), the hash of the additional
// data (X14), the round keys (Z16-Z26), counters from J0+1 on (Z13, Z15),
// and the bulk loop's powers H^16..H^1 (Z28-Z31).
#define BEGIN(FINAL) \
	VBROADCASTI32X4 bswapMask<>(SB), Z27; \
	VPXOR X14, X14, X14; \
	HASH_AD(FINAL); \
	LOAD_KEYS(AX); \
	LOAD_J0(X12); \
	VPSHUFB X27, X12, X13; \
	VSHUFI64X2 $0, Z13, Z13, Z13; \
	VPADDD laneInc1<>(SB), Z13, Z13; \
	VBROADCASTI32X4 inc4<>(SB), Z15; \
	LOAD_BULK_POWERS

// The additional data. Up to 16 bytes (one block, A; pkg/dgram's header
// is 16) it is not reduced on its own: the products of A with the power
// that the text's first group will give it wait in the sums for that
// group's reduction, so that the text's hash does not wait for this one.
// The first group is the bulk loop's first sixteen blocks (H^17), unless
// the text is shorter than FINAL bytes: then it is the final group, all
// of the text's N blocks and the lengths block (H^(N+2)); FINAL is 256
// for Open and 512 for Seal, which hashes its last chunk with the tail. Longer, it is hashed sixteen
// blocks per reduction, then what is left (zero-padded, k blocks) with
// the running hash as one more product: block j times H^(k-j), the hash
// (Z15) times H^k (Z16).
#define HASH_AD(FINAL) \
	VPXOR X8, X8, X8; \
	VPXOR X9, X9, X9; \
	VPXOR X10, X10, X10; \
	CMPQ R9, $16; \
	JA   adLoop; \
	TESTQ R9, R9; \
	JZ    adDone; \
	MOVQ $-1, R11; \
	BZHIQ R9, R11, R12; \
	KMOVQ R12, K1; \
	VMOVDQU8.Z 0(DX), K1, X4; \
	VPSHUFB X27, X4, X4; \
	LEAQ 15(R8), R10; \
	ANDQ $-16, R10; \
	LEAQ 512(BX), R11; \
	SUBQ R10, R11; \
	LEAQ 272(BX), R12; \
	CMPQ R8, $FINAL; \
	CMOVQCC R12, R11; \
	VMOVDQU 0(R11), X5; \
	VPCLMULQDQ $0x00, X5, X4, X8; \
	VPCLMULQDQ $0x11, X5, X4, X9; \
	VPCLMULQDQ $0x01, X5, X4, X10; \
	VPCLMULQDQ $0x10, X5, X4, X11; \
	VPXOR X11, X10, X10; \
	JMP adDone; \
adLoop: \
	CMPQ R9, $256; \
	JB   adTail; \
	VMOVDQU64 0(DX), Z4; \
	VMOVDQU64 64(DX), Z5; \
	VMOVDQU64 128(DX), Z6; \
	VMOVDQU64 192(DX), Z7; \
	BSWAP_Z4_Z7; \
	VPXORQ Z14, Z4, Z4; \
	LOAD_BULK_POWERS; \
	GHASH_MUL16; \
	GHASH_REDUCE; \
	ADDQ $256, DX; \
	SUBQ $256, R9; \
	JMP  adLoop; \
adTail: \
	TESTQ R9, R9; \
	JZ    adDone; \
	TAIL_MASKS(R9); \
	LOAD_TAIL(DX, R9, Z4, Z5, Z6, Z7, adLoaded); \
	BSWAP_Z4_Z7; \
	LEAQ 15(R9), R10; \
	ANDQ $-16, R10; \
	LEAQ 544(BX), R11; \
	SUBQ R10, R11; \
	VMOVDQA64 Z14, Z15; \
	VMOVDQU64 0(R11), X16; \
	LOAD_POWERS(R11); \
	BY_REGISTERS(R9, adDone, ad1, ad2, ad3, ad4); \
ad1: \
	AD_HASH(G_NONE, G_NONE, G_NONE); \
ad2: \
	AD_HASH(G_ACC5, G_NONE, G_NONE); \
ad3: \
	AD_HASH(G_ACC5, G_ACC6, G_NONE); \
ad4: \
	AD_HASH(G_ACC5, G_ACC6, G_ACC7); \
adDone:

#define AD_HASH(G2, G3, G4) \
	G_ACCX; \
	G_ACC4; \
	G2; \
	G3; \
	G4; \
	GHASH_REDUCE; \
	JMP adDone

// For the text's tail of m blocks (Z4-Z7, byte-reversed): the powers
// H^(m+1)..H^2 of its blocks into Z28-Z31, and the running hash and the
// lengths block into Z15 with their powers H^(m+1) and H^1 into Z16.
#define TAIL_HASH_SETUP \
	LEAQ 15(R8), R10; \
	ANDQ $-16, R10; \
	LEAQ 528(BX), R11; \
	SUBQ R10, R11; \
	LOAD_POWERS(R11); \
	MOVQ n+32(FP), R10; \
	SHLQ $3, R10; \
	VMOVQ R10, X15; \
	MOVQ adLen+56(FP), R10; \
	SHLQ $3, R10; \
	VPINSRQ $1, R10, X15, X15; \
	VINSERTI32X4 $1, X15, Z14, Z15; \
	VMOVDQU64 0(R11), X16; \
	VINSERTI32X4 $1, 528(BX), Z16, Z16

// The tag from the hash in X14: byte order restored, E(K, J0) (Z13)
// xored in.
#define TAG \
	VPSHUFB X27, X14, X14; \
	VPXOR X13, X14, X14

#define LOAD_ARGS \
	MOVQ ks+0(FP), AX; \
	MOVQ htab+8(FP), BX; \
	MOVQ dst+16(FP), DI; \
	MOVQ src+24(FP), SI; \
	MOVQ n+32(FP), R8; \
	MOVQ nonce+40(FP), CX; \
	MOVQ ad+48(FP), DX; \
	MOVQ adLen+56(FP), R9

// The end of sealGCM for a tail in R registers (CTR, ROUND, LAST of
// variant R; H1-H4 hash its registers): LASTL after the bulk loop, with
// the last chunk hashed between the rounds; SHORTL when there was none.
#define SEAL_TAIL(CTR, ROUND, LAST, H1, H2, H3, H4, LASTL, SHORTL, TAILL, LOADED, STORED) \
LASTL: \
	CTR; \
	TAIL_STITCHED(ROUND, LAST, G_ACC4, G_ACC5, G_ACC6, G_ACC7, G_NONE, G_NONE); \
	JMP TAILL; \
SHORTL: \
	CTR; \
	TAIL_ROUNDS(ROUND, LAST); \
TAILL: \
	LOAD_TAIL(SI, R8, Z4, Z5, Z6, Z7, LOADED); \
	VMOVDQU8.Z Z0, K1, Z0; \
	VMOVDQU8.Z Z1, K2, Z1; \
	VMOVDQU8.Z Z2, K3, Z2; \
	VMOVDQU8.Z Z3, K4, Z3; \
	VPXORQ Z4, Z0, Z0; \
	VPXORQ Z5, Z1, Z1; \
	VPXORQ Z6, Z2, Z2; \
	VPXORQ Z7, Z3, Z3; \
	STORE_TAIL(DI, R8, STORED); \
	VPSHUFB Z27, Z0, Z4; \
	VPSHUFB Z27, Z1, Z5; \
	VPSHUFB Z27, Z2, Z6; \
	VPSHUFB Z27, Z3, Z7; \
	TAIL_HASH_SETUP; \
	G_ACCX; \
	H1; \
	H2; \
	H3; \
	H4; \
	GHASH_REDUCE; \
	TAG; \
	VMOVDQU X14, 0(DI)(R8*1); \
	VZEROUPPER; \
	RET

// The tail of openGCM in R registers: its keystream with its hash (H1-H4,
// and the extra products) between the rounds.
#define OPEN_TAIL(CTR, ROUND, LAST, H1, H2, H3, H4, L) \
L: \
	CTR; \
	TAIL_HASH_SETUP; \
	TAIL_STITCHED(ROUND, LAST, G_ACCX, H1, H2, H3, H4, GHASH_REDUCE); \
	JMP openFinish

// func sealGCM(ks *[176]byte, htab *[50][16]byte, dst, src *byte, n int, nonce, ad *byte, adLen int)
// Seals n bytes at src into dst, the tag after them, all of GCM in one
// call: the additional data's hash, the bulk loop, the tail with masked
// loads and stores, the lengths block and the tag. dst may equal src. The
// bulk loop is pipelined: it hashes the previous sixteen blocks of
// ciphertext (kept byte-reversed in Z4-Z7) while it encrypts the next
// sixteen, so that the hash chain does not wait for the AES rounds; the
// last sixteen are multiplied while the tail's keystream is made, and
// their products reduced together with the tail's and the lengths
// block's (powers H^(m+17)..H^1 for a tail of m blocks).
TEXT ·sealGCM(SB), NOSPLIT, $0-64
	LOAD_ARGS
	BEGIN(512)
	TAIL_MASKS(R8)
	CMPQ R8, $256
	JB   sealShort
	CTR16
	SEAL_STORE
	PCALIGN $64

sealLoop:
	CMPQ R8, $256
	JB   sealLast
	VPXORQ Z14, Z4, Z4
	STITCHED
	SEAL_STORE
	JMP  sealLoop

sealLast:
	TAIL_MASKS(R8)
	VPXORQ Z14, Z4, Z4
	VPXOR X14, X14, X14
	LEAQ 15(R8), R10
	ANDQ $-16, R10
	LEAQ 272(BX), R11
	SUBQ R10, R11
	LOAD_POWERS(R11)
	BY_REGISTERS(R8, sealLast0, sealLast1, sealLast2, sealLast3, sealLast4)

sealShort:
	BY_REGISTERS(R8, sealShort0, sealShort1, sealShort2, sealShort3, sealShort4)
	SEAL_TAIL(CTR_T0, AES_T0, LAST_T0, G_NONE, G_NONE, G_NONE, G_NONE, sealLast0, sealShort0, sealTail0, sealLoaded0, sealStored0)
	SEAL_TAIL(CTR_T1, AES_T1, LAST_T1, G_ACC4, G_NONE, G_NONE, G_NONE, sealLast1, sealShort1, sealTail1, sealLoaded1, sealStored1)
	SEAL_TAIL(CTR_T2, AES_T2, LAST_T2, G_ACC4, G_ACC5, G_NONE, G_NONE, sealLast2, sealShort2, sealTail2, sealLoaded2, sealStored2)
	SEAL_TAIL(CTR_T3, AES_T3, LAST_T3, G_ACC4, G_ACC5, G_ACC6, G_NONE, sealLast3, sealShort3, sealTail3, sealLoaded3, sealStored3)
	SEAL_TAIL(CTR_T4, AES_T4, LAST_T4, G_ACC4, G_ACC5, G_ACC6, G_ACC7, sealLast4, sealShort4, sealTail4, sealLoaded4, sealStored4)

// func openGCM(ks *[176]byte, htab *[50][16]byte, dst, src *byte, n int, nonce, ad *byte, adLen int) bool
// Hashes and decrypts n bytes at src into dst and reports whether the tag
// after them at src matches, in constant time. dst may equal src. The
// plaintext is written whatever the outcome: the caller wipes it when the
// tag does not match. The tail is hashed while its keystream is made.
TEXT ·openGCM(SB), NOSPLIT, $0-65
	LOAD_ARGS
	BEGIN(256)
	PCALIGN $64

openLoop:
	CMPQ R8, $256
	JB   openTail
	VMOVDQU64 0(SI), Z4
	VMOVDQU64 64(SI), Z5
	VMOVDQU64 128(SI), Z6
	VMOVDQU64 192(SI), Z7
	BSWAP_Z4_Z7
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

openTail:
	TAIL_MASKS(R8)
	LOAD_TAIL(SI, R8, Z4, Z5, Z6, Z7, openLoaded)
	BSWAP_Z4_Z7
	BY_REGISTERS(R8, openTail0, openTail1, openTail2, openTail3, openTail4)
	OPEN_TAIL(CTR_T0, AES_T0, LAST_T0, G_NONE, G_NONE, G_NONE, G_NONE, openTail0)
	OPEN_TAIL(CTR_T1, AES_T1, LAST_T1, G_ACC4, G_NONE, G_NONE, G_NONE, openTail1)
	OPEN_TAIL(CTR_T2, AES_T2, LAST_T2, G_ACC4, G_ACC5, G_NONE, G_NONE, openTail2)
	OPEN_TAIL(CTR_T3, AES_T3, LAST_T3, G_ACC4, G_ACC5, G_ACC6, G_NONE, openTail3)
	OPEN_TAIL(CTR_T4, AES_T4, LAST_T4, G_ACC4, G_ACC5, G_ACC6, G_ACC7, openTail4)

openFinish:
	LOAD_TAIL(SI, R8, Z8, Z9, Z10, Z11, openReloaded)
	VPXORQ Z8, Z0, Z0
	VPXORQ Z9, Z1, Z1
	VPXORQ Z10, Z2, Z2
	VPXORQ Z11, Z3, Z3
	STORE_TAIL(DI, R8, openStored)
	TAG
	VPXOR 0(SI)(R8*1), X14, X14
	VPTEST X14, X14
	SETEQ ret+64(FP)
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
