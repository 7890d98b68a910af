package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/gtun/gtun/pkg/packet"
)

func TestPacketFramingRoundTrip(t *testing.T) {
	var stream []byte
	for i, n := range sizes {
		pkt := make([]byte, n)
		fill(pkt, i)
		stream = appendFrame(stream, pkt)
	}
	// A reader that returns a few bytes at a time, so frames straddle reads.
	pr := NewPacketReader(&chunky{r: bytes.NewReader(stream), n: 1000})
	b := packet.Get()
	defer packet.Put(b)
	for i, n := range sizes {
		if err := pr.ReadPacket(b); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		want := make([]byte, n)
		fill(want, i)
		if !bytes.Equal(b.Bytes(), want) {
			t.Fatalf("packet %d (%d bytes) differs, got %d bytes", i, n, b.N)
		}
	}
	if err := pr.ReadPacket(b); !errors.Is(err, io.EOF) {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
}

type chunky struct {
	r io.Reader
	n int
}

func (c *chunky) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

func TestPacketReaderRejects(t *testing.T) {
	hdr := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"length 0", hdr(0), "out of range"},
		{"length over MaxSize", append(hdr(packet.MaxSize+1), make([]byte, packet.MaxSize+1)...), "out of range"},
		{"length 4 GiB-1", hdr(0xffffffff), "out of range"},
		{"truncated packet", append(hdr(100), make([]byte, 99)...), io.ErrUnexpectedEOF.Error()},
		{"truncated header", []byte{0, 0}, io.ErrUnexpectedEOF.Error()},
	}
	for _, c := range cases {
		b := packet.Get()
		err := NewPacketReader(bytes.NewReader(c.in)).ReadPacket(b)
		packet.Put(b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: ReadPacket = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

func TestAppendFrame(t *testing.T) {
	got := appendFrame([]byte("x"), []byte("abc"))
	if want := []byte("x\x00\x00\x00\x03abc"); !bytes.Equal(got, want) {
		t.Errorf("appendFrame = %q, want %q", got, want)
	}
}

// framingLoop returns one step of the data path's framing: frame a packet
// into a reused buffer and read it back through a PacketReader.
func framingLoop(tb testing.TB, size int) func() {
	pkt := make([]byte, size)
	fill(pkt, 1)
	buf := make([]byte, 0, frameHeader+packet.MaxSize)
	var src bytes.Reader
	pr := NewPacketReader(&src)
	out := packet.Get()
	return func() {
		buf = appendFrame(buf[:0], pkt)
		src.Reset(buf)
		if err := pr.ReadPacket(out); err != nil || out.N != size {
			tb.Fatalf("ReadPacket: %v (%d bytes)", err, out.N)
		}
	}
}

func TestPacketFramingDoesNotAllocate(t *testing.T) {
	for _, size := range []int{64, 1400, packet.MaxSize} {
		step := framingLoop(t, size)
		if allocs := testing.AllocsPerRun(100, step); allocs != 0 {
			t.Errorf("%d-byte packets: %v allocations per packet, want 0", size, allocs)
		}
	}
}

func BenchmarkPacketFraming(b *testing.B) {
	for _, size := range []int{64, 1400, packet.MaxSize} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			step := framingLoop(b, size)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				step()
			}
		})
	}
}
