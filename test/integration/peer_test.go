package integration

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
)

// rawPeer is a client built from the protocol packages instead of gtun, for
// sending what a well-behaved gtun never would.
type rawPeer struct {
	sess *session.Session
	addr netip.Addr
	// recv gets the IP packets gtund sends it (a copy each; dropped when
	// nobody reads and it is full).
	recv chan []byte
}

// handshakeKeys loads the client key in keyPath and parses the server's
// public key, for a client made by hand in a test.
func (e *env) handshakeKeys(t *testing.T, keyPath string) (secure.PrivateKey, secure.PublicKey) {
	t.Helper()
	key, err := secure.LoadPrivateKeyFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	serverPub, err := secure.ParsePublicKey(e.serverPub)
	if err != nil {
		t.Fatal(err)
	}
	return key, serverPub
}

// dialSession connects from host's namespace to gtund with the key in
// keyPath and runs the session until the test ends.
func dialSession(t *testing.T, e *env, host, keyPath string) *rawPeer {
	t.Helper()
	key, serverPub := e.handshakeKeys(t, keyPath)
	conn := dialInNS(t, e.tp.NS(host), gwWAN+":"+port)
	sc, err := secure.Client(conn, secure.ClientConfig{Private: key, ServerKey: serverPub})
	if err != nil {
		conn.Close()
		t.Fatalf("handshake: %v", err)
	}
	sess, cfg, err := session.Dial(context.Background(), sc, &session.Msg{Type: session.TypeHello, Version: secure.ProtocolVersion, Name: "raw"}, 0, nil)
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	recv := make(chan []byte, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.Run(ctx, session.Handlers{Packet: func(frame []byte) {
			select {
			case recv <- slices.Clone(frame[packet.VnetHdrLen:]):
			default:
			}
		}})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	p, err := netip.ParsePrefix(cfg.Address)
	if err != nil {
		t.Fatal(err)
	}
	return &rawPeer{sess: sess, addr: p.Addr(), recv: recv}
}

// sendIP hands gtund one IP packet as a plain frame (no offload), as it is.
func (p *rawPeer) sendIP(pkt []byte) {
	b := packet.Get()
	clear(b.B[:packet.VnetHdrLen])
	b.N = packet.VnetHdrLen + copy(b.B[packet.VnetHdrLen:], pkt)
	p.sess.Enqueue(b)
}

// dialInNS opens a TCP connection from inside the named network namespace.
func dialInNS(t *testing.T, ns, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	inNS(t, ns, func() { c, err = net.Dial("tcp", addr) })
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns, err)
	}
	return c
}

// udpPacket builds an IPv4/UDP packet (checksums left zero: gtund checks
// addresses, not checksums, and the kernel drops it later if it must).
func udpPacket(src, dst netip.Addr, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 53)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}
