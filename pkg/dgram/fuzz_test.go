package dgram

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/secure"
)

// Whatever arrives on the listener's socket: the demux never panics, never
// makes a session, never answers (no load: no cookie), and counts it.
func FuzzRoute(f *testing.F) {
	srvKey, _ := secure.GeneratePrivateKey()
	cliKey, _ := secure.GeneratePrivateKey()
	_, first, _ := secure.Initiate(secure.ClientConfig{Private: cliKey, ServerKey: srvKey.Public()})
	f.Add(appendInitiation(nil, 1, first))                        // a real initiation (of an unknown key)
	f.Add(appendResponse(nil, 1, 2, bytes.Repeat([]byte{7}, 48))) // a response, to a server
	f.Add(append([]byte{TypeData, 0, 0, 0, 1, 0, 0, 0}, make([]byte, 40)...))
	f.Add([]byte{TypeCookieReply, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, d []byte) {
		r := secure.NewResponder(secure.ServerConfig{Private: srvKey, Authorize: func(secure.PublicKey, uint64) error { return secure.ErrUnknownPeer }})
		l := &Listener{cfg: ListenConfig{Responder: r}, cookies: newCookieChecker(r.PublicKey()), index: newIndexTable(4),
			hsq: make(chan handshakeJob, handshakeQueue), closed: make(chan struct{})}
		l.route(bytes.Clone(d), netip.MustParseAddrPort("203.0.113.1:1"))
		var dropped uint64
		for _, n := range l.drops.Snapshot() {
			dropped += n
		}
		queued := len(l.hsq)
		if dropped+uint64(queued) != 1 {
			t.Fatalf("one datagram: %d drops counted, %d queued", dropped, queued)
		}
		if l.index.len() != 0 {
			t.Fatal("a session from one datagram")
		}
		if queued == 1 && (len(d) < InitiationOverhead || d[0] != TypeInitiation || !r.CheckMAC1(d[headerLen+indexLen:len(d)-macLen])) {
			t.Fatalf("queued for a DH without a valid mac1: %x", d)
		}
	})
}

// Whatever a data datagram holds: opening it never panics, and only what
// the peer sealed opens.
func FuzzOpen(f *testing.F) {
	key := [32]byte{5}
	s, _ := newSealer(key, 9, testStep, testAEAD, t0)
	real1, _ := s.seal(nil, KindStream, 0, []byte("one"), t0)
	real2, _ := s.seal(nil, KindStream, 0, []byte("two"), t0)
	f.Add(real1)
	f.Add(real2)
	f.Add(make([]byte, DataOverhead))
	f.Fuzz(func(t *testing.T, d []byte) {
		o, err := newOpener(key, testStep, testAEAD)
		if err != nil {
			t.Fatal(err)
		}
		payload, _, _, ok := o.open(bytes.Clone(d), t0.Add(time.Second))
		if ok && !bytes.Equal(d, real1) && !bytes.Equal(d, real2) {
			t.Fatalf("opened a datagram the peer did not seal: %x -> %q", d, payload)
		}
	})
}
