package session

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/gtun/gtun/pkg/packet"
)

// Data stream framing: [4-byte big-endian length][packet]. Four bytes leave
// room for super-packets beyond 64 KiB in a later protocol version.
const frameHeader = 4

// maxBatch is how many bytes of packets one stream write carries: enough to
// amortize the per-write cost of yamux, sealing and the syscall.
const maxBatch = 128 * 1024

// PacketReader reads framed packets from the data stream.
type PacketReader struct {
	r   *bufio.Reader
	hdr [frameHeader]byte
}

// NewPacketReader wraps the data stream. The buffer is small on purpose:
// it serves the 4-byte headers and small packets, while a large packet is
// read past it straight into the packet buffer (one copy fewer).
func NewPacketReader(r io.Reader) *PacketReader {
	return &PacketReader{r: bufio.NewReaderSize(r, 2048)}
}

// ReadPacket reads the next packet into b.
func (pr *PacketReader) ReadPacket(b *packet.Buf) error {
	if _, err := io.ReadFull(pr.r, pr.hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(pr.hdr[:])
	if n == 0 || n > packet.MaxSize {
		return fmt.Errorf("data frame length %d out of range", n)
	}
	if _, err := io.ReadFull(pr.r, b.B[:n]); err != nil {
		return err
	}
	b.N = int(n)
	return nil
}

// appendFrame appends one framed packet to dst.
func appendFrame(dst, pkt []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(pkt)))
	return append(dst, pkt...)
}
