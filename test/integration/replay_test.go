package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/server"
	"github.com/gtun/gtun/pkg/session"
)

// recConn records what is written to it while recording is on: what an
// eavesdropper on the wan captures of one direction.
type recConn struct {
	net.Conn
	mu  sync.Mutex
	on  bool
	buf bytes.Buffer
}

func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.on {
		c.buf.Write(p)
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// start forgets what was captured and captures from now on.
func (c *recConn) start() {
	c.mu.Lock()
	c.buf.Reset()
	c.on = true
	c.mu.Unlock()
}

// stop ends capturing and returns what was captured.
func (c *recConn) stop() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = false
	return bytes.Clone(c.buf.Bytes())
}

// captured returns what was captured so far.
func (c *recConn) captured() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// recordedPeer is a raw-protocol client whose outgoing bytes can be captured.
type recordedPeer struct {
	rawPeer
	rec   *recConn
	init  []byte        // its handshake's first message, as sent
	ended chan struct{} // closed when its session ends
	err   error         // why, once ended is closed
}

func dialRecorded(t *testing.T, e *env, host, keyPath string) *recordedPeer {
	t.Helper()
	key, serverPub := e.handshakeKeys(t, keyPath)
	rec := &recConn{Conn: dialInNS(t, e.tp.NS(host), gwWAN+":"+port), on: true}
	sc, err := secure.Client(rec, secure.ClientConfig{Private: key, ServerKey: serverPub})
	if err != nil {
		rec.Close()
		t.Fatalf("handshake: %v", err)
	}
	p := &recordedPeer{rec: rec, init: rec.stop(), ended: make(chan struct{})}
	sess, cfg, err := session.Dial(context.Background(), sc, &session.Msg{Type: session.TypeHello, Version: secure.ProtocolVersion, Name: "rec"}, 0, nil)
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		p.err = sess.Run(ctx, session.Handlers{})
		close(p.ended)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.ended
	})
	pfx, err := netip.ParsePrefix(cfg.Address)
	if err != nil {
		t.Fatal(err)
	}
	p.sess, p.addr = sess, pfx.Addr()
	return p
}

// sendUDP sends one plain frame with a UDP packet from src to dst port
// 9999, with a valid IP header checksum so that the kernel forwards it if
// gtund does.
func (p *rawPeer) sendUDP(src, dst netip.Addr, payload []byte) {
	pkt := udpPacket(src, dst, payload)
	binary.BigEndian.PutUint16(pkt[22:], 9999)
	binary.BigEndian.PutUint16(pkt[10:], ^packet.Fold(packet.Sum(pkt[:20], 0)))
	b := packet.Get()
	clear(b.B[:packet.VnetHdrLen])
	b.N = packet.VnetHdrLen + copy(b.B[packet.VnetHdrLen:], pkt)
	p.sess.Enqueue(b)
}

// watchPodUDP captures, in the pod, the UDP packets to port 9999: what
// gtund forwarded into the cluster network.
func watchPodUDP(t *testing.T, e *env) *testnet.Proc {
	t.Helper()
	p := e.tp.Start(t, "pod", "", "tcpdump", "-l", "-n", "-i", "any", "udp", "and", "dst", "port", "9999")
	testnet.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(p.Log(), "listening on") {
			return errors.New("tcpdump not listening yet")
		}
		return nil
	})
	return p
}

// podUDP counts the packets watchPodUDP saw with this payload length.
func podUDP(p *testnet.Proc, payloadLen int) int {
	return strings.Count(p.Log(), fmt.Sprintf("UDP, length %d\n", payloadLen))
}

// serverClosed waits until the server closes c (EOF or reset), failing if
// it stays open for within, or answers.
func serverClosed(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	n, err := c.Read(make([]byte, 512))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", within)
	}
	if n > 0 {
		t.Fatalf("server answered %d bytes", n)
	}
}

func gtundStatus(t *testing.T, e *env) server.Status {
	t.Helper()
	var st server.Status
	status(t, bins.gtund, e.serverSocket(), &st)
	return st
}

// A captured first handshake message, sent again (while the original
// session is up, and after it is gone), is refused as a replay before any
// DH: no reply, connection closed, counted.
func TestReplayedHandshakeRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rkey, rpub := e.key(t, "raw")
	e.startServer(t, e.serverConfig(t, peer{name: "raw", pub: rpub}))
	orig := dialRecorded(t, e, "vm", rkey)
	if len(orig.init) < 2 || int(binary.BigEndian.Uint16(orig.init))+2 != len(orig.init) {
		t.Fatalf("captured %d bytes, not one handshake message", len(orig.init))
	}
	for i := range 2 {
		c := dialInNS(t, e.tp.NS("vm"), gwWAN+":"+port)
		if _, err := c.Write(orig.init); err != nil {
			t.Fatal(err)
		}
		serverClosed(t, c, 10*time.Second)
		c.Close()
		if i == 0 {
			orig.sess.Close() // the second replay comes after the session is gone
			<-orig.ended
		}
	}
	testnet.Eventually(t, 5*time.Second, func() error {
		st := gtundStatus(t, e)
		if n := st.HandshakeFailures["duplicate"]; n != 2 {
			return fmt.Errorf("replay refusals counted: %d, want 2", n)
		}
		// Refused before any DH: the one DH gtund did was the original's.
		if st.Handshakes.DHForStrangers != 0 || st.Handshakes.DH["authenticated"] != 1 || len(st.Handshakes.DH) != 1 {
			return fmt.Errorf("DH by outcome %v, for strangers %d", st.Handshakes.DH, st.Handshakes.DHForStrangers)
		}
		return nil
	})
	// The peer itself still connects: a replay does not lock it out.
	dialRecorded(t, e, "vm", rkey)
}

// A sealed data frame captured on one connection is refused when injected
// into another peer's connection, and when replayed on its own: the
// session it lands in ends, and nothing of it is forwarded.
func TestRecordedFrameRefusedElsewhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "tcpdump")
	akey, apub := e.key(t, "a")
	bkey, bpub := e.key(t, "b")
	e.startServer(t, e.serverConfig(t, peer{name: "a", pub: apub}, peer{name: "b", pub: bpub}))
	a := dialRecorded(t, e, "vm", akey)
	b := dialRecorded(t, e, "vm", bkey)
	dump := watchPodUDP(t, e)

	// Capture one data frame of a: a UDP packet of a size no control
	// message has, so that it can be told from a's keepalives.
	payload := bytes.Repeat([]byte("x"), 333)
	frameLen := packet.VnetHdrLen + 28 + len(payload)
	a.rec.start()
	a.sendUDP(a.addr, netip.MustParseAddr(podIP), payload)
	var rec []byte
	testnet.Eventually(t, 5*time.Second, func() error {
		if rec = findRecord(a.rec.captured(), 1+frameLen+16); rec == nil {
			return errors.New("frame not captured yet")
		}
		return nil
	})
	a.rec.stop()
	testnet.Eventually(t, 5*time.Second, func() error {
		if n := podUDP(dump, len(payload)); n != 1 {
			return fmt.Errorf("pod saw %d of the original packet, want 1", n)
		}
		return nil
	})

	// Into b's connection: b's keys differ, the record does not open.
	if _, err := b.rec.Conn.Write(rec); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("b's session survived a record sealed for another connection")
	}
	// Replayed on its own connection: the record counter has moved on.
	if _, err := a.rec.Conn.Write(rec); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("a's session survived a replayed record")
	}
	testnet.Eventually(t, 10*time.Second, func() error {
		for _, p := range gtundStatus(t, e).Peers {
			if p.Connected {
				return fmt.Errorf("peer %s still connected", p.Name)
			}
		}
		return nil
	})
	time.Sleep(time.Second) // anything forwarded would have reached the pod by now
	if n := podUDP(dump, len(payload)); n != 1 {
		t.Errorf("pod saw the packet %d times, want once: an injected or replayed copy was forwarded", n)
	}
}

// findRecord returns the first sealed record of length n (length prefix
// included in the result) in a captured stream of records.
func findRecord(stream []byte, n int) []byte {
	for len(stream) >= 4 {
		l := int(binary.BigEndian.Uint32(stream))
		if len(stream) < 4+l {
			return nil
		}
		if l == n {
			return stream[:4+l]
		}
		stream = stream[4+l:]
	}
	return nil
}

// A peer with a valid key cannot use another peer's tunnel address: its
// packets with that source are dropped and counted, the other peer keeps
// working, and its packets with its own address still pass.
func TestPeerCannotUseAnotherPeersAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "tcpdump")
	ckey, cpub := e.key(t, "vm")
	rkey, rpub := e.key(t, "raw")
	e.startServer(t, e.serverConfig(t, peer{name: "raw", pub: rpub}, peer{name: "vm", pub: cpub}))
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	victim := clientAddr(t, e, "vm")
	hostile := dialRecorded(t, e, "vm", rkey)
	if hostile.addr == victim {
		t.Fatal("two peers got the same address")
	}
	dump := watchPodUDP(t, e)

	const forged = 50
	for range forged {
		hostile.sendUDP(victim, netip.MustParseAddr(podIP), []byte("forged"))
	}
	hostile.sendUDP(hostile.addr, netip.MustParseAddr(podIP), []byte("own address"))
	testnet.Eventually(t, 10*time.Second, func() error {
		st := gtundStatus(t, e)
		// Peers are sorted by name: raw, vm.
		if n := st.Peers[0].Drops[server.DropSpoofed.String()]; n != forged {
			return fmt.Errorf("raw's spoofed drops %d, want %d (%v)", n, forged, st.Peers[0].Drops)
		}
		if len(st.Peers[1].Drops) != 0 {
			return fmt.Errorf("the victim has drops: %v", st.Peers[1].Drops)
		}
		if n := podUDP(dump, len("own address")); n != 1 {
			return fmt.Errorf("pod saw %d packets with the peer's own address, want 1", n)
		}
		return nil
	})
	if n := podUDP(dump, len("forged")); n != 0 {
		t.Errorf("%d forged packets reached the pod", n)
	}
	e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)
}

// clientAddr is the tunnel address gtund gave the peer called name.
func clientAddr(t *testing.T, e *env, name string) netip.Addr {
	t.Helper()
	for _, p := range gtundStatus(t, e).Peers {
		if p.Name == name && p.Address != "" {
			return netip.MustParseAddr(p.Address)
		}
	}
	t.Fatalf("no address for %s", name)
	return netip.Addr{}
}

// An authenticated peer that sends an impossible record length (4 GiB, or
// shorter than a tag) loses its session at once: gtund reads no further and
// allocates nothing for it; another peer is not affected.
func TestOversizedRecordEndsSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	akey, apub := e.key(t, "a")
	bkey, bpub := e.key(t, "b")
	e.startServer(t, e.serverConfig(t, peer{name: "a", pub: apub}, peer{name: "b", pub: bpub}))
	for _, prefix := range [][]byte{{0xff, 0xff, 0xff, 0xff}, {0, 0, 0, 3}} {
		a := dialRecorded(t, e, "vm", akey)
		if _, err := a.rec.Conn.Write(prefix); err != nil {
			t.Fatal(err)
		}
		select {
		case <-a.ended:
		case <-time.After(10 * time.Second):
			t.Fatalf("session survived record length %x", prefix)
		}
	}
	b := dialRecorded(t, e, "vm", bkey)
	b.sendUDP(b.addr, netip.MustParseAddr(podIP), []byte("still here"))
	testnet.Eventually(t, 5*time.Second, func() error {
		for _, p := range gtundStatus(t, e).Peers {
			if p.Name == "b" && (!p.Connected || p.RxPackets == 0) {
				return fmt.Errorf("b: connected %v, rx %d", p.Connected, p.RxPackets)
			}
		}
		return nil
	})
}
