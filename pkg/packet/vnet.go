package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// VnetHdrLen is the size of the virtio-net header (struct virtio_net_hdr)
// that a TUN device opened with IFF_VNET_HDR puts before every packet. gtun
// carries it across the tunnel with each packet, so that a 64 KiB TCP
// segment the kernel handed over unsegmented (TSO) is written out unsegmented
// on the far side and the kernel there segments it, if it must, at the last
// moment. Fields are little-endian (both amd64 and arm64 are).
const VnetHdrLen = 10

// Virtio-net header flags and GSO types (linux/virtio_net.h).
const (
	VnetNeedsCsum = 1
	VnetDataValid = 2

	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3
	GSOTCPv6 = 4
	GSOUDPL4 = 5
	GSOECN   = 0x80
)

// VnetHdr is a decoded virtio-net header.
type VnetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
}

// DecodeVnetHdr reads the header at the start of b (len(b) >= VnetHdrLen).
func DecodeVnetHdr(b []byte) VnetHdr {
	return VnetHdr{Flags: b[0], GSOType: b[1], HdrLen: binary.LittleEndian.Uint16(b[2:]),
		GSOSize: binary.LittleEndian.Uint16(b[4:]), CsumStart: binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:])}
}

// Encode writes h into b.
func (h VnetHdr) Encode(b []byte) {
	b[0], b[1] = h.Flags, h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
}

// Plain reports whether the packet needs no offload work: no segmentation
// and a complete checksum.
func (h VnetHdr) Plain() bool { return h.GSOType == GSONone && h.Flags&VnetNeedsCsum == 0 }

// ErrBadVnetHdr is returned for a header that does not describe its packet.
var ErrBadVnetHdr = errors.New("bad virtio-net header")

// Validate checks that h describes pkt (the IP packet after the header) in a
// way this package, and the kernel, handle: a peer's header goes straight into
// our TUN device, so it must not claim offsets beyond the packet or a GSO
// type that does not match the packet's protocol.
func (h VnetHdr) Validate(pkt []byte) error {
	if h.Flags&^(VnetNeedsCsum|VnetDataValid) != 0 {
		return fmt.Errorf("%w: flags %#x", ErrBadVnetHdr, h.Flags)
	}
	if h.Flags&VnetNeedsCsum != 0 {
		if int(h.CsumStart)+int(h.CsumOffset)+2 > len(pkt) {
			return fmt.Errorf("%w: checksum at %d+%d beyond %d bytes", ErrBadVnetHdr, h.CsumStart, h.CsumOffset, len(pkt))
		}
		// The checksum covers a transport header: it starts after the IP
		// header, never in it (found by FuzzFrame: a header asking to
		// checksum a non-IP packet, or to overwrite its own IP header).
		ipLen, _, err := ipHeader(pkt)
		if err != nil {
			return fmt.Errorf("%w: checksum offload for a packet that is not IP", ErrBadVnetHdr)
		}
		if int(h.CsumStart) < ipLen {
			return fmt.Errorf("%w: checksum start %d inside the %d-byte IP header", ErrBadVnetHdr, h.CsumStart, ipLen)
		}
	}
	gso := h.GSOType &^ GSOECN
	if gso == GSONone {
		if h.GSOType&GSOECN != 0 {
			return fmt.Errorf("%w: ECN without GSO", ErrBadVnetHdr)
		}
		return nil
	}
	if h.GSOSize == 0 || h.Flags&VnetNeedsCsum == 0 {
		return fmt.Errorf("%w: GSO without segment size or checksum offload", ErrBadVnetHdr)
	}
	ipLen, proto, err := ipHeader(pkt)
	if err != nil {
		return err
	}
	switch gso {
	case GSOTCPv4, GSOTCPv6:
		if (gso == GSOTCPv4) != (pkt[0]>>4 == 4) || proto != protoTCP {
			return fmt.Errorf("%w: GSO type %d for IP version %d protocol %d", ErrBadVnetHdr, gso, pkt[0]>>4, proto)
		}
		if len(pkt) < ipLen+20 {
			return fmt.Errorf("%w: short TCP header", ErrBadVnetHdr)
		}
	case GSOUDPL4:
		if proto != protoUDP || len(pkt) < ipLen+8 {
			return fmt.Errorf("%w: UDP GSO for protocol %d", ErrBadVnetHdr, proto)
		}
	default:
		return fmt.Errorf("%w: GSO type %d", ErrBadVnetHdr, h.GSOType)
	}
	if int(h.CsumStart) != ipLen {
		return fmt.Errorf("%w: checksum start %d, transport header at %d", ErrBadVnetHdr, h.CsumStart, ipLen)
	}
	return nil
}

const (
	protoTCP = 6
	protoUDP = 17
)

// ipHeader returns the IP header length and the transport protocol. IPv6
// extension headers are not walked: gtun's offloads cover TCP and UDP
// directly after the fixed IPv6 header, as the kernel produces them.
func ipHeader(pkt []byte) (int, uint8, error) {
	if len(pkt) < 1 {
		return 0, 0, ErrMalformed
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return 0, 0, ErrMalformed
		}
		hl := int(pkt[0]&0x0f) * 4
		if hl < 20 || len(pkt) < hl {
			return 0, 0, ErrMalformed
		}
		return hl, pkt[9], nil
	case 6:
		if len(pkt) < 40 {
			return 0, 0, ErrMalformed
		}
		return 40, pkt[6], nil
	}
	return 0, 0, ErrMalformed
}

// FrameProblem says why a frame from a session cannot go into a TUN as it
// is; the daemons count each under their own drop reason.
type FrameProblem uint8

const (
	FrameOK         FrameProblem = iota
	FrameMalformed               // too short, or no IP header to read
	FrameBadOffload              // the offload header does not describe its packet
)

// OpenFrame checks what both daemons check first in a frame a session
// delivered, [virtio-net header][IP packet]: that it holds a packet, that a
// non-plain offload header describes it, and that the packet's addresses
// can be read. It returns the packet and its addresses, or the problem.
func OpenFrame(frame []byte) (pkt []byte, src, dst netip.Addr, p FrameProblem) {
	if len(frame) <= VnetHdrLen {
		return nil, src, dst, FrameMalformed
	}
	pkt = frame[VnetHdrLen:]
	if h := DecodeVnetHdr(frame); !h.Plain() && h.Validate(pkt) != nil {
		return nil, src, dst, FrameBadOffload
	}
	var err error
	if src, dst, err = Addrs(pkt); err != nil {
		return nil, src, dst, FrameMalformed
	}
	return pkt, src, dst, FrameOK
}
