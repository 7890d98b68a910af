package vaesgcm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"testing"
)

// FuzzVAESGCM compares the assembly with crypto/cipher's AES-GCM on any
// key, nonce, AAD and text: Seal (separate and in place) must give the same
// bytes, Open must give back the text, text taken as a forged ciphertext
// must be rejected (or accepted) by both alike, and a flipped bit of the
// sealed record must be rejected with no plaintext left in dst.
func FuzzVAESGCM(f *testing.F) {
	f.Add([]byte("0123456789abcdef"), []byte("nonce-12byte"), []byte("hdr4"), []byte("hello, tunnel"), uint32(3))
	f.Add(make([]byte, 16), make([]byte, 12), []byte{}, make([]byte, 256), uint32(0))
	f.Add([]byte{0xff, 1, 2}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, make([]byte, 13), bytes.Repeat([]byte{0xa5}, 1420), uint32(1419))
	f.Fuzz(func(t *testing.T, key, nonce, ad, text []byte, flip uint32) {
		requireAsm(t)
		var k [16]byte
		copy(k[:], key)
		var n [12]byte
		copy(n[:], nonce)
		v, err := New(k[:])
		if err != nil {
			t.Fatal(err)
		}
		b, _ := aes.NewCipher(k[:])
		s, _ := cipher.NewGCM(b)

		want := s.Seal(nil, n[:], text, ad)
		if got := v.Seal(nil, n[:], text, ad); !bytes.Equal(got, want) {
			t.Fatalf("Seal differs from crypto/cipher\n got %x\nwant %x", got, want)
		}
		buf := make([]byte, len(text), len(text)+tagSize)
		copy(buf, text)
		if got := v.Seal(buf[:0], n[:], buf, ad); !bytes.Equal(got, want) {
			t.Fatalf("in-place Seal differs from crypto/cipher")
		}

		sealed := append([]byte(nil), want...)
		back, err := v.Open(sealed[:0], n[:], sealed, ad)
		if err != nil || !bytes.Equal(back, text) {
			t.Fatalf("in-place Open of crypto/cipher's record: %v", err)
		}

		// text as a forged record.
		vOut, vErr := v.Open(nil, n[:], text, ad)
		sOut, sErr := s.Open(nil, n[:], text, ad)
		if (vErr == nil) != (sErr == nil) || !bytes.Equal(vOut, sOut) {
			t.Fatalf("Open of a forged record: vaes %v, crypto/cipher %v", vErr, sErr)
		}

		bad := append([]byte(nil), want...)
		i := int(flip % uint32(len(bad)))
		bad[i] ^= 1 << (flip >> 29)
		out, err := v.Open(bad[:0], n[:], bad, ad)
		if err == nil || out != nil {
			t.Fatalf("Open accepted a record with byte %d changed", i)
		}
		if m := len(bad) - tagSize; !bytes.Equal(bad[:m], make([]byte, m)) {
			t.Fatalf("rejected in-place Open left data in dst")
		}
	})
}
