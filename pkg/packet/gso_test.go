package packet

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// tcpPacket builds an IPv4 or IPv6 TCP packet with a full checksum.
func tcpPacket(v6 bool, payload []byte, flags byte, seq uint32) []byte {
	ipLen := 20
	if v6 {
		ipLen = 40
	}
	p := make([]byte, ipLen+20+len(payload))
	if v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(20+len(payload)))
		p[6], p[7] = protoTCP, 64
		s, d := netip.MustParseAddr("fd00::2").As16(), netip.MustParseAddr("fd00::1:20").As16()
		copy(p[8:], s[:])
		copy(p[24:], d[:])
	} else {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], 1000)
		p[8], p[9] = 64, protoTCP
		s, d := netip.MustParseAddr("100.64.240.2").As4(), netip.MustParseAddr("10.244.1.20").As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		binary.BigEndian.PutUint16(p[10:], ^Fold(Sum(p[:20], 0)))
	}
	th := p[ipLen:]
	binary.BigEndian.PutUint16(th[0:], 40000)
	binary.BigEndian.PutUint16(th[2:], 8080)
	binary.BigEndian.PutUint32(th[4:], seq)
	th[12] = 5 << 4
	th[13] = flags
	binary.BigEndian.PutUint16(th[14:], 65535)
	copy(th[20:], payload)
	binary.BigEndian.PutUint16(th[16:], ^Fold(Sum(th, pseudoHeader(p, !v6, protoTCP, len(th)))))
	return p
}

func validTCP(t *testing.T, p []byte) {
	t.Helper()
	ipLen := 40
	v4 := p[0]>>4 == 4
	if v4 {
		ipLen = 20
		if Fold(Sum(p[:20], 0)) != 0xffff {
			t.Fatal("bad IPv4 header checksum")
		}
		if int(binary.BigEndian.Uint16(p[2:])) != len(p) {
			t.Fatal("bad IPv4 total length")
		}
	} else if int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
		t.Fatal("bad IPv6 payload length")
	}
	if Fold(Sum(p[ipLen:], pseudoHeader(p, v4, protoTCP, len(p)-ipLen))) != 0xffff {
		t.Fatal("bad TCP checksum")
	}
}

func TestSegmentTCP(t *testing.T) {
	payload := make([]byte, 5000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	for _, v6 := range []bool{false, true} {
		const psh, fin, ack = 0x08, 0x01, 0x10
		pkt := tcpPacket(v6, payload, psh|fin|ack, 7777)
		ipLen, gso := 20, uint8(GSOTCPv4)
		if v6 {
			ipLen, gso = 40, GSOTCPv6
		}
		h := VnetHdr{Flags: VnetNeedsCsum, GSOType: gso, HdrLen: uint16(ipLen + 20), GSOSize: 1400, CsumStart: uint16(ipLen), CsumOffset: 16}
		var got []byte
		var segs int
		scratch := make([]byte, 65535)
		err := Segment(h, pkt, scratch, func(seg []byte) error {
			validTCP(t, seg)
			if len(seg) > ipLen+20+1400 {
				t.Fatalf("segment of %d bytes", len(seg))
			}
			seq := binary.BigEndian.Uint32(seg[ipLen+4:])
			if seq != 7777+uint32(len(got)) {
				t.Fatalf("segment %d seq %d", segs, seq)
			}
			last := len(got)+len(seg)-ipLen-20 == len(payload)
			if f := seg[ipLen+13]; (f&(psh|fin) != 0) != last || f&ack == 0 {
				t.Fatalf("segment %d flags %#x (last %v)", segs, f, last)
			}
			if !v6 && binary.BigEndian.Uint16(seg[4:]) != 1000+uint16(segs) {
				t.Fatalf("segment %d IP ID %d", segs, binary.BigEndian.Uint16(seg[4:]))
			}
			got = append(got, seg[ipLen+20:]...)
			segs++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if segs != 4 || !bytes.Equal(got, payload) {
			t.Fatalf("v6=%v: %d segments, payload equal %v", v6, segs, bytes.Equal(got, payload))
		}
	}
}

func TestSegmentCompletesPartialChecksum(t *testing.T) {
	full := tcpPacket(false, []byte("partial checksum payload"), 0x18, 1)
	partial := bytes.Clone(full)
	// What the kernel hands over with NEEDS_CSUM: the pseudo-header sum only.
	binary.BigEndian.PutUint16(partial[36:], Fold(pseudoHeader(partial, true, protoTCP, len(partial)-20)))
	h := VnetHdr{Flags: VnetNeedsCsum, CsumStart: 20, CsumOffset: 16}
	var out []byte
	if err := Segment(h, partial, make([]byte, 65535), func(p []byte) error { out = bytes.Clone(p); return nil }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, full) {
		t.Fatalf("checksum not completed: got %x want %x", out[36:38], full[36:38])
	}
}

func TestVnetHdrValidate(t *testing.T) {
	pkt := tcpPacket(false, make([]byte, 3000), 0x10, 1)
	good := VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1400, CsumStart: 20, CsumOffset: 16}
	if err := good.Validate(pkt); err != nil {
		t.Fatal(err)
	}
	bad := []VnetHdr{
		{Flags: 0x80},
		{Flags: VnetNeedsCsum, CsumStart: 60000, CsumOffset: 16},
		{GSOType: GSOTCPv4, GSOSize: 1400, Flags: VnetNeedsCsum, CsumStart: 20, CsumOffset: 16, HdrLen: 40}, // ok, mutated below
		{Flags: VnetNeedsCsum, GSOType: GSOTCPv6, GSOSize: 1400, CsumStart: 20, CsumOffset: 16},
		{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, GSOSize: 0, CsumStart: 20, CsumOffset: 16},
		{Flags: VnetNeedsCsum, GSOType: 9, GSOSize: 1400, CsumStart: 20, CsumOffset: 16},
		{GSOType: GSOECN},
	}
	bad[2].CsumStart = 24
	for i, h := range bad {
		if err := h.Validate(pkt); err == nil {
			t.Errorf("case %d: %+v accepted", i, h)
		}
	}
	var b [VnetHdrLen]byte
	good.Encode(b[:])
	if DecodeVnetHdr(b[:]) != good {
		t.Fatal("encode/decode mismatch")
	}
}

func BenchmarkSegment64K(b *testing.B) {
	pkt := tcpPacket(false, make([]byte, 65535-40), 0x10, 1)
	h := VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1360, CsumStart: 20, CsumOffset: 16}
	scratch := make([]byte, 65535)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	emit := func([]byte) error { return nil }
	for b.Loop() {
		if err := Segment(h, pkt, scratch, emit); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSegmentPartial64K is the udp transport's cut: in place, TCP
// checksums left partial (the payload is not read).
func BenchmarkSegmentPartial64K(b *testing.B) {
	orig := tcpPacket(false, make([]byte, 63_000), 0x10, 1)
	pkt := bytes.Clone(orig)
	h := VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1360, CsumStart: 20, CsumOffset: 16}
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	n := 0
	emit := func([]byte, bool) error { n++; return nil }
	for b.Loop() {
		copy(pkt[:40], orig) // the headers: the rest is overwritten by the cut, and not read
		if err := SegmentPartial(h, pkt, emit); err != nil {
			b.Fatal(err)
		}
	}
	if n%47 != 0 {
		b.Fatalf("%d segments", n)
	}
}

// Sum adds 32-bit words; the sum folded to 16 bits is the 16-bit word
// sum's, for every length and start value.
func TestSumMatchesWordSum(t *testing.T) {
	b := make([]byte, 2000)
	for i := range b {
		b[i] = byte(i*131 + i>>3)
	}
	for _, s0 := range []uint32{0, 1, 0xffff, 0x1fffe} {
		for n := 0; n <= len(b); n += 1 + n/7 {
			want := uint64(s0)
			p := b[:n]
			for len(p) >= 2 {
				want += uint64(binary.BigEndian.Uint16(p))
				p = p[2:]
			}
			if len(p) == 1 {
				want += uint64(p[0]) << 8
			}
			for want > 0xffff {
				want = want>>16 + want&0xffff
			}
			if got := Fold(Sum(b[:n], s0)); uint64(got) != want {
				t.Fatalf("len %d start %#x: %#x, want %#x", n, s0, got, want)
			}
		}
	}
	all := bytes.Repeat([]byte{0xff}, 65534) // a nonzero multiple of 0xffff folds to 0xffff, never 0
	if got := Fold(Sum(all, 0xffff)); got != 0xffff {
		t.Fatalf("all ones: %#x", got)
	}
}

func BenchmarkSum1400(b *testing.B) {
	p := make([]byte, 1400)
	b.SetBytes(1400)
	for b.Loop() {
		Sum(p, 0)
	}
}

// refSegment is the cut by the book, each segment's headers and checksums
// computed whole: what Segment and SegmentPartial must give, byte for
// byte (SegmentPartial's once its partial TCP checksums are completed).
func refSegment(h VnetHdr, pkt []byte) [][]byte {
	ipLen, proto, _ := ipHeader(pkt)
	is4 := pkt[0]>>4 == 4
	thLen := 8
	if proto == protoTCP {
		thLen = int(pkt[ipLen+12]>>4) * 4
	}
	hdrLen, mss := ipLen+thLen, int(h.GSOSize)
	var out [][]byte
	for i, off := 0, hdrLen; off < len(pkt); i, off = i+1, off+mss {
		end := min(off+mss, len(pkt))
		seg := append(bytes.Clone(pkt[:hdrLen]), pkt[off:end]...)
		n := len(seg)
		if is4 {
			binary.BigEndian.PutUint16(seg[2:], uint16(n))
			binary.BigEndian.PutUint16(seg[4:], binary.BigEndian.Uint16(pkt[4:])+uint16(i))
			seg[10], seg[11] = 0, 0
			binary.BigEndian.PutUint16(seg[10:], ^Fold(Sum(seg[:ipLen], 0)))
		} else {
			binary.BigEndian.PutUint16(seg[4:], uint16(n-40))
		}
		th := seg[ipLen:]
		at := 6
		if proto == protoTCP {
			binary.BigEndian.PutUint32(th[4:], binary.BigEndian.Uint32(pkt[ipLen+4:])+uint32(off-hdrLen))
			if end != len(pkt) {
				th[13] &^= 0x01 | 0x08
			}
			if i > 0 {
				th[13] &^= 0x80
			}
			at = 16
		} else {
			binary.BigEndian.PutUint16(th[4:], uint16(n-ipLen))
		}
		th[at], th[at+1] = 0, 0
		c := ^Fold(Sum(th, pseudoHeader(seg, is4, proto, n-ipLen)))
		if c == 0 && proto == protoUDP {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(th[at:], c)
		out = append(out, seg)
	}
	return out
}

// offloaded builds a GSO super-packet as a TUN hands it over: IPv4 (with
// ipOpts bytes of options) or IPv6, TCP (with tcpOpts bytes of options)
// or UDP, and in the checksum field the pseudo-header's sum alone.
func offloaded(v6, udp bool, ipOpts, tcpOpts int, payload []byte, mss int, id uint16, seq uint32, flags byte) (VnetHdr, []byte) {
	ipLen := 20 + ipOpts
	if v6 {
		ipLen = 40
	}
	thLen, proto := 20+tcpOpts, byte(protoTCP)
	if udp {
		thLen, proto = 8, protoUDP
	}
	p := make([]byte, ipLen+thLen+len(payload))
	if v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		p[6], p[7] = proto, 64
		copy(p[8:], netip.MustParseAddr("fd00::2").AsSlice())
		copy(p[24:], netip.MustParseAddr("fd00::ffff:1:20").AsSlice())
	} else {
		p[0] = 0x40 | byte(ipLen/4)
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], id)
		p[6] = 0x40
		p[8], p[9] = 64, proto
		copy(p[12:], netip.MustParseAddr("100.64.240.2").AsSlice())
		copy(p[16:], netip.MustParseAddr("10.244.255.254").AsSlice())
		for i := 20; i < ipLen; i++ {
			p[i] = 1 // NOP options
		}
		binary.BigEndian.PutUint16(p[10:], ^Fold(Sum(p[:ipLen], 0)))
	}
	th := p[ipLen:]
	binary.BigEndian.PutUint16(th, 40000)
	binary.BigEndian.PutUint16(th[2:], 8080)
	h := VnetHdr{Flags: VnetNeedsCsum, GSOSize: uint16(mss), CsumStart: uint16(ipLen)}
	if udp {
		binary.BigEndian.PutUint16(th[4:], uint16(len(th)))
		h.GSOType, h.CsumOffset = GSOUDPL4, 6
	} else {
		binary.BigEndian.PutUint32(th[4:], seq)
		th[12], th[13] = byte(thLen/4)<<4, flags
		binary.BigEndian.PutUint16(th[14:], 65535)
		for i := 20; i < thLen; i++ {
			th[i] = 1
		}
		h.GSOType, h.CsumOffset = GSOTCPv4, 16
		if v6 {
			h.GSOType = GSOTCPv6
		}
	}
	h.HdrLen = uint16(ipLen + thLen)
	copy(p[ipLen+thLen:], payload)
	binary.BigEndian.PutUint16(th[h.CsumOffset:], Fold(pseudoHeader(p, !v6, proto, len(th))))
	return h, p
}

// Segment, and SegmentPartial (in place, sums of the headers taken once
// and added to per segment) cut as the book does, byte for byte, whatever
// the headers' options, the IP ID's and sequence number's wrap, the flags
// and the last segment's length; Segmenter.Len says how many come.
func TestSegmentersMatchTheBook(t *testing.T) {
	payload := make([]byte, 9001)
	for i := range payload {
		payload[i] = byte(i*31 + i>>8)
	}
	const fin, psh, ack, cwr, ece = 0x01, 0x08, 0x10, 0x80, 0x40
	for _, c := range []struct {
		v6, udp         bool
		ipOpts, tcpOpts int
		mss, n          int
		id              uint16
		seq             uint32
		flags           byte
	}{
		{false, false, 0, 0, 1360, 9001, 1000, 1, ack | psh},
		{false, false, 0, 12, 1348, 9001, 0xfffe, 0xffff_f000, ack | psh | fin | cwr | ece},
		{false, false, 40, 40, 1000, 5000, 0xffff, 0, ack},
		{true, false, 0, 12, 1328, 9001, 0, 0xffff_ffff, ack | psh | fin | cwr},
		{true, false, 0, 0, 7, 100, 0, 5, ack | psh},
		{false, false, 0, 0, 1360, 1360, 7, 9, ack | psh | fin},
		{false, false, 0, 0, 1360, 1, 7, 9, ack | psh},
		{false, true, 0, 0, 1200, 9001, 0x8000, 0, 0},
		{false, true, 8, 0, 1, 33, 0xffff, 0, 0},
	} {
		h, orig := offloaded(c.v6, c.udp, c.ipOpts, c.tcpOpts, payload[:c.n], c.mss, c.id, c.seq, c.flags)
		want := refSegment(h, orig)
		var got [][]byte
		if err := Segment(h, bytes.Clone(orig), make([]byte, MaxIP), func(p []byte) error { got = append(got, bytes.Clone(p)); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%+v: Segment gave %d packets, want %d", c, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("%+v: Segment's packet %d\n got %x\nwant %x", c, i, got[i][:h.HdrLen], want[i][:h.HdrLen])
			}
		}
		var g Segmenter
		pkt := bytes.Clone(orig)
		if err := g.StartPartial(h, pkt); err != nil {
			t.Fatal(err)
		}
		if g.Len() != len(want) {
			t.Fatalf("%+v: Len %d, want %d", c, g.Len(), len(want))
		}
		i := 0
		for p, partial, ok := g.Next(); ok; p, partial, ok = g.Next() {
			if partial == c.udp {
				t.Fatalf("%+v: packet %d partial %v", c, i, partial)
			}
			p = bytes.Clone(p)
			if partial {
				at := int(h.CsumStart) + 16
				binary.BigEndian.PutUint16(p[at:], ^Fold(Sum(p[h.CsumStart:], 0)))
			}
			if !bytes.Equal(p, want[i]) {
				t.Fatalf("%+v: SegmentPartial's packet %d\n got %x\nwant %x", c, i, p[:h.HdrLen], want[i][:h.HdrLen])
			}
			i++
			if g.Len() != len(want)-i {
				t.Fatalf("%+v: Len %d after %d packets of %d", c, g.Len(), i, len(want))
			}
		}
		if i != len(want) {
			t.Fatalf("%+v: SegmentPartial gave %d packets, want %d", c, i, len(want))
		}
	}
}
