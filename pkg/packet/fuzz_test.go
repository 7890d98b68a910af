package packet

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzFrame runs what the forwarders do with a frame from a peer (a
// virtio-net header and an IP packet): decode and validate the header, read
// the addresses and length, and, when the header is valid, finish the
// offload in user space as the plain path does. Nothing may panic, and every
// packet Segment emits from a parsable one must carry its addresses and fit
// the scratch buffer.
func FuzzFrame(f *testing.F) {
	plain := func(p []byte) []byte { return append(make([]byte, VnetHdrLen), p...) }
	withHdr := func(h VnetHdr, p []byte) []byte {
		b := make([]byte, VnetHdrLen, VnetHdrLen+len(p))
		h.Encode(b)
		return append(b, p...)
	}
	tcp4 := tcpPacket(false, make([]byte, 3000), 0x18, 1)
	tcp6 := tcpPacket(true, make([]byte, 3000), 0x18, 1)
	f.Add(plain(tcp4))
	f.Add(plain(tcp6))
	f.Add(withHdr(VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}, tcp4))
	f.Add(withHdr(VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv6, HdrLen: 60, GSOSize: 1200, CsumStart: 40, CsumOffset: 16}, tcp6))
	f.Add(withHdr(VnetHdr{Flags: VnetNeedsCsum, CsumStart: 20, CsumOffset: 16}, tcp4))
	f.Add(withHdr(VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOUDPL4, GSOSize: 100, CsumStart: 20, CsumOffset: 6},
		udp4(make([]byte, 1000))))
	f.Add(withHdr(VnetHdr{Flags: VnetNeedsCsum, CsumStart: 20, CsumOffset: 6}, udp4(make([]byte, 300))))
	f.Add([]byte{})
	f.Add(plain([]byte{0x45}))
	f.Add(plain([]byte{0x60}))
	scratch := make([]byte, MaxIP)
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > MaxSize {
			return // the record layer never hands over more
		}
		if len(frame) <= VnetHdrLen {
			return // the forwarders drop these before parsing
		}
		h := DecodeVnetHdr(frame)
		pkt := frame[VnetHdrLen:]
		src, dst, aerr := Addrs(pkt)
		_, _ = TotalLen(pkt)
		if d, err := Dst(pkt); (err == nil) != (aerr == nil) || d != dst {
			t.Fatalf("Dst %v %v, Addrs %v %v", d, err, dst, aerr)
		}
		if aerr == nil && (!src.IsValid() || !dst.IsValid()) {
			t.Fatal("Addrs returned no error and invalid addresses")
		}
		verr := h.Validate(pkt)
		var enc [VnetHdrLen]byte
		h.Encode(enc[:])
		if DecodeVnetHdr(enc[:]) != h {
			t.Fatal("header does not survive encode/decode")
		}
		n := 0
		var segs [][]byte
		err := Segment(h, pkt, scratch, func(seg []byte) error {
			n++
			segs = append(segs, bytes.Clone(seg))
			if len(seg) > MaxIP {
				t.Fatalf("segment of %d bytes", len(seg))
			}
			if aerr != nil {
				// Only a plain packet passes unparsed (the forwarders
				// have refused it already); it must pass unchanged.
				if !h.Plain() || len(seg) != len(pkt) {
					t.Fatalf("unparsable packet segmented: %v", h)
				}
				return nil
			}
			s, d, err := Addrs(seg)
			if err != nil || s != src || d != dst {
				t.Fatalf("segment %d: %v %v %v, packet %v %v", n, s, d, err, src, dst)
			}
			return nil
		})
		if verr != nil && err == nil {
			t.Fatalf("Segment accepted what Validate refuses: %v", verr)
		}
		if err == nil && n == 0 && h.GSOType&^GSOECN == GSONone {
			t.Fatal("a non-GSO packet emitted nothing")
		}
		// The udp transport's cut (in place, TCP checksums left partial)
		// gives the same packets once a partial checksum is completed.
		var g Segmenter
		perr := g.StartPartial(h, bytes.Clone(pkt))
		if (perr == nil) != (err == nil) {
			t.Fatalf("Segment: %v, SegmentPartial: %v", err, perr)
		}
		if err != nil {
			return
		}
		if g.Len() != len(segs) {
			t.Fatalf("Len %d, Segment gave %d", g.Len(), len(segs))
		}
		i := 0
		for p, partial, ok := g.Next(); ok; p, partial, ok = g.Next() {
			if partial {
				ipLen, _, _ := ipHeader(p)
				binary.BigEndian.PutUint16(p[ipLen+16:], ^Fold(Sum(p[ipLen:], 0)))
			}
			if !bytes.Equal(p, segs[i]) {
				t.Fatalf("packet %d (partial %v):\n got %x\nwant %x", i, partial, p, segs[i])
			}
			i++
		}
	})
}

func udp4(payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0], p[8], p[9] = 0x45, 64, protoUDP
	p[2], p[3] = byte(len(p)>>8), byte(len(p))
	s, d := netip.MustParseAddr("100.64.240.2").As4(), netip.MustParseAddr("10.244.1.20").As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	p[24], p[25] = byte((8+len(payload))>>8), byte(8+len(payload))
	copy(p[28:], payload)
	return p
}
