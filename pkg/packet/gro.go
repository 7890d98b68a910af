package packet

import "encoding/binary"

// Coalescer is GRO in user space: consecutive TCP segments of one flow, as
// they arrive one per datagram on the udp transport, are joined into one
// super-packet with a virtio-net header (TSO), so that the TUN device
// takes ~45 segments in one write and the kernel sees one large frame, as
// it does on the tcp transport. Segments join when they continue the
// pending packet exactly: same addresses, ports, IP fields, TCP options
// and acknowledgement, the next sequence number, only ACK (and PSH) set,
// and a payload of the first segment's size (a shorter one, or PSH, ends
// the super-packet). Everything else goes out as it came, after the
// pending packet, so the order of packets is kept.
//
// The joined frame asks the kernel to complete the TCP checksum
// (VnetNeedsCsum): the segments' own checksums are not checked here. They
// come authenticated from the peer, which could as well send a frame with
// that header over the tcp transport.
//
// Not safe for concurrent use: one reader goroutine owns it.
type Coalescer struct {
	out func(frame []byte)
	buf []byte // the pending frame: [virtio-net header][IP packet], at buf[:n]
	n   int

	segs    int // joined so far; 0: nothing pending
	ipLen   int
	hdrLen  int // IP and TCP headers
	gsoSize int
	nextSeq uint32
	ended   bool // a short or PSH segment joined: nothing more may
	partial bool // the first segment's checksum is partial (alone, it goes with VnetNeedsCsum)

	placed int          // where Place put the packet being opened (placedNone: nowhere)
	saved  [hdrMax]byte // placedJoin: the pending payload's last bytes, under the new packet's headers
}

// NewCoalescer returns a coalescer handing its frames to out, which must
// not keep them.
func NewCoalescer(out func(frame []byte)) *Coalescer {
	return &Coalescer{out: out} // buf comes with the first TCP segment: an idle session holds none
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// Add takes buf[at:], one IP packet, with at least VnetHdrLen bytes before
// it that Add may overwrite. The packet joins the pending super-packet, or
// starts a new one, or (not a TCP data segment) goes to out at once, after
// the pending one. partial says the packet's TCP checksum is partial (see
// SegmentPartial): it goes out with VnetNeedsCsum.
func (c *Coalescer) Add(buf []byte, at int, partial bool) {
	pkt := buf[at:]
	ipLen, hdrLen, plen, ok := tcpSegment(pkt)
	if ok && c.segs > 0 && c.joins(pkt, ipLen, hdrLen, plen) {
		copy(c.buf[c.n:], pkt[hdrLen:])
		c.join(pkt[ipLen+13], plen)
		return
	}
	c.Flush()
	if ok {
		if c.buf == nil {
			c.buf = make([]byte, VnetHdrLen+MaxIP)
		}
		copy(c.buf[VnetHdrLen:], pkt)
		c.start(len(pkt), ipLen, hdrLen, plen, partial)
		return
	}
	c.single(buf[at-VnetHdrLen:], pkt, partial)
}

// join takes a segment whose payload (plen bytes) is in place at c.n, with
// its TCP flags.
func (c *Coalescer) join(flags byte, plen int) {
	c.n += plen
	c.segs++
	c.nextSeq += uint32(plen)
	if flags&tcpPSH != 0 {
		c.buf[VnetHdrLen+c.ipLen+13] |= tcpPSH
	}
	if plen < c.gsoSize || flags&tcpPSH != 0 {
		c.ended = true
	}
}

// start makes the TCP segment at c.buf[VnetHdrLen:], n bytes, the pending
// packet.
func (c *Coalescer) start(n, ipLen, hdrLen, plen int, partial bool) {
	pkt := c.buf[VnetHdrLen : VnetHdrLen+n]
	c.n = VnetHdrLen + n
	c.segs, c.ipLen, c.hdrLen, c.gsoSize = 1, ipLen, hdrLen, plen
	c.nextSeq = binary.BigEndian.Uint32(pkt[ipLen+4:]) + uint32(plen)
	c.ended = pkt[ipLen+13]&tcpPSH != 0
	c.partial = partial
}

// single hands out a packet that joins nothing: pkt, with f its frame
// (VnetHdrLen bytes of room, then pkt).
func (c *Coalescer) single(f, pkt []byte, partial bool) {
	clear(f[:VnetHdrLen]) // plain: no offload, the packet's checksums are its own
	if partial {
		if ipLen, proto, err := ipHeader(pkt); err == nil && proto == protoTCP && len(pkt) >= ipLen+20 {
			VnetHdr{Flags: VnetNeedsCsum, CsumStart: uint16(ipLen), CsumOffset: 16}.Encode(f)
		}
	}
	c.out(f)
}

// hdrMax is the most headers a segment may have: IPv6's 40 bytes and TCP's
// 60 with options.
const hdrMax = 100

// Where Place put the packet being opened.
const (
	placedNone  = iota
	placedStart // at the start of the buffer: nothing was pending
	placedJoin  // over the end of the pending payload, kept aside in saved
)

// Place returns where the next packet, n bytes, is to be opened (decrypted
// by the datagram layer), so that no copy follows when it continues the
// pending packet: its headers go over the last bytes of the pending
// payload, which Place keeps aside and Placed puts back, and its payload
// lands where it joins. With nothing pending (or a pending packet that
// nothing may join) it is the start of the buffer. Placed must follow a
// place given, whether the packet opened or not. nil: open it where it is
// and Add it (no buffer yet, as an idle session holds none until its first
// TCP segment; or a packet that cannot join).
func (c *Coalescer) Place(n int) []byte {
	if c.buf == nil || n > MaxIP {
		return nil
	}
	if c.segs > 0 && !c.ended {
		h := c.hdrLen
		if n <= h || c.n-h+n > len(c.buf) {
			// It cannot join, but whether the pending packet goes now
			// depends on whether it opens: Add decides.
			return nil
		}
		copy(c.saved[:h], c.buf[c.n-h:c.n])
		c.placed = placedJoin
		return c.buf[c.n-h : c.n-h+n]
	}
	c.Flush() // nothing pending, or nothing may join it: it goes either way
	c.placed = placedStart
	return c.buf[VnetHdrLen : VnetHdrLen+n]
}

// Placed takes the packet Place placed, dst, once it is open: ok false
// means it did not open (forged, replayed) and is gone; partial is as for
// Add. The result is what Add would have done with it.
func (c *Coalescer) Placed(dst []byte, ok, partial bool) {
	placed := c.placed
	c.placed = placedNone
	switch placed {
	case placedStart:
		if ok {
			c.took(len(dst), partial) // dst is there
		}
	case placedJoin:
		h := c.hdrLen
		at := c.n - h
		if !ok {
			copy(c.buf[at:c.n], c.saved[:h])
			return
		}
		if ipLen, hdrLen, plen, seg := tcpSegment(dst); seg && c.joins(dst, ipLen, hdrLen, plen) {
			flags := dst[ipLen+13]
			copy(c.buf[at:c.n], c.saved[:h]) // the pending payload whole again; this one's follows it
			c.join(flags, plen)
			return
		}
		// It does not continue the pending packet: that goes out, and this
		// one moves to the start of the buffer (what Add would copy).
		var head [hdrMax]byte
		copy(head[:h], dst[:h])
		copy(c.buf[at:c.n], c.saved[:h])
		end, n := c.n, len(dst)
		c.Flush()
		copy(c.buf[VnetHdrLen+h:], c.buf[end:at+n])
		copy(c.buf[VnetHdrLen:], head[:h])
		c.took(n, partial)
	}
}

// took takes the packet opened (or moved) to the start of the buffer, n
// bytes, with nothing pending: a TCP segment becomes the pending packet,
// anything else goes out at once.
func (c *Coalescer) took(n int, partial bool) {
	pkt := c.buf[VnetHdrLen : VnetHdrLen+n]
	if ipLen, hdrLen, plen, seg := tcpSegment(pkt); seg {
		c.start(n, ipLen, hdrLen, plen, partial)
		return
	}
	c.single(c.buf[:VnetHdrLen+n], pkt, partial)
}

// tcpSegment reports whether pkt is a TCP segment that may take part in
// coalescing: IPv4 without options or fragmentation, or IPv6 with TCP
// right after its header; only ACK, or ACK and PSH, set; some payload.
func tcpSegment(pkt []byte) (ipLen, hdrLen, plen int, ok bool) {
	if len(pkt) < 40 {
		return 0, 0, 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if pkt[0] != 0x45 || pkt[9] != protoTCP || binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 ||
			int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
			return 0, 0, 0, false
		}
		ipLen = 20
	case 6:
		if len(pkt) < 60 || pkt[6] != protoTCP || int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) {
			return 0, 0, 0, false
		}
		ipLen = 40
	default:
		return 0, 0, 0, false
	}
	tcpLen := int(pkt[ipLen+12]>>4) * 4
	hdrLen = ipLen + tcpLen
	if tcpLen < 20 || hdrLen >= len(pkt) {
		return 0, 0, 0, false
	}
	if f := pkt[ipLen+13]; f&^tcpPSH != tcpACK {
		return 0, 0, 0, false
	}
	return ipLen, hdrLen, len(pkt) - hdrLen, true
}

// joins reports whether the segment continues the pending packet.
func (c *Coalescer) joins(pkt []byte, ipLen, hdrLen, plen int) bool {
	if c.ended || ipLen != c.ipLen || hdrLen != c.hdrLen || plen > c.gsoSize || c.n+plen > len(c.buf) {
		return false
	}
	p := c.buf[VnetHdrLen:c.n]
	// Fields are compared for equality only: little-endian word loads (no
	// byte swaps), the fields that may differ masked out. This runs for
	// every segment.
	le := binary.LittleEndian
	if ipLen == 20 {
		// Of bytes 0-7: version/IHL, TOS, flags and fragment offset (the
		// length and ID may differ); of 8-15: TTL, protocol and the
		// source (not the checksum); 16-19: the destination.
		const mask0, mask1 = 0xffff_0000_0000_ffff, 0xffff_ffff_0000_ffff
		_, _ = pkt[19], p[19]
		if (le.Uint64(pkt[0:])^le.Uint64(p[0:]))&mask0 != 0 || (le.Uint64(pkt[8:])^le.Uint64(p[8:]))&mask1 != 0 ||
			le.Uint32(pkt[16:]) != le.Uint32(p[16:]) {
			return false
		}
	} else if le.Uint32(pkt[0:]) != le.Uint32(p[0:]) || le.Uint16(pkt[6:]) != le.Uint16(p[6:]) || !equal32(pkt[8:40], p[8:40]) {
		// Version, traffic class, flow label; next header and hop
		// limit; the addresses.
		return false
	}
	th, pth := pkt[ipLen:hdrLen], p[ipLen:hdrLen]
	_, _ = th[19], pth[19]
	return le.Uint32(th[0:]) == le.Uint32(pth[0:]) && // ports
		binary.BigEndian.Uint32(th[4:]) == c.nextSeq &&
		le.Uint32(th[8:]) == le.Uint32(pth[8:]) && // acknowledgement
		sameOptions(th[20:], pth[20:]) // options (timestamps)
}

// equal32 compares two 32-byte IPv6 address pairs.
func equal32(a, b []byte) bool {
	be := binary.LittleEndian
	_, _ = a[31], b[31]
	return be.Uint64(a[0:]) == be.Uint64(b[0:]) && be.Uint64(a[8:]) == be.Uint64(b[8:]) &&
		be.Uint64(a[16:]) == be.Uint64(b[16:]) && be.Uint64(a[24:]) == be.Uint64(b[24:])
}

// sameOptions compares TCP options of the same length (a multiple of 4),
// a word at a time: they are 12 bytes (timestamps) on almost every segment.
func sameOptions(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	be := binary.LittleEndian
	for len(a) >= 8 {
		if be.Uint64(a) != be.Uint64(b) {
			return false
		}
		a, b = a[8:], b[8:]
	}
	return len(a) == 0 || be.Uint32(a) == be.Uint32(b)
}

// Flush hands the pending packet, if any, to out: a super-packet with a
// TSO header when segments were joined, else the packet as it came.
func (c *Coalescer) Flush() {
	if c.segs == 0 {
		return
	}
	f := c.buf[:c.n]
	p := f[VnetHdrLen:]
	if c.segs == 1 {
		clear(f[:VnetHdrLen])
		if c.partial {
			VnetHdr{Flags: VnetNeedsCsum, CsumStart: uint16(c.ipLen), CsumOffset: 16}.Encode(f)
		}
		c.segs = 0
		c.out(f)
		return
	}
	h := VnetHdr{Flags: VnetNeedsCsum, HdrLen: uint16(c.hdrLen), GSOSize: uint16(c.gsoSize), CsumStart: uint16(c.ipLen), CsumOffset: 16}
	l4 := len(p) - c.ipLen
	var sum uint32
	if c.ipLen == 20 {
		h.GSOType = GSOTCPv4
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^Fold(Sum(p[:20], 0)))
		sum = Sum(p[12:20], 0)
	} else {
		h.GSOType = GSOTCPv6
		binary.BigEndian.PutUint16(p[4:], uint16(l4))
		sum = Sum(p[8:40], 0)
	}
	// The checksum field holds the pseudo-header's sum, not inverted: the
	// kernel adds the segment's bytes and inverts (checksum offload).
	binary.BigEndian.PutUint16(p[c.ipLen+16:], Fold(sum+protoTCP+uint32(l4)))
	h.Encode(f)
	c.segs = 0
	c.out(f)
}
