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
	return segment(h, pkt, scratch, false, false, func(p []byte, _ bool) error { return emit(p) })
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
// end of the payload emit has had already (scratch keeps the original
// headers). So pkt is overwritten, and emit must be done with a segment
// when it returns; the sealer reads each payload byte once, where the TUN
// put it.
func SegmentPartial(h VnetHdr, pkt, scratch []byte, emit func(p []byte, partial bool) error) error {
	return segment(h, pkt, scratch, true, true, emit)
}

func segment(h VnetHdr, pkt, scratch []byte, keepPartial, inPlace bool, emit func([]byte, bool) error) error {
	if err := h.Validate(pkt); err != nil {
		return err
	}
	if h.GSOType&^GSOECN == GSONone {
		if h.Flags&VnetNeedsCsum == 0 {
			return emit(pkt, false)
		}
		if keepPartial {
			if ipLen, proto, _ := ipHeader(pkt); proto == protoTCP && int(h.CsumStart) == ipLen && h.CsumOffset == 16 {
				return emit(pkt, true)
			}
		}
		out := scratch[:len(pkt)]
		copy(out, pkt)
		at := int(h.CsumStart) + int(h.CsumOffset)
		// The kernel left the pseudo-header sum in the field: folding the
		// rest in and inverting completes the checksum.
		binary.BigEndian.PutUint16(out[at:], ^Fold(Sum(out[h.CsumStart:], 0)))
		return emit(out, false)
	}
	ipLen, proto, _ := ipHeader(pkt)
	is4 := pkt[0]>>4 == 4
	var thLen int
	if proto == protoTCP {
		thLen = int(pkt[ipLen+12]>>4) * 4
		if thLen < 20 || ipLen+thLen > len(pkt) {
			return fmt.Errorf("%w: TCP header length %d", ErrBadVnetHdr, thLen)
		}
	} else {
		thLen = 8
	}
	hdrLen := ipLen + thLen
	payload := pkt[hdrLen:]
	mss := int(h.GSOSize)
	var seq uint32
	if proto == protoTCP {
		seq = binary.BigEndian.Uint32(pkt[ipLen+4:])
	}
	var id uint16
	if is4 {
		id = binary.BigEndian.Uint16(pkt[4:])
	}
	hdr := pkt[:hdrLen]
	if inPlace {
		hdr = scratch[:copy(scratch, hdr)] // pkt's are overwritten from the second segment on
	}
	for i, off := 0, 0; off < len(payload); i, off = i+1, off+mss {
		end := min(off+mss, len(payload))
		n := hdrLen + end - off
		var seg []byte
		if inPlace {
			// Over the end of what was emitted already (the first
			// segment's headers are where they were).
			seg = pkt[off : off+n]
			copy(seg, hdr)
		} else {
			seg = scratch[:n]
			copy(seg, hdr)
			copy(seg[hdrLen:], payload[off:end])
		}
		last := end == len(payload)
		if is4 {
			binary.BigEndian.PutUint16(seg[2:], uint16(n))
			binary.BigEndian.PutUint16(seg[4:], id+uint16(i))
			seg[10], seg[11] = 0, 0
			binary.BigEndian.PutUint16(seg[10:], ^Fold(Sum(seg[:ipLen], 0)))
		} else {
			binary.BigEndian.PutUint16(seg[4:], uint16(n-40))
		}
		th := seg[ipLen:]
		csumAt := 6 // UDP
		if proto == protoTCP {
			binary.BigEndian.PutUint32(th[4:], seq+uint32(off))
			const fin, psh, cwr = 0x01, 0x08, 0x80
			if !last {
				th[13] &^= fin | psh
			}
			if i > 0 {
				th[13] &^= cwr
			}
			csumAt = 16
		} else {
			binary.BigEndian.PutUint16(th[4:], uint16(n-ipLen))
		}
		partial := keepPartial && proto == protoTCP
		th[csumAt], th[csumAt+1] = 0, 0
		var c uint16
		if partial {
			c = Fold(pseudoHeader(seg, is4, proto, n-ipLen))
		} else if c = ^Fold(Sum(th, pseudoHeader(seg, is4, proto, n-ipLen))); c == 0 && proto == protoUDP {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(th[csumAt:], c)
		if err := emit(seg, partial); err != nil {
			return err
		}
	}
	return nil
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
