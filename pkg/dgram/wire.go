// Package dgram is gtun's authenticated datagram layer: one UDP socket per
// listener, WireGuard-style messages (initiation, response, cookie reply,
// data), and sessions whose every datagram is sealed under keys from the
// Noise handshake (pkg/secure). Nothing that has not proven itself reaches
// anything stateful: a datagram is dropped and counted, without state or
// reply, unless it is
//
//   - a data datagram for a known receiver index whose counter is inside
//     that session's replay window and whose tag opens, or
//   - an initiation whose mac1 (keyed by the server's public key) is valid,
//     and under load whose mac2 proves its source address (else it gets a
//     stateless cookie reply and costs no Diffie-Hellman), or
//   - on the client, a response or cookie reply to one of its own initiations.
//
// What rides inside a session is not this package's business: the kcp
// transport (pkg/transport) runs kcp-go over a session's PacketConn, and a
// future plain udp transport can hand a session's payloads straight to the
// records layer. The handshake demux (Listener, Dial) and the data path
// (Session's Seal and open) are separate for that reason.
package dgram

import (
	"encoding/binary"

	"golang.org/x/crypto/chacha20poly1305"
)

// Message types: the first byte of every datagram. The next three bytes are
// zero, except in a data datagram, whose second byte is its key epoch and
// whose third is the kind of its payload.
const (
	TypeInitiation  byte = 1
	TypeResponse    byte = 2
	TypeCookieReply byte = 3
	TypeData        byte = 4
)

// Payload kinds: the third byte of a data datagram, authenticated with the
// rest of its header. A stream datagram carries a segment of the session's
// reliable stream (kcp: the records of the control plane, and of the data
// on the kcp transport); a packet datagram carries one IP packet of the
// udp transport, handed to the session's packet handler as it opens,
// without a queue.
const (
	KindStream byte = 0
	KindPacket byte = 1
)

// Flags of a packet datagram: its fourth header byte (authenticated).
// FlagCsumPartial: the packet's TCP or UDP checksum field holds only the
// pseudo-header's sum, as a TUN device with checksum offload hands it
// over; the receiver's kernel completes it (or never needs to: a packet
// forwarded on keeps the offload), so neither side spends a pass over
// the payload on it.
const FlagCsumPartial byte = 1

// Layouts (little-endian indexes and counters, as WireGuard's):
//
//	initiation:   [1 0 0 0][sender index 4][first message: Noise + mac1][mac2 16]
//	response:     [2 0 0 0][sender index 4][receiver index 4][Noise reply]
//	cookie reply: [3 0 0 0][receiver index 4][nonce 24][cookie 16 + tag 16]
//	data:         [4 epoch kind flags][receiver index 4][counter 8][sealed payload + tag 16]
//
// The initiation's mac2 covers everything before it; its mac1 is inside the
// first message (pkg/secure puts it there, so TCP and UDP share it) and the
// cookie reply is sealed with that mac1 as additional data, so only the
// initiator that sent it can use the cookie. A data datagram's header is the
// additional data of its seal: type, epoch, index and counter are
// authenticated.
const (
	headerLen = 4
	indexLen  = 4
	macLen    = 16
	tagLen    = chacha20poly1305.Overhead // AES-GCM's tag is 16 bytes too

	// InitiationOverhead is what an initiation adds to the first message.
	InitiationOverhead = headerLen + indexLen + macLen
	// ResponseOverhead is what a response adds to the Noise reply.
	ResponseOverhead = headerLen + 2*indexLen
	// CookieReplyLen is the size of a cookie reply.
	CookieReplyLen = headerLen + indexLen + chacha20poly1305.NonceSizeX + cookieLen + tagLen
	// DataHeaderLen is the header of a data datagram, before the sealed payload.
	DataHeaderLen = headerLen + indexLen + 8
	// DataOverhead is what a data datagram adds to its payload.
	DataOverhead = DataHeaderLen + tagLen

	// MaxDatagram is the largest datagram read or written: a packet of a
	// tunnel MTU up to MaxPayload, for a path that carries jumbo frames
	// (9000 bytes and a little more). Payloads are sized by the layer above
	// to fit the path: the tunnel MTU for packets (1400 by default, for a
	// 1500-byte path), kcp-go's MTU for stream datagrams.
	MaxDatagram = 9216
	// MaxPayload is the most a data datagram carries.
	MaxPayload = MaxDatagram - DataOverhead
	// MaxStreamPayload is the most a stream datagram carries. kcp-go sizes
	// its packets to its own MTU (1350), well under it; a session's queue
	// of stream payloads holds buffers of this size, not of MaxPayload.
	MaxStreamPayload = 2048 - DataOverhead

	// maxFirstMessage bounds the first message an initiation may carry
	// (the Noise IK message with gtun's payload and mac1 is ~130 bytes).
	maxFirstMessage = 512
)

// header reads a datagram's type and checks the bytes that must be zero.
// A data datagram's second byte is its epoch, its third its payload kind,
// its fourth (packets only) its flags.
func header(b []byte) (typ byte, ok bool) {
	if len(b) < headerLen {
		return 0, false
	}
	typ = b[0]
	if typ == TypeData {
		return typ, (b[2] == KindStream && b[3] == 0) || (b[2] == KindPacket && b[3]&^FlagCsumPartial == 0)
	}
	return typ, b[1] == 0 && b[2] == 0 && b[3] == 0
}

func putHeader(b []byte, typ byte) {
	b[0], b[1], b[2], b[3] = typ, 0, 0, 0
}

func index(b []byte) uint32       { return binary.LittleEndian.Uint32(b) }
func putIndex(b []byte, i uint32) { binary.LittleEndian.PutUint32(b, i) }

// initiation is a parsed initiation datagram; its slices alias the datagram.
type initiation struct {
	sender   uint32
	first    []byte // secure's first message, mac1 last
	mac1     []byte
	mac2     []byte
	beforeM2 []byte // what mac2 covers
}

func parseInitiation(b []byte) (initiation, bool) {
	n := len(b) - InitiationOverhead
	if n < macLen+1 || n > maxFirstMessage {
		return initiation{}, false
	}
	first := b[headerLen+indexLen : len(b)-macLen]
	return initiation{
		sender:   index(b[headerLen:]),
		first:    first,
		mac1:     first[len(first)-macLen:],
		mac2:     b[len(b)-macLen:],
		beforeM2: b[:len(b)-macLen],
	}, true
}

// appendInitiation builds an initiation with a zero mac2 (the caller fills
// it when it holds a cookie).
func appendInitiation(dst []byte, sender uint32, first []byte) []byte {
	at := len(dst)
	dst = append(dst, make([]byte, headerLen+indexLen)...)
	putHeader(dst[at:], TypeInitiation)
	putIndex(dst[at+headerLen:], sender)
	dst = append(dst, first...)
	return append(dst, make([]byte, macLen)...)
}

// response is a parsed response datagram.
type response struct {
	sender, receiver uint32
	reply            []byte
}

func parseResponse(b []byte) (response, bool) {
	if len(b) <= ResponseOverhead || len(b) > ResponseOverhead+maxFirstMessage {
		return response{}, false
	}
	return response{sender: index(b[headerLen:]), receiver: index(b[headerLen+indexLen:]), reply: b[ResponseOverhead:]}, true
}

func appendResponse(dst []byte, sender, receiver uint32, reply []byte) []byte {
	at := len(dst)
	dst = append(dst, make([]byte, ResponseOverhead)...)
	putHeader(dst[at:], TypeResponse)
	putIndex(dst[at+headerLen:], sender)
	putIndex(dst[at+headerLen+indexLen:], receiver)
	return append(dst, reply...)
}
