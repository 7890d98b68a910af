//go:build !amd64 || purego

package vaesgcm

// Without the amd64 assembly Supported is false and New fails, so these
// are never reached.
const hasVAES = false

func sealGCM(ks *[176]byte, htab *[50][16]byte, dst, src *byte, n int, nonce, ad *byte, adLen int) {
	panic("vaesgcm: no assembly on this platform")
}

func openGCM(ks *[176]byte, htab *[50][16]byte, dst, src *byte, n int, nonce, ad *byte, adLen int) bool {
	panic("vaesgcm: no assembly on this platform")
}

func keystream(ks *[176]byte, ctr *[16]byte, out *[256]byte) {
	panic("vaesgcm: no assembly on this platform")
}

func encryptBlock(ks *[176]byte, dst, src *[16]byte) {
	panic("vaesgcm: no assembly on this platform")
}
