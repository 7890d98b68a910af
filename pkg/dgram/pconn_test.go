package dgram

import (
	"bytes"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/xtaci/kcp-go/v5"
)

// wire links two sessions in memory: what one sends, the other receives,
// through a lossy, duplicating, reordering path, and an attacker can
// inject datagrams into either side. Each side has a receive queue and a
// goroutine that delivers from it, as a socket's buffer and the demux do.
type wire struct {
	mu         sync.Mutex
	rng        *rand.Rand
	lossPct    int
	dupPct     int
	reorderPct int
	held       map[*Session][]byte // one datagram held back per side, sent after the next
	queues     map[*Session]chan arriving
	direct     bool // deliver on the sender's goroutine, at once
	delivered  atomic.Uint64
	overflow   atomic.Uint64
}

type arriving struct {
	d    []byte
	from netip.AddrPort
}

// linkedSessions makes a client and a server session as a handshake would
// (indexes crossed, keys crossed) over w.
func linkedSessions(t *testing.T, w *wire) (cli, srv *Session, cliDrops, srvDrops *drops) {
	t.Helper()
	var k1, k2 [32]byte
	crand.Read(k1[:])
	crand.Read(k2[:])
	cliDrops, srvDrops = new(drops), new(drops)
	cliAt := netip.MustParseAddrPort("198.51.100.1:40000")
	srvAt := netip.MustParseAddrPort("198.51.100.2:9623")
	var err error
	cli, err = newSession(sessionParams{local: 100, remote: 200, send: k1, recv: k2, step: testStep, newAEAD: testAEAD,
		endpoint: srvAt, drops: cliDrops, xmit: func(b []byte, _ netip.AddrPort) error { w.carry(b, srv, cliAt); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	srv, err = newSession(sessionParams{local: 200, remote: 100, send: k2, recv: k1, step: testStep, newAEAD: testAEAD,
		endpoint: cliAt, roams: true, drops: srvDrops, xmit: func(b []byte, _ netip.AddrPort) error { w.carry(b, cli, srvAt); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.queues = map[*Session]chan arriving{}
	w.mu.Unlock()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range []*Session{cli, srv} {
		q := make(chan arriving, 4096)
		w.mu.Lock()
		w.queues[s] = q
		w.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case a := <-q:
					s.receive(a.d, a.from)
					w.delivered.Add(1)
				case <-done:
					return
				}
			}
		}()
	}
	t.Cleanup(func() { cli.Close(); srv.Close(); close(done); wg.Wait() })
	return cli, srv, cliDrops, srvDrops
}

// carry delivers a copy of b to the session to, as the demux would after
// finding its index, unless the path loses it.
func (w *wire) carry(b []byte, to *Session, from netip.AddrPort) {
	w.mu.Lock()
	if w.rng == nil {
		w.rng = rand.New(rand.NewPCG(3, 4))
		w.held = map[*Session][]byte{}
	}
	if w.rng.IntN(100) < w.lossPct {
		w.mu.Unlock()
		return
	}
	copies := 1
	if w.rng.IntN(100) < w.dupPct {
		copies = 2
	}
	var out [][]byte
	if w.rng.IntN(100) < w.reorderPct && w.held[to] == nil {
		w.held[to] = bytes.Clone(b)
	} else {
		for range copies {
			out = append(out, bytes.Clone(b))
		}
		if h := w.held[to]; h != nil {
			out = append(out, h)
			w.held[to] = nil
		}
	}
	q := w.queues[to]
	w.mu.Unlock()
	for _, d := range out {
		if index(d[headerLen:]) != to.local {
			continue
		}
		if w.direct {
			to.receive(d, from)
			continue
		}
		select {
		case q <- arriving{d, from}:
		default:
			w.overflow.Add(1) // a full socket buffer
		}
	}
}

func tuneForTest(s *kcp.UDPSession) {
	s.SetStreamMode(true)
	s.SetNoDelay(1, 10, 2, 1)
	s.SetWindowSize(1024, 1024)
	s.SetMtu(1350)
	s.SetACKNoDelay(true)
}

// kcp-go on both sides over the sessions' PacketConns, with FEC, through a
// path with 5% loss, duplicates and reordering, while an attacker injects
// forged datagrams with the right index into both sides: 2 MB each way
// arrive intact, and the forged datagrams are all dropped as bad tags.
func TestKCPOverSessionsInMemory(t *testing.T) {
	w := &wire{lossPct: 5, dupPct: 3, reorderPct: 5}
	cli, srv, cliDrops, srvDrops := linkedSessions(t, w)
	const conv = 100 ^ 200
	cpc, spc := cli.PacketConn(), srv.PacketConn()
	ck, err := kcp.NewConn3(conv, cpc.RemoteAddr(), nil, 10, 3, cpc)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	sk, err := kcp.NewConn3(conv, spc.RemoteAddr(), nil, 10, 3, spc)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	tuneForTest(ck)
	tuneForTest(sk)

	stop := make(chan struct{})
	var forged atomic.Uint64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the attacker
		defer wg.Done()
		junk := make([]byte, 300)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			for _, s := range []*Session{cli, srv} {
				crand.Read(junk)
				putHeader(junk, TypeData)
				junk[1] = 0
				putIndex(junk[headerLen:], s.local)
				// A counter never used, so the forgery gets as far as the tag.
				binary.LittleEndian.PutUint64(junk[headerLen+indexLen:], 1<<20+forged.Load())
				s.receive(bytes.Clone(junk), netip.MustParseAddrPort("203.0.113.66:1234"))
				forged.Add(1)
			}
		}
	}()

	const size = 2 << 20
	up, down := make([]byte, size), make([]byte, size)
	crand.Read(up)
	crand.Read(down)
	errs := make(chan error, 4)
	transfer := func(w io.Writer, r io.Reader, data []byte) {
		go func() { _, err := w.Write(data); errs <- err }()
		go func() {
			got := make([]byte, len(data))
			_, err := io.ReadFull(r, got)
			if err == nil && sha256.Sum256(got) != sha256.Sum256(data) {
				err = io.ErrUnexpectedEOF
			}
			errs <- err
		}()
	}
	_ = ck.SetDeadline(time.Now().Add(60 * time.Second))
	_ = sk.SetDeadline(time.Now().Add(60 * time.Second))
	transfer(ck, sk, up)
	transfer(sk, ck, down)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("transfer: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	if srv.Endpoint() != netip.MustParseAddrPort("198.51.100.1:40000") {
		t.Errorf("forged datagrams moved the server's view of the client to %v", srv.Endpoint())
	}
	bad := cliDrops.Get(DropBadTag) + srvDrops.Get(DropBadTag)
	t.Logf("2 MB each way over kcp in sealed datagrams, 5%% loss: %d datagrams delivered, %d forged (all dropped: %d bad tags), replays dropped %d, queue drops %d, wire overflows %d",
		w.delivered.Load(), forged.Load(), bad, cliDrops.Get(DropReplay)+srvDrops.Get(DropReplay), cliDrops.Get(DropQueueFull)+srvDrops.Get(DropQueueFull), w.overflow.Load())
	if bad != forged.Load() {
		t.Errorf("%d forged datagrams, %d dropped as bad tags", forged.Load(), bad)
	}
	if cliDrops.Get(DropReplay)+srvDrops.Get(DropReplay) == 0 {
		t.Error("the path duplicated datagrams, yet no replay was dropped")
	}
}

// Closing a session wakes its PacketConn's reader with net.ErrClosed, and
// sends fail.
func TestPacketConnClose(t *testing.T) {
	cli, _, _, _ := linkedSessions(t, &wire{})
	pc := cli.PacketConn()
	done := make(chan error, 1)
	go func() {
		_, _, err := pc.ReadFrom(make([]byte, 100))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	pc.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ReadFrom returned no error after close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrom still blocked after close")
	}
	if _, err := pc.WriteTo([]byte("x"), nil); err == nil {
		t.Fatal("WriteTo after close succeeded")
	}
}

// A queue that stays full drops and counts after a short wait instead of
// blocking the demux; a reader that catches up gets every payload queued.
// Time is the bubble's (testing/synctest): the producer's wait and the
// reader's pause are measured on the fake clock, so a loaded machine that
// runs the reader late cannot turn "frees a slot in time" into a drop.
func TestPacketConnQueueFull(t *testing.T) { synctest.Test(t, testPacketConnQueueFull) }

func testPacketConnQueueFull(t *testing.T) {
	cli, srv, _, srvDrops := linkedSessions(t, &wire{direct: true})
	pc := srv.PacketConn()
	start := time.Now()
	for range queueLen + 6 {
		if err := cli.Send([]byte("hello")); err != nil {
			t.Fatal(err)
		}
	}
	if pc.Dropped() != 6 || srvDrops.Get(DropQueueFull) != 6 {
		t.Fatalf("dropped %d (counted %d), want 6", pc.Dropped(), srvDrops.Get(DropQueueFull))
	}
	// Each drop waited maxWait for room, no more: the producer neither
	// drops at once nor blocks the demux for longer.
	if d := time.Since(start); d != 6*maxWait {
		t.Fatalf("6 drops in %v, want %v: the producer did not wait for room exactly maxWait each", d, 6*maxWait)
	}
	// A reader that frees a slot in time: the payload waits instead of
	// dropping, and only as long as the reader took.
	go func() {
		time.Sleep(maxWait / 5)
		pc.ReadFrom(make([]byte, 100))
	}()
	start = time.Now()
	if err := cli.Send([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if pc.Dropped() != 6 {
		t.Fatalf("dropped %d with a reader catching up, want still 6", pc.Dropped())
	}
	if d := time.Since(start); d != maxWait/5 {
		t.Fatalf("the payload waited %v for a reader that read after %v", d, maxWait/5)
	}
	buf := make([]byte, 100)
	for range queueLen {
		n, _, err := pc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
	}
}

// directPair is a client and a server session wired directly: what the
// client sends, the server receives (from a copy in one reused buffer) on
// the sender's goroutine, before Send returns; what the server sends goes
// nowhere. srvDrops counts the server's drops.
func directPair(t *testing.T) (cli, srv *Session, srvDrops *drops) {
	t.Helper()
	var k1, k2 [32]byte
	crand.Read(k1[:])
	crand.Read(k2[:])
	at := netip.MustParseAddrPort("198.51.100.1:40000")
	wireBuf := make([]byte, 0, MaxDatagram)
	srvDrops = new(drops)
	cli, err := newSession(sessionParams{local: 1, remote: 2, send: k1, recv: k2, step: testStep, newAEAD: testAEAD, endpoint: at, drops: new(drops),
		xmit: func(b []byte, _ netip.AddrPort) error { srv.receive(append(wireBuf[:0], b...), at); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	srv, err = newSession(sessionParams{local: 2, remote: 1, send: k2, recv: k1, step: testStep, newAEAD: testAEAD, endpoint: at, roams: true, drops: srvDrops,
		xmit: func([]byte, netip.AddrPort) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return cli, srv, srvDrops
}

// A datagram's whole way costs no allocation in the steady state: sealed
// by Send, opened by the receiving session, queued, and read by ReadFrom.
func TestDatagramPathDoesNotAllocate(t *testing.T) {
	cli, srv, _ := directPair(t)
	pc := srv.PacketConn()
	payload := make([]byte, 1350)
	buf := make([]byte, 1500)
	allocs := testing.AllocsPerRun(2000, func() {
		if err := cli.Send(payload); err != nil {
			t.Fatal(err)
		}
		if n, _, err := pc.ReadFrom(buf); err != nil || n != len(payload) {
			t.Fatalf("read %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.2f allocations per datagram", allocs)
	}
}

type countingHandler struct{ packets, flushes int }

func (h *countingHandler) Packet(buf []byte, at int, flags byte) { h.packets++ }
func (h *countingHandler) Flush()                                { h.flushes++ }

// A packet datagram's whole way costs no allocation either: sealed by
// a single send, opened in place and handed to the packet handler at once
// (no queue); one that arrives with no handler set is counted not_ready.
func TestPacketPathDoesNotAllocate(t *testing.T) {
	cli, srv, srvDrops := directPair(t)
	pkt := make([]byte, 1400)
	if err := cli.send(KindPacket, 0, pkt); err != nil {
		t.Fatal(err)
	}
	if srvDrops.Get(DropNotReady) != 1 {
		t.Fatalf("a packet without a handler: not_ready %d", srvDrops.Get(DropNotReady))
	}
	h := &countingHandler{}
	srv.SetPacketHandler(h)
	allocs := testing.AllocsPerRun(2000, func() {
		if err := cli.send(KindPacket, FlagCsumPartial, pkt); err != nil {
			t.Fatal(err)
		}
		srv.flush()
	})
	if allocs != 0 {
		t.Fatalf("%.2f allocations per packet datagram", allocs)
	}
	if h.packets < 2000 || h.flushes < 2000 {
		t.Fatalf("handler saw %d packets and %d flushes", h.packets, h.flushes)
	}
}

// Stream payloads are kcp's segments: one larger than MaxStreamPayload is
// refused by Send and, should a peer send one, dropped as malformed on
// arrival (the queue's buffers are sized for kcp's segments), while the
// largest allowed goes through whole.
func TestStreamPayloadLimit(t *testing.T) {
	cli, srv, srvDrops := directPair(t)
	pc := srv.PacketConn()
	if err := cli.Send(make([]byte, MaxStreamPayload+1)); err == nil {
		t.Fatal("Send took a stream payload over MaxStreamPayload")
	}
	cli.smu.Lock()
	d, err := cli.sealer.seal(nil, KindStream, 0, make([]byte, MaxStreamPayload+1), cli.now())
	cli.smu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	srv.receive(d, netip.MustParseAddrPort("198.51.100.1:40000"))
	if got := srvDrops.Get(DropMalformed); got != 1 {
		t.Fatalf("an oversize stream payload that opened: %d dropped as malformed, want 1", got)
	}
	if err := cli.Send(make([]byte, MaxStreamPayload)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MaxPayload)
	if n, _, err := pc.ReadFrom(buf); err != nil || n != MaxStreamPayload {
		t.Fatalf("read %d, %v; want the %d-byte payload (and nothing of the dropped one)", n, err, MaxStreamPayload)
	}
}
