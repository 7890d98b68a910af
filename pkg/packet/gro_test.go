package packet

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// segments cuts a TSO packet of payload into MSS-sized segments, as the
// sending side of the udp transport does.
func segments(t *testing.T, v6 bool, payload []byte, seq uint32, mss int) [][]byte {
	t.Helper()
	return segmentsF(v6, payload, seq, mss)
}

// withRoomFull is p after 16 bytes of headroom, as a datagram delivers
// it, with a full checksum.
func withRoomFull(p []byte) ([]byte, int, bool) { return append(make([]byte, 16), p...), 16, false }

type frames [][]byte

func (f *frames) out(fr []byte) { *f = append(*f, bytes.Clone(fr)) }

// resegment turns a frame back into the packets it carries.
func resegment(t *testing.T, fr []byte) [][]byte {
	t.Helper()
	h := DecodeVnetHdr(fr)
	if err := h.Validate(fr[VnetHdrLen:]); err != nil {
		t.Fatalf("coalesced frame: %v", err)
	}
	var out [][]byte
	if err := Segment(h, fr[VnetHdrLen:], make([]byte, MaxIP), func(s []byte) error { out = append(out, bytes.Clone(s)); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// A TSO packet cut into segments and coalesced again is one frame whose
// segments, cut by the kernel's rules (packet.Segment), are the segments
// that arrived, byte for byte: headers, checksums, IDs and flags.
func TestCoalescerJoinsWhatSegmentCut(t *testing.T) {
	payload := make([]byte, 60000)
	for i := range payload {
		payload[i] = byte(i * 13)
	}
	for _, v6 := range []bool{false, true} {
		segs := segments(t, v6, payload, 1<<31, 1360)
		var got frames
		c := NewCoalescer(got.out)
		for _, s := range segs {
			c.Add(withRoomFull(s))
		}
		if len(got) != 0 {
			t.Fatalf("v6=%v: %d frames before the flush", v6, len(got))
		}
		c.Flush()
		if len(got) != 1 {
			t.Fatalf("v6=%v: %d frames for one flow's %d segments", v6, len(got), len(segs))
		}
		h := DecodeVnetHdr(got[0])
		if h.GSOSize != 1360 || h.Flags != VnetNeedsCsum {
			t.Fatalf("v6=%v: header %+v", v6, h)
		}
		again := resegment(t, got[0])
		if len(again) != len(segs) {
			t.Fatalf("v6=%v: %d segments again, %d arrived", v6, len(again), len(segs))
		}
		for i := range segs {
			validTCP(t, again[i])
			if !bytes.Equal(again[i], segs[i]) {
				t.Fatalf("v6=%v: segment %d differs after coalescing", v6, i)
			}
		}
	}
}

// What does not continue the pending packet ends it, and order is kept:
// another flow, a gap in the sequence, a non-TCP packet, a short segment
// (nothing joins after it), PSH.
func TestCoalescerKeepsOrderAndFlows(t *testing.T) {
	payload := make([]byte, 1000*6)
	a := segments(t, false, payload, 1000, 1000) // 6 segments, PSH on the last
	b := segments(t, false, payload[:3000], 900000, 1000)
	for _, s := range b { // another flow: other source port
		binary.BigEndian.PutUint16(s[20:], 40001)
		fixTCPChecksum(s)
	}
	icmp := bytes.Clone(a[0][:28])
	icmp[9] = protoICMP
	binary.BigEndian.PutUint16(icmp[2:], 28)

	var got frames
	c := NewCoalescer(got.out)
	in := [][]byte{a[0], a[1], b[0], b[1], icmp, a[3], a[4], a[5], a[2]}
	for _, s := range in {
		c.Add(withRoomFull(s))
	}
	c.Flush()
	// a0+a1 | b0+b1 | icmp | a3+a4+a5 (PSH ends it) | a2 (out of order: alone)
	want := [][][]byte{{a[0], a[1]}, {b[0], b[1]}, {icmp}, {a[3], a[4], a[5]}, {a[2]}}
	if len(got) != len(want) {
		t.Fatalf("%d frames, want %d", len(got), len(want))
	}
	for i, w := range want {
		var segs [][]byte
		if DecodeVnetHdr(got[i]).Plain() {
			segs = [][]byte{got[i][VnetHdrLen:]}
		} else {
			segs = resegment(t, got[i])
		}
		if len(segs) != len(w) {
			t.Fatalf("frame %d carries %d packets, want %d", i, len(segs), len(w))
		}
		for j := range w {
			if !bytes.Equal(segs[j], w[j]) {
				t.Fatalf("frame %d packet %d differs", i, j)
			}
		}
	}

	// A short segment ends the super-packet: the next one starts anew.
	got = nil
	short := segments(t, false, payload[:2500], 5000, 1000) // 1000, 1000, 500
	next := segments(t, false, payload[:1000], 7500, 1000)
	for _, s := range append(short, next...) {
		c.Add(withRoomFull(s))
	}
	c.Flush()
	if len(got) != 2 || len(resegment(t, got[0])) != 3 || !DecodeVnetHdr(got[1]).Plain() {
		t.Fatalf("short segment: %d frames", len(got))
	}
}

func fixTCPChecksum(p []byte) {
	p[36], p[37] = 0, 0
	binary.BigEndian.PutUint16(p[36:], ^Fold(Sum(p[20:], pseudoHeader(p, true, protoTCP, len(p)-20))))
}

// Coalescing allocates nothing once its buffer exists.
func TestCoalescerDoesNotAllocate(t *testing.T) {
	segs := segments(t, false, make([]byte, 64000), 1, 1400)
	bufs := make([][]byte, len(segs))
	for i, s := range segs {
		bufs[i], _, _ = withRoomFull(s)
	}
	c := NewCoalescer(func([]byte) {})
	allocs := testing.AllocsPerRun(100, func() {
		for _, b := range bufs {
			c.Add(b, 16, false)
		}
		c.Flush()
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per batch", allocs)
	}
}

func BenchmarkCoalescer64K(b *testing.B) {
	var segs [][]byte
	pkt := tcpPacket(false, make([]byte, 64000), tcpACK, 1)
	h := VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1400, CsumStart: 20, CsumOffset: 16}
	_ = Segment(h, pkt, make([]byte, MaxIP), func(s []byte) error { segs = append(segs, append(make([]byte, 16), s...)); return nil })
	c := NewCoalescer(func([]byte) {})
	b.SetBytes(64000)
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range segs {
			c.Add(s, 16, false)
		}
		c.Flush()
	}
}

// Segments cut with partial checksums and coalesced again carry the same
// packets as a complete cut: the joined frame, and a lone segment, go out
// with VnetNeedsCsum, and the kernel's (Segment's) completion of them
// gives the segments of the complete cut byte for byte.
func TestPartialChecksumsThroughCoalescer(t *testing.T) {
	payload := make([]byte, 20000)
	for i := range payload {
		payload[i] = byte(i * 29)
	}
	// SegmentPartial builds the segments in the frame itself, each one's
	// headers over the end of the payload before it: an MSS below the
	// headers' length overwrites more than one segment back.
	for _, c := range []struct {
		v6  bool
		mss int
	}{{false, 1200}, {true, 1200}, {false, 24}, {true, 24}} {
		v6, mss := c.v6, c.mss
		full := segments(t, v6, payload, 5, mss)
		pkt := tcpPacket(v6, payload, tcpPSH|tcpACK, 5)
		ipLen, gso := 20, uint8(GSOTCPv4)
		if v6 {
			ipLen, gso = 40, GSOTCPv6
		}
		h := VnetHdr{Flags: VnetNeedsCsum, GSOType: gso, HdrLen: uint16(ipLen + 20), GSOSize: uint16(mss), CsumStart: uint16(ipLen), CsumOffset: 16}
		var partial [][]byte
		err := SegmentPartial(h, pkt, func(s []byte, p bool) error {
			if !p {
				t.Fatal("a TCP segment cut with a complete checksum")
			}
			partial = append(partial, bytes.Clone(s))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var got frames
		c := NewCoalescer(got.out)
		for _, s := range partial {
			c.Add(append(make([]byte, 16), s...), 16, true)
		}
		c.Flush()
		c.Add(append(make([]byte, 16), partial[0]...), 16, true) // alone
		c.Flush()
		if len(got) != 2 {
			t.Fatalf("v6=%v: %d frames", v6, len(got))
		}
		again := resegment(t, got[0])
		for i := range full {
			if !bytes.Equal(again[i], full[i]) {
				t.Fatalf("v6=%v: segment %d differs from the complete cut", v6, i)
			}
		}
		if h := DecodeVnetHdr(got[1]); h.Flags != VnetNeedsCsum || h.GSOType != GSONone {
			t.Fatalf("v6=%v: a lone partial segment's header %+v", v6, h)
		}
		if alone := resegment(t, got[1]); len(alone) != 1 || !bytes.Equal(alone[0], full[0]) {
			t.Fatalf("v6=%v: a lone partial segment, completed, differs", v6)
		}
	}
}

// Opening packets into the places Place gives (Placed after) hands out
// exactly the frames Add does with the same packets, whatever comes: runs
// of one flow, another flow, gaps, PSH and short segments, non-TCP
// packets, IPv6, batch ends, and packets that fail to open (Add never sees
// those).
func TestCoalescerPlaceIsAdd(t *testing.T) {
	payload := make([]byte, 40*1000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	var pool [][]byte
	for _, v6 := range []bool{false, true} {
		a := segments(t, v6, payload, 1000, 1000)
		b := segments(t, v6, payload[:12*1000+300], 900000, 1000) // ends short
		for _, s := range b {
			p := 20
			if v6 {
				p = 40
			}
			binary.BigEndian.PutUint16(s[p:], 40001)
		}
		pool = append(pool, a...)
		pool = append(pool, b...)
	}
	icmp := bytes.Clone(pool[0][:28])
	icmp[9] = protoICMP
	binary.BigEndian.PutUint16(icmp[2:], 28)

	rng := uint64(1)
	next := func(n int) int { // xorshift: the same sequences every run
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return int(rng % uint64(n))
	}
	for round := range 300 {
		var viaAdd, viaPlace frames
		add, place := NewCoalescer(viaAdd.out), NewCoalescer(viaPlace.out)
		i := next(len(pool))
		for range 200 {
			switch r := next(100); {
			case r < 70: // mostly the next segment of what came before
				i = (i + 1) % len(pool)
			case r < 80:
				i = next(len(pool))
			}
			pkt := pool[i]
			if next(20) == 0 {
				pkt = icmp
			}
			feedBoth(add, place, pkt, next(15) == 0, next(2) == 0)
			if next(10) == 0 {
				add.Flush()
				place.Flush()
			}
		}
		add.Flush()
		place.Flush()
		sameFrames(t, fmt.Sprintf("round %d: ", round), viaAdd, viaPlace)
	}
}

// sameFrames fails the test unless the frames that came through Add and
// through Place are the same.
func sameFrames(t *testing.T, what string, viaAdd, viaPlace frames) {
	t.Helper()
	if len(viaAdd) != len(viaPlace) {
		t.Fatalf("%s%d frames through Add, %d through Place", what, len(viaAdd), len(viaPlace))
	}
	for j := range viaAdd {
		if !bytes.Equal(viaAdd[j], viaPlace[j]) {
			t.Fatalf("%sframe %d differs", what, j)
		}
	}
}

// feedBoth gives pkt to add through Add and to place through Place and
// Placed, as the datagram layer would: a packet that failed to open never
// reaches Add, and leaves junk where it was placed.
func feedBoth(add, place *Coalescer, pkt []byte, failed, partial bool) {
	if !failed {
		add.Add(append(make([]byte, 16), pkt...), 16, partial)
	}
	dst := place.Place(len(pkt))
	if dst == nil {
		if !failed {
			place.Add(append(make([]byte, 16), pkt...), 16, partial)
		}
		return
	}
	copy(dst, pkt)
	if failed {
		for j := range dst {
			dst[j] = 0xee
		}
	}
	place.Placed(dst, !failed, partial)
}

// FuzzCoalescerPlace feeds a coalescer packets through Add and another
// through Place and Placed: the same frames must come out, nothing may
// panic. The input is a script: each step takes a control byte (bit 0:
// the packet fails to open, bit 1: partial checksum, bit 2: a batch ends
// after it, bits 3-7: which packet) and, for packet 31, raw bytes (a
// length byte, then that many) instead of one of the well-formed segments.
func FuzzCoalescerPlace(f *testing.F) {
	payload := make([]byte, 8*500)
	var pool [][]byte
	for _, v6 := range []bool{false, true} {
		segs := segmentsF(v6, payload, 77, 500)
		pool = append(pool, segs...)
		other := segmentsF(v6, payload[:2*500+9], 5000, 500)
		pool = append(pool, other...)
	}
	f.Add([]byte{0, 8, 16, 24, 32, 40, 48, 56})
	f.Add([]byte{0, 8, 9, 16, 24, 4, 32, 255, 20, 0x45, 0, 0, 20})
	f.Fuzz(func(t *testing.T, script []byte) {
		var viaAdd, viaPlace frames
		add, place := NewCoalescer(viaAdd.out), NewCoalescer(viaPlace.out)
		for len(script) > 0 {
			ctl := script[0]
			script = script[1:]
			var pkt []byte
			if k := int(ctl >> 3); k < 31 {
				pkt = pool[k%len(pool)]
			} else {
				if len(script) == 0 {
					return
				}
				n := min(int(script[0]), len(script)-1)
				pkt, script = script[1:1+n], script[1+n:]
			}
			feedBoth(add, place, pkt, ctl&1 != 0, ctl&2 != 0)
			if ctl&4 != 0 {
				add.Flush()
				place.Flush()
			}
		}
		add.Flush()
		place.Flush()
		sameFrames(t, "", viaAdd, viaPlace)
	})
}

// segmentsF is segments without a test (a fuzz target's setup): it
// panics if Segment fails.
func segmentsF(v6 bool, payload []byte, seq uint32, mss int) [][]byte {
	pkt := tcpPacket(v6, payload, tcpPSH|tcpACK, seq)
	ipLen, gso := 20, uint8(GSOTCPv4)
	if v6 {
		ipLen, gso = 40, GSOTCPv6
	}
	h := VnetHdr{Flags: VnetNeedsCsum, GSOType: gso, HdrLen: uint16(ipLen + 20), GSOSize: uint16(mss), CsumStart: uint16(ipLen), CsumOffset: 16}
	var out [][]byte
	if err := Segment(h, pkt, make([]byte, MaxIP), func(s []byte) error { out = append(out, bytes.Clone(s)); return nil }); err != nil {
		panic(err)
	}
	return out
}

// A segment joins the pending packet only if every header field that must
// stay the same does: each one changed alone (the checksums fixed) keeps
// the second segment out, while the fields that differ between segments
// of one TSO frame (IPv4 length, ID and checksum) do not.
func TestCoalescerJoinsOnlyTheSameHeaders(t *testing.T) {
	type change struct {
		name  string
		at    func(ipLen int) int // offset in the packet
		joins bool
	}
	ip := func(off int) func(int) int { return func(int) int { return off } }
	tcp := func(off int) func(int) int { return func(ipLen int) int { return ipLen + off } }
	v4 := []change{
		{"IHL", ip(0), false}, {"TOS", ip(1), false}, {"ID", ip(4), true}, {"ID low", ip(5), true},
		{"DF", ip(6), false}, {"TTL", ip(8), false}, {"checksum", ip(10), true},
		{"source", ip(12), false}, {"source last", ip(15), false}, {"destination", ip(16), false},
		{"destination last", ip(19), false},
	}
	v6 := []change{
		{"traffic class", ip(1), false}, {"flow label", ip(3), false}, {"hop limit", ip(7), false},
		{"source", ip(8), false}, {"source last", ip(23), false}, {"destination", ip(24), false},
		{"destination last", ip(39), false},
	}
	both := []change{
		{"source port", tcp(1), false}, {"destination port", tcp(3), false}, {"ack", tcp(8), false},
		{"ack last", tcp(11), false}, {"window", tcp(14), true}, {"option", tcp(22), false},
		{"option last", tcp(31), false},
	}
	for _, family := range []struct {
		v6      bool
		changes []change
	}{{false, append(v4, both...)}, {true, append(v6, both...)}} {
		for _, ch := range family.changes {
			segs := segments(t, family.v6, make([]byte, 3000), 1, 1000)
			for i, s := range segs { // timestamps: 12 bytes of options, as Linux sends
				segs[i] = withOptions(s, family.v6)
			}
			ipLen := 20
			if family.v6 {
				ipLen = 40
			}
			s := segs[1]
			at := ch.at(ipLen)
			if ch.name == "DF" {
				s[at] ^= 0x40
			} else if ch.name == "IHL" {
				s[at] = 0x46 // options: not a segment that takes part at all
			} else {
				s[at] ^= 0x5a
			}
			if !family.v6 {
				s[10], s[11] = 0, 0
				binary.BigEndian.PutUint16(s[10:], ^Fold(Sum(s[:20], 0)))
			}
			var got frames
			c := NewCoalescer(got.out)
			for _, s := range segs {
				c.Add(withRoomFull(s))
			}
			c.Flush()
			if joined := len(got) == 1; joined != ch.joins {
				t.Errorf("v6 %v, %s changed in the second segment: %d frames (joins: %v, want %v)", family.v6, ch.name, len(got), joined, ch.joins)
			}
		}
	}
}

// withOptions gives segment s 12 bytes of TCP options (NOP, NOP,
// timestamps), as Linux sends on every segment.
func withOptions(s []byte, v6 bool) []byte {
	ipLen := 20
	if v6 {
		ipLen = 40
	}
	out := make([]byte, 0, len(s)+12)
	out = append(out, s[:ipLen+20]...)
	out = append(out, 1, 1, 8, 10, 0, 0, 1, 2, 0, 0, 3, 4)
	out = append(out, s[ipLen+20:]...)
	out[ipLen+12] = 8 << 4
	if v6 {
		binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	} else {
		binary.BigEndian.PutUint16(out[2:], uint16(len(out)))
	}
	return out
}
