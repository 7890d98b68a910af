package vaesgcm

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/unix"
)

// The tail is read and written with masked loads and stores of whole
// 64-byte registers: the bytes past the record must be neither touched
// nor able to fault. Records, additional data and dst end right before a
// page that is mapped with no access, at every tail length.
func TestRecordsEndingAtAnUnmappedPage(t *testing.T) {
	requireAsm(t)
	page := unix.Getpagesize()
	mem, err := unix.Mmap(-1, 0, 4*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer unix.Munmap(mem)
	// Pages 1 and 3 are the guards; page 0 holds the input, page 2 the
	// output.
	for _, g := range []int{1, 3} {
		if err := unix.Mprotect(mem[g*page:(g+1)*page], unix.PROT_NONE); err != nil {
			t.Fatalf("mprotect: %v", err)
		}
	}
	in, out := mem[:page], mem[2*page:3*page]
	rng := rand.New(rand.NewPCG(13, 14))
	for _, n := range []int{0, 1, 15, 16, 17, 63, 64, 65, 200, 255, 256, 257, 511, 1420} {
		for _, adLen := range []int{0, 1, 16, 17, 255, 300} {
			v, s := newPair(t, randBytes(rng, 16))
			nonce := randBytes(rng, 12)
			pt, ad := randBytes(rng, n), randBytes(rng, adLen)
			want := s.Seal(nil, nonce, pt, ad)

			// The text at the end of the input page, the additional data
			// before it; the sealed record at the end of the output page.
			src := in[page-n:]
			copy(src, pt)
			adAt := in[page-n-adLen : page-n]
			copy(adAt, ad)
			dst := out[page-n-tagSize : page-n-tagSize]
			got := v.Seal(dst, nonce, src, adAt)
			if !bytes.Equal(got, want) {
				t.Fatalf("len %d ad %d: Seal at a page end differs", n, adLen)
			}
			// Open the record where it lies (ending at the guard page), in
			// place and into the input page's end.
			back, err := v.Open(in[page-n:page-n], nonce, got, adAt)
			if err != nil || !bytes.Equal(back, pt) {
				t.Fatalf("len %d ad %d: Open at a page end: %v", n, adLen, err)
			}
			back, err = v.Open(got[:0], nonce, got, adAt)
			if err != nil || !bytes.Equal(back, pt) {
				t.Fatalf("len %d ad %d: in-place Open at a page end: %v", n, adLen, err)
			}
		}
	}
}
