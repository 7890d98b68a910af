// Package packet holds what the data path needs to handle IP packets without
// allocating: pooled buffers, header field access and a longest-prefix table.
package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"

	"github.com/gtun/gtun/pkg/secure"
)

// MaxIP is the largest IP packet the data path carries (64 KiB), which is
// also the largest TSO super-packet a TUN device hands over.
const MaxIP = 65535

// MaxSize is the largest frame: a virtio-net header and an IP packet.
const MaxSize = VnetHdrLen + MaxIP

// Headroom and Tailroom are kept around a frame so that the tunnel can seal
// it where it lies: a record's length and type go in front, its
// authentication tag behind. The record layout is secure's; the buffers
// follow it.
const (
	Headroom = secure.PacketHeadroom
	Tailroom = secure.PacketTailroom
)

// Buf is a reusable frame buffer: B[:N] is a virtio-net header followed by
// an IP packet, as read from the TUN device and carried in the tunnel.
type Buf struct {
	arr [Headroom + MaxSize + Tailroom]byte
	B   []byte // the frame's space: arr after the headroom, MaxSize long
	N   int
}

// Bytes returns the frame (header and packet).
func (b *Buf) Bytes() []byte { return b.B[:b.N] }

// IP returns the IP packet after the header.
func (b *Buf) IP() []byte { return b.B[VnetHdrLen:b.N] }

// Record returns the frame with its headroom and tailroom, for sealing in place.
func (b *Buf) Record() []byte { return b.arr[:Headroom+b.N+Tailroom] }

// RecordSpace is where a received record is read and opened so that its
// payload (after the type, see secure.Conn.ReadRecord) lands exactly on B.
func (b *Buf) RecordSpace() []byte { return b.arr[Headroom-secure.RecordTypeLen:] }

var pool = sync.Pool{New: func() any {
	b := new(Buf)
	b.B = b.arr[Headroom : Headroom+MaxSize]
	return b
}}

// Get returns an empty buffer from the pool.
func Get() *Buf { return pool.Get().(*Buf) }

// Put returns a buffer to the pool; the caller must not touch it afterwards.
func Put(b *Buf) {
	b.N = 0
	pool.Put(b)
}

// ErrMalformed is returned for a packet too short or of unknown IP version.
var ErrMalformed = errors.New("malformed IP packet")

// Addrs returns the source and destination of an IPv4 or IPv6 packet.
func Addrs(p []byte) (src, dst netip.Addr, err error) {
	if len(p) < 1 {
		return src, dst, ErrMalformed
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 || int(p[0]&0x0f)*4 < 20 {
			return src, dst, ErrMalformed
		}
		return netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), nil
	case 6:
		if len(p) < 40 {
			return src, dst, ErrMalformed
		}
		return netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40])), nil
	}
	return src, dst, ErrMalformed
}

// Dst returns the destination address of an IPv4 or IPv6 packet.
func Dst(p []byte) (netip.Addr, error) {
	_, dst, err := Addrs(p)
	return dst, err
}

// TotalLen returns the length an IPv4/IPv6 header claims for the packet,
// so that trailing garbage can be detected.
func TotalLen(p []byte) (int, error) {
	if len(p) < 1 {
		return 0, ErrMalformed
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return 0, ErrMalformed
		}
		return int(binary.BigEndian.Uint16(p[2:4])), nil
	case 6:
		if len(p) < 40 {
			return 0, ErrMalformed
		}
		return 40 + int(binary.BigEndian.Uint16(p[4:6])), nil
	}
	return 0, ErrMalformed
}
