package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/dgram"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
)

// tsoFrame is [virtio-net header][IPv4 TCP packet] as a TUN hands over a
// TSO super-packet: payload to be cut into mss-sized segments, the TCP
// checksum field holding the pseudo-header's sum.
func tsoFrame(payload []byte, mss int, seq uint32) []byte {
	f := make([]byte, packet.VnetHdrLen+40+len(payload))
	h := packet.VnetHdr{Flags: packet.VnetNeedsCsum, GSOType: packet.GSOTCPv4, HdrLen: 40, GSOSize: uint16(mss), CsumStart: 20, CsumOffset: 16}
	h.Encode(f)
	p := f[packet.VnetHdrLen:]
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[6] = 0x40 // DF
	p[8], p[9] = 64, 6
	copy(p[12:], []byte{100, 64, 240, 2, 10, 244, 1, 20})
	binary.BigEndian.PutUint16(p[10:], ^packet.Fold(packet.Sum(p[:20], 0)))
	th := p[20:]
	binary.BigEndian.PutUint16(th, 40000)
	binary.BigEndian.PutUint16(th[2:], 8080)
	binary.BigEndian.PutUint32(th[4:], seq)
	binary.BigEndian.PutUint32(th[8:], 77)
	th[12], th[13] = 5<<4, 0x18 // ACK|PSH
	binary.BigEndian.PutUint16(th[14:], 65535)
	copy(th[20:], payload)
	binary.BigEndian.PutUint16(th[16:], packet.Fold(packet.Sum(p[12:20], 6+uint32(len(th)))))
	return f
}

// udpPair is a client and a server Datagrams over loopback: a real
// handshake, real sockets (UDP GSO and GRO where the kernel has them).
func udpPair(t *testing.T) (cli, srv *Datagrams, l *KCPListener) {
	t.Helper()
	srvKey, _ := secure.GeneratePrivateKey()
	cliKey, _ := secure.GeneratePrivateKey()
	r := secure.NewResponder(secure.ServerConfig{Private: srvKey, Authorize: func(secure.PublicKey, uint64) error { return nil }})
	l, err := ListenKCP("127.0.0.1:0", Options{}, dgram.ListenConfig{Responder: r})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan *Accepted, 1)
	go func() {
		if a, err := l.Accept(); err == nil {
			accepted <- a
		}
	}()
	sc, c, err := DialUDP(context.Background(), l.Addr().String(), Options{}, secure.ClientConfig{Private: cliKey, ServerKey: srvKey.Public()}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	select {
	case a := <-accepted:
		t.Cleanup(func() { a.Conn.Close() })
		return c, NewDatagrams(a.Session), l
	case <-time.After(5 * time.Second):
		t.Fatal("nothing accepted")
	}
	return nil, nil, nil
}

// A TSO frame sent through the udp transport arrives as frames the TUN
// takes (each valid, plain or a TSO frame again) that carry the same bytes
// in order; packets before the receiver is set are dropped and counted.
func TestDatagramsCarryTSOFrames(t *testing.T) {
	cli, srv, l := udpPair(t)

	early := tsoFrame(make([]byte, 100), 1360, 1)
	if err := cli.SendFrame(early); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Stats().Dropped[dgram.DropNotReady.String()] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a packet before the receiver was set is not counted: %v", l.Stats().Dropped)
		}
		time.Sleep(10 * time.Millisecond)
	}

	var mu sync.Mutex
	var got []byte
	var frames, segs int
	srv.SetReceiver(func(f []byte) {
		h := packet.DecodeVnetHdr(f)
		if err := h.Validate(f[packet.VnetHdrLen:]); err != nil && !h.Plain() {
			t.Errorf("frame with a bad offload header: %v", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		frames++
		err := packet.Segment(h, f[packet.VnetHdrLen:], make([]byte, packet.MaxIP), func(p []byte) error {
			segs++
			got = append(got, p[40:]...)
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})
	payload := make([]byte, 200_000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	seq := uint32(1000)
	for off := 0; off < len(payload); off += 60_000 {
		chunk := payload[off:min(off+60_000, len(payload))]
		if err := cli.SendFrame(tsoFrame(chunk, 1360, seq)); err != nil {
			t.Fatal(err)
		}
		seq += uint32(len(chunk))
	}
	waitLen(&mu, &got, len(payload), deadline)
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got, payload) {
		t.Fatalf("received %d bytes, want %d, equal %v (datagrams dropped: %v)", len(got), len(payload), bytes.Equal(got, payload), l.Stats().Dropped)
	}
	t.Logf("%d segments arrived in %d frames", segs, frames)
	if sent := cli.Session().Stats().TxDatagrams; sent < uint64(segs) {
		t.Fatalf("client counts %d datagrams sent for %d segments", sent, segs)
	}
}

// waitLen waits until *got (under mu) holds n bytes, or until deadline.
func waitLen(mu *sync.Mutex, got *[]byte, n int, deadline time.Time) {
	for {
		mu.Lock()
		have := len(*got)
		mu.Unlock()
		if have >= n || time.Now().After(deadline) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SendFrameMore holds a frame's datagrams back while its GSO send has room
// for the next frame's; they go with it, or with SendHeld, or ahead of a
// plain packet, in order.
func TestSendFrameMoreFillsGSOSends(t *testing.T) {
	cli, srv, _ := udpPair(t)
	var mu sync.Mutex
	var got []byte
	srv.SetReceiver(func(f []byte) {
		h := packet.DecodeVnetHdr(f)
		mu.Lock()
		defer mu.Unlock()
		err := packet.Segment(h, f[packet.VnetHdrLen:], make([]byte, packet.MaxIP), func(p []byte) error {
			got = append(got, p[40:]...)
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})
	const mss = 1360
	payload := make([]byte, 80*mss+100)
	for i := range payload {
		payload[i] = byte(i * 13)
	}
	sent := func() uint64 { return cli.Session().Stats().TxDatagrams }
	per := dgram.GSOMaxBytes / (40 + mss + dgram.DataOverhead) // datagrams one GSO send takes

	// 40 full segments fit one GSO send: all held.
	if err := cli.SendFrameMore(tsoFrame(payload[:40*mss], mss, 1000)); err != nil {
		t.Fatal(err)
	}
	if n := sent(); n != 0 {
		t.Fatalf("%d datagrams sent, want all 40 held", n)
	}
	// 40 more: the send fills up and goes, the rest is held.
	if err := cli.SendFrameMore(tsoFrame(payload[40*mss:80*mss], mss, 1000+40*mss)); err != nil {
		t.Fatal(err)
	}
	if n := sent(); n != uint64(per) {
		t.Fatalf("%d datagrams sent, want one full GSO send of %d", n, per)
	}
	// A plain packet: the held datagrams go ahead of it.
	plain := tsoFrame(payload[80*mss:], mss, 1000+80*mss)
	clear(plain[:packet.VnetHdrLen])
	if err := cli.SendFrameMore(plain); err != nil {
		t.Fatal(err)
	}
	if n := sent(); n != 81 {
		t.Fatalf("%d datagrams sent, want 81", n)
	}
	if err := cli.SendHeld(); err != nil {
		t.Fatal(err)
	}
	// A frame whose last segment is short ends its send: nothing held.
	if err := cli.SendFrameMore(tsoFrame(payload[:3*mss+7], mss, 5000)); err != nil {
		t.Fatal(err)
	}
	if n := sent(); n != 85 {
		t.Fatalf("%d datagrams sent, want 85 (a short last segment is never held)", n)
	}
	want := append(bytes.Clone(payload), payload[:3*mss+7]...)
	waitLen(&mu, &got, len(want), time.Now().Add(5*time.Second))
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got, want) {
		t.Fatalf("received %d bytes, want %d in order", len(got), len(want))
	}
}

// The clock (which decides key updates by time) is read once a frame, and
// not again for frames that join a run held back for them, up to a GSO
// send's worth of datagrams: with a key that ages in a nanosecond, each
// reading updates the key once.
func TestSendFrameReadsTheClockOncePerRun(t *testing.T) {
	s := loopbackSession(t)
	cli := NewDatagrams(s)
	var datagrams int
	cli.send = func(run []byte, seg int) error {
		datagrams += (len(run) + seg - 1) / seg
		return nil
	}
	s.SetRekeyInterval(time.Nanosecond)
	updates := func() uint64 { sent, _ := cli.Rekeys(); return sent }
	small := func(seq uint32) []byte { return tsoFrame(make([]byte, 100), 1360, seq) } // one datagram each

	for i := range 10 {
		if err := cli.SendFrame(small(uint32(i) * 100)); err != nil {
			t.Fatal(err)
		}
	}
	if n := updates(); n < 9 { // two readings a nanosecond apart may read the same
		t.Fatalf("%d key updates for 10 frames sent one by one, want one each", n)
	}
	before := updates()
	const frames = 200
	for i := range frames {
		if err := cli.SendFrameMore(small(uint32(i) * 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cli.SendHeld(); err != nil {
		t.Fatal(err)
	}
	// Readings at frames 1, 65, 129 and 193: each starts a GSO send.
	if n := updates() - before; n < 3 || n > 5 {
		t.Fatalf("%d key updates for %d frames joined into runs of %d, want 4", n, frames, dgram.GSOMaxSegments)
	}
	if datagrams != 10+frames {
		t.Fatalf("%d datagrams sent, want %d", datagrams, 10+frames)
	}
}

// Packets that need no offload work (what a gateway forwards) join the
// runs as segments do: those of one size that the TUN had ready at once
// leave in full GSO sends, a larger one sends the run first, and one
// larger than a datagram carries is refused (ErrTooBig) after what was
// held has gone.
func TestPlainFramesJoinRuns(t *testing.T) {
	cli := NewDatagrams(loopbackSession(t))
	var sends []int // datagrams in each
	cli.send = func(run []byte, seg int) error {
		sends = append(sends, (len(run)+seg-1)/seg)
		return nil
	}
	for range 100 {
		if err := cli.SendFrameMore(plainUDPFrame(64)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cli.SendFrameMore(plainUDPFrame(500)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sends, []int{64, 36}) {
		t.Fatalf("sends of %v datagrams, want a full GSO send (64), then the rest (36) before the larger one, held", sends)
	}
	if err := cli.SendFrameMore(plainUDPFrame(dgram.MaxPayload)); !errors.Is(err, ErrTooBig) {
		t.Fatalf("a packet larger than a datagram carries: %v", err)
	}
	if !slices.Equal(sends, []int{64, 36, 1}) {
		t.Fatalf("sends of %v datagrams, want 64, 36, then the larger one held before the refused one", sends)
	}
	if err := cli.SendHeld(); err != nil {
		t.Fatal(err)
	}
	if len(sends) != 3 {
		t.Fatalf("sends %v: nothing was held", sends)
	}
}

// BenchmarkSendFrame64K is the udp transport's send path for one TSO
// frame from the TUN: cut, sealed and sent over loopback with UDP GSO
// (the receiving side reads and drops what is not yet routed).
func BenchmarkSendFrame64K(b *testing.B) {
	cli := NewDatagrams(loopbackSession(b))
	frame := tsoFrame(make([]byte, 63_000), 1360, 1)
	f := bytes.Clone(frame)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		copy(f, frame)
		if err := cli.SendFrame(f); err != nil {
			b.Fatal(err)
		}
	}
}

// loopbackSession is a client's datagram session (without kcp) to a
// listener on loopback, the server's half of the handshake done too (its
// allocations are not the send path's: AllocsPerRun counts the whole
// process's). Both end with the test.
func loopbackSession(tb testing.TB) *dgram.Session {
	tb.Helper()
	srvKey, _ := secure.GeneratePrivateKey()
	cliKey, _ := secure.GeneratePrivateKey()
	r := secure.NewResponder(secure.ServerConfig{Private: srvKey, Authorize: func(secure.PublicKey, uint64) error { return nil }})
	l, err := dgram.Listen("127.0.0.1:0", dgram.ListenConfig{Responder: r})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	s, err := dgram.Dial(context.Background(), l.Addr().String(), dgram.DialConfig{Handshake: secure.ClientConfig{Private: cliKey, ServerKey: srvKey.Public()}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	a, err := l.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	// The server side takes what arrives: dropped as not ready, it would be
	// counted and, now and then, logged, and a log line's allocations would
	// land in an allocation test's count (AllocsPerRun counts the process).
	a.SetPacketHandler(discardPackets{})
	return s
}

// discardPackets is a packet handler that drops what it gets.
type discardPackets struct{}

func (discardPackets) Packet([]byte, int, byte) {}
func (discardPackets) Flush()                   {}

// BenchmarkSealFrame64K is BenchmarkSendFrame64K without the system
// calls and the receiving side: the user-space work of the send path
// alone (cutting a 63 KB TSO frame into 47 segments and sealing each into
// its run), which is what the udp transport pays per datagram beyond the
// tcp transport.
func BenchmarkSealFrame64K(b *testing.B) {
	cli := NewDatagrams(loopbackSession(b))
	var runs, datagrams int
	cli.send = func(run []byte, seg int) error {
		runs++
		datagrams += (len(run) + seg - 1) / seg
		return nil
	}
	frame := tsoFrame(make([]byte, 63_000), 1360, 1)
	hdrs := [packet.VnetHdrLen + 40]byte(frame)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		// The cut overwrites the frame: its headers are put back (the
		// payload is not read but by the cipher, whatever it holds).
		*(*[packet.VnetHdrLen + 40]byte)(frame) = hdrs
		if err := cli.SendFrame(frame); err != nil {
			b.Fatal(err)
		}
	}
	if want := (63_000 + 1359) / 1360; datagrams != want*b.N {
		b.Fatalf("%d datagrams in %d runs for %d frames, want %d a frame", datagrams, runs, b.N, want)
	}
}

// udpFrame is [virtio-net header][IPv4 UDP packet] as a TUN hands over a
// datagram of a local socket: the checksum left to the offload, the
// pseudo-header's sum in its field.
func udpFrame(payload []byte) []byte {
	f := make([]byte, packet.VnetHdrLen+28+len(payload))
	h := packet.VnetHdr{Flags: packet.VnetNeedsCsum, CsumStart: 20, CsumOffset: 6}
	h.Encode(f)
	p := f[packet.VnetHdrLen:]
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 17
	copy(p[12:], []byte{100, 64, 240, 2, 10, 244, 1, 20})
	binary.BigEndian.PutUint16(p[10:], ^packet.Fold(packet.Sum(p[:20], 0)))
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 5201)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	binary.BigEndian.PutUint16(p[26:], packet.Fold(packet.Sum(p[12:20], 17+uint32(8+len(payload)))))
	return f
}

// plainUDPFrame is udpFrame of n bytes of payload with a plain virtio-net
// header, nothing left to the offloads, as for a packet a gateway
// forwards (the send path does not look at its checksum).
func plainUDPFrame(n int) []byte {
	f := udpFrame(make([]byte, n))
	clear(f[:packet.VnetHdrLen])
	return f
}

// BenchmarkSealSmallFrames64 is the send path of 64 small UDP packets
// (64 bytes of payload, as the packet-rate test sends) that the TUN had
// ready at once: each completed, sealed and joined into one GSO run,
// without the system call.
func BenchmarkSealSmallFrames64(b *testing.B) { benchSmallFrames(b, false, false) }

// BenchmarkSendPlainFrames64 is the send path of 64 small UDP packets
// with nothing left to the offloads (packets a gateway forwards) that the
// TUN had ready at once, sent over loopback.
func BenchmarkSendPlainFrames64(b *testing.B) { benchSmallFrames(b, true, true) }

// benchSmallFrames sends bursts of 64 small UDP packets with SendFrameMore
// and SendHeld: plain (complete checksums) or with the checksum left to
// the offload, over loopback or to a stand-in for the system call.
func benchSmallFrames(b *testing.B, plain, syscall bool) {
	cli := NewDatagrams(loopbackSession(b))
	if !syscall {
		cli.send = func([]byte, int) error { return nil }
	}
	frame := udpFrame(make([]byte, 64))
	if plain {
		frame = plainUDPFrame(64)
	}
	b.SetBytes(64 * int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		for range 64 {
			if err := cli.SendFrameMore(frame); err != nil {
				b.Fatal(err)
			}
		}
		if err := cli.SendHeld(); err != nil {
			b.Fatal(err)
		}
	}
}
