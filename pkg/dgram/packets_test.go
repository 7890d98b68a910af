package dgram

import (
	"bytes"
	"crypto/cipher"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
)

// packetSession is a session whose datagrams go nowhere: what a test
// seals with it, it opens itself with an opener of the same keys.
func packetSession(t *testing.T) (*Session, *opener) {
	t.Helper()
	var k [32]byte
	crand.Read(k[:])
	s, err := newSession(sessionParams{local: 1, remote: 2, send: k, recv: k, step: testStep, newAEAD: testAEAD,
		endpoint: netip.MustParseAddrPort("198.51.100.1:9623"), drops: new(drops),
		xmit: func([]byte, netip.AddrPort) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	o, err := newOpener(k, testStep, testAEAD)
	if err != nil {
		t.Fatal(err)
	}
	return s, o
}

// A run sealed under one hold of the lock is datagrams as single sends'
// are: each opens, with its payload and flags, under a counter of its
// own; the key steps inside the run when its count is reached, and at the
// run's first datagram when it has lived its interval.
func TestPacketSealerRun(t *testing.T) {
	s, o := packetSession(t)
	s.sealer.after = 5
	p := s.PacketSealer()
	now := s.sealer.born
	p.Begin(now)
	var run []byte
	const n = 12
	for i := range n {
		var err error
		if run, err = p.Seal(run, fmt.Appendf(nil, "packet %d", i), byte(i&1)*FlagCsumPartial); err != nil {
			t.Fatal(err)
		}
	}
	p.Release()
	if s.sealer.updates != 2 {
		t.Fatalf("%d key updates for %d datagrams at 5 a key", s.sealer.updates, n)
	}
	for i := range n {
		d := bytes.Clone(run[:DataHeaderLen+len(fmt.Sprint("packet ", i))+tagLen])
		run = run[len(d):]
		if d[1] != byte(i/5) || d[2] != KindPacket || d[3] != byte(i&1)*FlagCsumPartial {
			t.Fatalf("datagram %d: epoch %d kind %d flags %d", i, d[1], d[2], d[3])
		}
		got, _, reason, ok := o.open(d, now)
		if !ok || string(got) != fmt.Sprint("packet ", i) {
			t.Fatalf("datagram %d: %q %v", i, got, reason)
		}
	}

	// The interval is checked when the lock is taken: at the run's first
	// datagram, once.
	s.sealer.after = rekeyAfter
	p.Begin(now.Add(DefaultRekeyInterval))
	d, err := p.Seal(nil, []byte("late"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.sealer.updates != 3 || d[1] != 3 {
		t.Fatalf("after the interval: %d updates, epoch %d", s.sealer.updates, d[1])
	}
	if _, err := p.Seal(nil, make([]byte, MaxPayload+1), 0); err == nil {
		t.Fatal("a payload larger than a datagram sealed")
	}
	p.Release()
	// A second Release does nothing, and the lock is free.
	p.Release()
	if err := s.Send([]byte("stream")); err != nil {
		t.Fatal(err)
	}
}

// Runs sealed while other goroutines send stream and packet datagrams on
// the same session: every datagram gets a counter of its own (the
// receiver opens them all, none is a replay). Run it with -race.
func TestPacketSealerWithOtherSenders(t *testing.T) {
	var mu sync.Mutex
	var sent [][]byte
	keep := func(b []byte, _ netip.AddrPort) error {
		mu.Lock()
		sent = append(sent, bytes.Clone(b))
		mu.Unlock()
		return nil
	}
	var k [32]byte
	crand.Read(k[:])
	s, err := newSession(sessionParams{local: 1, remote: 2, send: k, recv: k, step: testStep, newAEAD: testAEAD,
		endpoint: netip.MustParseAddrPort("198.51.100.1:9623"), drops: new(drops), xmit: keep})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.sealer.after = 100 // key updates inside runs too
	o, _ := newOpener(k, testStep, testAEAD)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := range 300 {
				var err error
				if i%2 == 0 {
					err = s.Send([]byte("stream"))
				} else {
					err = s.send(KindPacket, 0, []byte("packet"))
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	const runs, perRun = 40, 20
	p := s.PacketSealer()
	var all [][]byte
	for range runs {
		p.Begin(s.now())
		var run []byte
		for range perRun {
			var err error
			if run, err = p.Seal(run, []byte("run"), 0); err != nil {
				t.Fatal(err)
			}
		}
		p.Release()
		for len(run) > 0 {
			all = append(all, run[:DataOverhead+3])
			run = run[DataOverhead+3:]
		}
	}
	wg.Wait()
	all = append(all, sent...)
	if len(all) != runs*perRun+600 {
		t.Fatalf("%d datagrams", len(all))
	}
	// In epoch order (a receiver holds the previous epoch's key, not older).
	for epoch := range s.sealer.epoch + 1 {
		for _, d := range all {
			if d[1] != byte(epoch) {
				continue
			}
			if _, _, reason, ok := o.open(d, s.now()); !ok {
				t.Fatalf("epoch %d counter %d: %v", epoch, d[DataHeaderLen-8], reason)
			}
		}
	}
}

// A run costs no allocation.
func TestPacketSealerDoesNotAllocate(t *testing.T) {
	s, _ := packetSession(t)
	p := s.PacketSealer()
	run := make([]byte, 0, GSOMaxBytes)
	pkt := make([]byte, 1400)
	allocs := testing.AllocsPerRun(100, func() {
		p.Begin(s.now())
		run = run[:0]
		for range 40 {
			var err error
			if run, err = p.Seal(run, pkt, FlagCsumPartial); err != nil {
				t.Fatal(err)
			}
		}
		p.Release()
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per run of 40", allocs)
	}
}

// nullAEAD seals by copying and appending a zero tag: a benchmark with it
// measures what sealing a datagram costs besides the cipher.
type nullAEAD struct{}

func (nullAEAD) NonceSize() int { return 12 }
func (nullAEAD) Overhead() int  { return tagLen }
func (nullAEAD) Seal(dst, _, plain, _ []byte) []byte {
	dst = append(dst, plain...)
	return append(dst, make([]byte, tagLen)...)
}
func (nullAEAD) Open(dst, _, sealed, _ []byte) ([]byte, error) {
	return append(dst, sealed[:len(sealed)-tagLen]...), nil
}

// BenchmarkPacketSealerRun45 is a GSO run of 45 datagrams of 1400 bytes
// sealed with a cipher that only copies: the per-datagram work of the
// datagram layer itself (header, counter, nonce, key checks, the lock).
func BenchmarkPacketSealerRun45(b *testing.B) {
	var k [32]byte
	s, err := newSession(sessionParams{local: 1, remote: 2, send: k, recv: k, step: testStep,
		newAEAD:  func([32]byte) (cipher.AEAD, [12]byte, error) { return nullAEAD{}, [12]byte{1}, nil },
		endpoint: netip.MustParseAddrPort("198.51.100.1:9623"), drops: new(drops),
		xmit: func([]byte, netip.AddrPort) error { return nil }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p := s.PacketSealer()
	run := make([]byte, 0, GSOMaxBytes)
	pkt := make([]byte, 1400)
	b.ReportAllocs()
	for b.Loop() {
		p.Begin(s.now())
		run = run[:0]
		for range 45 {
			run, _ = p.Seal(run, pkt, FlagCsumPartial)
		}
		p.Release()
	}
}

// groPlacer hands a session's packets to a coalescer, as the udp
// transport does (pkg/transport's Datagrams).
type groPlacer struct{ c *packet.Coalescer }

func (g groPlacer) Packet(b []byte, at int, flags byte) { g.c.Add(b, at, flags&FlagCsumPartial != 0) }
func (g groPlacer) Flush()                              { g.c.Flush() }
func (g groPlacer) Place(n int) []byte                  { return g.c.Place(n) }
func (g groPlacer) Placed(dst []byte, ok bool, flags byte) {
	g.c.Placed(dst, ok, flags&FlagCsumPartial != 0)
}

// BenchmarkOpenRun45 is the receiving side of a GSO run: a UDP GRO
// message of 45 datagrams, each a 1400-byte TCP segment of one flow,
// opened by the session the reader holds and joined by a coalescer into
// one frame. With the null cipher (it only copies) it is the per-datagram
// work of the receive path beyond the cipher (the replay window, the key
// checks, placing, the coalescer's header checks); with AES-128-GCM, the
// cipher the datagram sessions use where the CPU has AES, it is the whole
// of the receive path's user-space work.
func BenchmarkOpenRun45(b *testing.B) {
	for _, c := range []struct {
		name   string
		cipher func([32]byte) (cipher.AEAD, [12]byte, error)
	}{
		{"null", func([32]byte) (cipher.AEAD, [12]byte, error) { return nullAEAD{}, [12]byte{1}, nil }},
		{"aes128gcm", func(k [32]byte) (cipher.AEAD, [12]byte, error) { return secure.EpochCipher(secure.AES128GCM, k) }},
	} {
		b.Run(c.name, func(b *testing.B) { benchOpenRun45(b, c.cipher) })
	}
}

func benchOpenRun45(b *testing.B, newAEAD func([32]byte) (cipher.AEAD, [12]byte, error)) {
	var k [32]byte
	at := netip.MustParseAddrPort("198.51.100.1:9623")
	params := func(local, remote uint32) sessionParams {
		return sessionParams{local: local, remote: remote, send: k, recv: k, step: testStep, newAEAD: newAEAD,
			endpoint: at, drops: new(drops), xmit: func([]byte, netip.AddrPort) error { return nil }}
	}
	cli, err := newSession(params(1, 2))
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	srv, err := newSession(params(2, 1))
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	frames := 0
	srv.SetPacketHandler(groPlacer{packet.NewCoalescer(func([]byte) { frames++ })})

	const n, segs = 1400, 45
	seg := make([]byte, n) // IPv4, TCP with timestamps, 1348 bytes of payload
	seg[0], seg[8], seg[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(seg[2:], n)
	copy(seg[12:], []byte{100, 64, 240, 2, 10, 244, 1, 20})
	binary.BigEndian.PutUint16(seg[20:], 40000)
	binary.BigEndian.PutUint16(seg[22:], 5201)
	seg[32], seg[33] = 8<<4, 0x10 // 32 bytes of header; ACK
	copy(seg[40:], []byte{1, 1, 8, 10})
	p := cli.PacketSealer()
	p.Begin(cli.now())
	var run []byte
	for i := range segs {
		binary.BigEndian.PutUint32(seg[24:], uint32(1+i*(n-52)))
		run, _ = p.Seal(run, seg, FlagCsumPartial)
	}
	p.Release()
	now := srv.now()
	openRun := func(run []byte) {
		// The same run each time, as new: a fresh replay window. Each
		// datagram opens into the coalescer's frame, its own bytes left
		// as they were.
		srv.opener.cur.window = replayWindow{}
		var rx receiver
		for d := run; len(d) > 0; d = d[n+DataOverhead:] {
			rx.receive(srv, d[:n+DataOverhead], at, now)
		}
		rx.release()
		srv.flush()
	}
	// The first segment a coalescer sees is opened in place (it has no
	// buffer yet): a copy of the run takes that.
	openRun(bytes.Clone(run))
	frames = 0
	b.SetBytes(segs * n)
	b.ReportAllocs()
	for b.Loop() {
		openRun(run)
	}
	if frames != b.N {
		b.Fatalf("%d frames out of %d runs: the segments did not all join", frames, b.N)
	}
}
