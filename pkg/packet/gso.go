package packet

import (
	"encoding/binary"
	"fmt"
)

// Segment turns an offloaded packet into packets a TUN device without
// offloads accepts: it completes a partial checksum, and splits a TCP or UDP
// GSO super-packet into segments of h.GSOSize payload bytes, each with its
// own headers and checksums. It is the plain path's counterpart of the
// kernel's GSO, used when this side's TUN has no IFF_VNET_HDR but the peer's
// has. Each packet is built in scratch (at least 65535 bytes) and handed to
// emit, which must not keep it.
func Segment(h VnetHdr, pkt, scratch []byte, emit func([]byte) error) error {
	var g Segmenter
	if err := g.start(h, pkt, scratch, false, false); err != nil {
		return err
	}
	for p, _, ok := g.Next(); ok; p, _, ok = g.Next() {
		if err := emit(p); err != nil {
			return err
		}
	}
	return nil
}

// SegmentPartial is Segment for a path that carries the checksum offload
// to a TUN device on the far side (the udp transport): TCP packets keep a
// partial checksum, the pseudo-header's sum in the field as the kernel
// hands it over (VnetNeedsCsum, from the end of the IP header, field at
// 16), and emit is told so (partial true); it saves a pass over every
// payload byte. UDP packets are completed as by Segment.
//
// The segments of a GSO super-packet are built in pkt itself, not copied
// out: each one's headers are written just before its payload, over the
// end of the payload emit has had already, and a checksum to complete is
// completed in pkt. So pkt is overwritten, and emit must be done with a
// segment when it returns; the sealer reads each payload byte once, where
// the TUN put it, and no scratch buffer is needed.
func SegmentPartial(h VnetHdr, pkt []byte, emit func(p []byte, partial bool) error) error {
	var g Segmenter
	if err := g.StartPartial(h, pkt); err != nil {
		return err
	}
	for p, partial, ok := g.Next(); ok; p, partial, ok = g.Next() {
		if err := emit(p, partial); err != nil {
			return err
		}
	}
	return nil
}

// maxHeaders is the longest IP and TCP headers together (IPv4 with
// options, TCP with options).
const maxHeaders = 60 + 60

// Segmenter is SegmentPartial as an iterator: Next gives the packets one
// by one, so that a caller that seals each (the udp transport) runs its own
// loop, without a call through a func value per packet, and knows how many
// there are before the first (Len). What is the same in every segment of
// a super-packet is done once in StartPartial: the headers are kept, and
// the IPv4 header's and the pseudo-header's sums are taken without the
// fields that change (lengths, id), which each segment adds to them (the
// one's-complement sum is a sum: RFC 1071 2(B)); no segment sums its
// headers again. The zero value is ready for StartPartial; nothing in it
// is allocated.
type Segmenter struct {
	pkt, scratch []byte
	single       []byte // a packet that is not cut (Next gives it once); nil: a super-packet
	partial      bool   // the packets' TCP checksums are left partial
	inPlace      bool
	is4, tcp     bool
	ipLen        int
	hdrLen       int
	mss          int
	payLen       int    // bytes of payload after the headers
	off          int    // of the next segment's payload
	left         int    // segments Next has still to give
	first        bool   // the next segment is the first
	seq          uint32 // the first segment's
	id           uint16 // the next segment's (IPv4)
	ipSum        uint32 // the IPv4 header's sum without total length, id and checksum
	pseudoSum    uint32 // the pseudo-header's sum without the transport length
	hdr          [maxHeaders]byte
}

// StartPartial readies g to cut pkt as SegmentPartial does: in place, TCP
// checksums left partial. g keeps pkt until the last Next.
func (g *Segmenter) StartPartial(h VnetHdr, pkt []byte) error {
	return g.start(h, pkt, nil, true, true)
}

// Len is how many packets the Next calls still to come give.
func (g *Segmenter) Len() int { return g.left }

func (g *Segmenter) start(h VnetHdr, pkt, scratch []byte, keepPartial, inPlace bool) error {
	g.left, g.single = 0, nil
	if err := h.Validate(pkt); err != nil {
		return err
	}
	g.pkt, g.scratch, g.inPlace, g.left = pkt, scratch, inPlace, 1
	if h.GSOType&^GSOECN == GSONone {
		g.single, g.partial = pkt, false
		if h.Flags&VnetNeedsCsum == 0 {
			return nil
		}
		if keepPartial {
			if ipLen, proto, _ := ipHeader(pkt); proto == protoTCP && int(h.CsumStart) == ipLen && h.CsumOffset == 16 {
				g.partial = true
				return nil
			}
		}
		out := pkt
		if !inPlace {
			out = scratch[:len(pkt)]
			copy(out, pkt)
		}
		at := int(h.CsumStart) + int(h.CsumOffset)
		// The kernel left the pseudo-header sum in the field: folding the
		// rest in and inverting completes the checksum.
		binary.BigEndian.PutUint16(out[at:], ^Fold(Sum(out[h.CsumStart:], 0)))
		g.single = out
		return nil
	}
	ipLen, proto, _ := ipHeader(pkt)
	g.is4, g.tcp = pkt[0]>>4 == 4, proto == protoTCP
	thLen := 8
	if g.tcp {
		thLen = int(pkt[ipLen+12]>>4) * 4
		if thLen < 20 || ipLen+thLen > len(pkt) {
			g.left = 0
			return fmt.Errorf("%w: TCP header length %d", ErrBadVnetHdr, thLen)
		}
		g.seq = binary.BigEndian.Uint32(pkt[ipLen+4:])
	}
	g.ipLen, g.hdrLen, g.mss = ipLen, ipLen+thLen, int(h.GSOSize)
	g.partial = keepPartial && g.tcp
	g.payLen = len(pkt) - g.hdrLen
	g.off, g.first = 0, true
	g.left = (g.payLen + g.mss - 1) / g.mss
	// Kept apart: in place, pkt's are overwritten from the second
	// segment on.
	hdr := g.hdr[:copy(g.hdr[:], pkt[:g.hdrLen])]
	if g.is4 {
		g.id = binary.BigEndian.Uint16(hdr[4:])
		clear(hdr[2:6]) // total length, id
		clear(hdr[10:12])
		g.ipSum = Sum(hdr[:ipLen], 0)
		g.pseudoSum = Sum(hdr[12:20], 0) + uint32(proto)
	} else {
		g.pseudoSum = Sum(hdr[8:40], 0) + uint32(proto)
	}
	return nil
}

// Next gives the next packet and whether its TCP checksum is left partial;
// ok is false after the last. The packet is in pkt or scratch, and the
// next call overwrites it.
func (g *Segmenter) Next() (p []byte, partial, ok bool) {
	if g.left == 0 {
		return nil, false, false
	}
	g.left--
	if g.single != nil {
		p, g.single = g.single, nil
		return p, g.partial, true
	}
	hdrLen, ipLen, off := g.hdrLen, g.ipLen, g.off
	end := min(off+g.mss, g.payLen)
	n := hdrLen + end - off
	var seg []byte
	if g.inPlace {
		// Over the end of what was given already (the first segment's
		// headers are where they were).
		seg = g.pkt[off : off+n]
		copy(seg, g.hdr[:hdrLen])
	} else {
		seg = g.scratch[:n]
		copy(seg, g.hdr[:hdrLen])
		copy(seg[hdrLen:], g.pkt[hdrLen+off:hdrLen+end])
	}
	l4 := uint32(n - ipLen)
	// As fixed-size headers (start validated them): one bounds check each,
	// not one per field.
	if g.is4 {
		ip := (*[20]byte)(seg)
		id := g.id
		g.id++ // the next segment's
		binary.BigEndian.PutUint16(ip[2:], uint16(n))
		binary.BigEndian.PutUint16(ip[4:], id)
		binary.BigEndian.PutUint16(ip[10:], ^Fold(g.ipSum+uint32(n)+uint32(id)))
	} else {
		binary.BigEndian.PutUint16(seg[4:6], uint16(l4))
	}
	th := seg[ipLen:hdrLen]
	if g.tcp {
		tcp := (*[20]byte)(th)
		binary.BigEndian.PutUint32(tcp[4:], g.seq+uint32(off))
		const fin, psh, cwr = 0x01, 0x08, 0x80
		flags := tcp[13]
		if g.left > 0 {
			flags &^= fin | psh
		}
		if !g.first {
			flags &^= cwr
		}
		tcp[13] = flags
		if g.partial {
			binary.BigEndian.PutUint16(tcp[16:], Fold(g.pseudoSum+l4))
		} else {
			th[16], th[17] = 0, 0
			binary.BigEndian.PutUint16(th[16:], ^Fold(Sum(seg[ipLen:], g.pseudoSum+l4)))
		}
	} else {
		binary.BigEndian.PutUint16(th[4:], uint16(l4))
		th[6], th[7] = 0, 0
		c := ^Fold(Sum(seg[ipLen:], g.pseudoSum+l4))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(th[6:], c)
	}
	g.off, g.first = end, false
	return seg, g.partial, true
}

func pseudoHeader(ip []byte, is4 bool, proto uint8, l4len int) uint32 {
	var s uint32
	if is4 {
		s = Sum(ip[12:20], 0)
	} else {
		s = Sum(ip[8:40], 0)
	}
	return s + uint32(proto) + uint32(l4len)
}

// Sum adds b as big-endian 16-bit words to s: the one's-complement sum of
// the Internet checksum, folded to at most 17 bits (so that sums can be
// added without overflow), not yet folded to 16. It adds 32-bit words
// into a 64-bit accumulator, eight at a time, which comes to the same
// one's-complement sum (2^16 is 1 modulo 2^16-1) at several times the
// speed of a loop over 16-bit words: every segment the udp transport
// cuts from a TSO frame needs its TCP checksum.
func Sum(b []byte, s uint32) uint32 {
	acc := uint64(s)
	for len(b) >= 32 {
		acc += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:])) +
			uint64(binary.BigEndian.Uint32(b[8:])) + uint64(binary.BigEndian.Uint32(b[12:])) +
			uint64(binary.BigEndian.Uint32(b[16:])) + uint64(binary.BigEndian.Uint32(b[20:])) +
			uint64(binary.BigEndian.Uint32(b[24:])) + uint64(binary.BigEndian.Uint32(b[28:]))
		b = b[32:]
	}
	for len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	// 64 -> 32 -> 17 bits, end-around carries kept
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint32(acc)
}

// Fold folds a Sum to 16 bits; the checksum field takes its complement.
func Fold(s uint32) uint16 {
	for s > 0xffff {
		s = (s >> 16) + (s & 0xffff)
	}
	return uint16(s)
}
