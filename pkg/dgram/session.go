package dgram

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/stats"
)

// Reasons a datagram is dropped before it reaches a session, or inside one.
const (
	DropMalformed   = "malformed"    // too short, unknown type, bytes that must be zero are not
	DropSinkFull    = "queue_full"   // the layer above did not keep up; its queue was full
	DropNoSink      = "no_reader"    // opened, but nothing reads the session yet or any more
	DropUnsolicited = "unsolicited"  // a response or cookie reply that answers no initiation of ours
	DropWrongSource = "wrong_source" // on the client: not from the server's address (the socket is connected; never seen)
)

// ErrClosed is returned by a closed session's Send.
var ErrClosed = errors.New("datagram session closed")

// Session is one authenticated datagram channel between a client and a
// server: two indexes, one key chain each way, and the peer's endpoint.
// Send seals a payload into a data datagram; payloads that open are handed
// to the session's sink, which the layer above installs (PacketConn for
// kcp). Safe for concurrent use.
type Session struct {
	local, remote uint32 // our index (the peer writes it on what it sends us) and the peer's
	xmit          func(b []byte, to netip.AddrPort) error
	endpoint      atomic.Pointer[netip.AddrPort] // where datagrams for the peer go
	roams         bool                           // the endpoint follows the newest authenticated datagram (server side)
	drops         *stats.Reasons                 // the listener's or dialer's counters
	now           func() time.Time

	smu    sync.Mutex
	sealer *sealer
	sbuf   []byte

	omu    sync.Mutex // serializes opening; only the demux opens, but status reads too
	opener *opener

	sink atomic.Pointer[func([]byte)]

	closeOnce sync.Once
	closed    chan struct{}
	onClose   []func()

	rxDatagrams, txDatagrams atomic.Uint64

	peer       secure.PublicKey // the client, on a server's session
	streamKeys secure.Keys
	sock       *net.UDPConn // the client's own socket; nil on a server's session
}

// sessionParams are what a handshake gives a session.
type sessionParams struct {
	local, remote uint32
	send, recv    [32]byte
	step          keyStep
	newAEAD       epochCipher
	endpoint      netip.AddrPort
	roams         bool
	xmit          func(b []byte, to netip.AddrPort) error
	drops         *stats.Reasons
}

func newSession(p sessionParams) (*Session, error) {
	now := time.Now
	sl, err := newSealer(p.send, p.remote, p.step, p.newAEAD, now())
	if err != nil {
		return nil, err
	}
	op, err := newOpener(p.recv, p.step, p.newAEAD)
	if err != nil {
		return nil, err
	}
	s := &Session{local: p.local, remote: p.remote, xmit: p.xmit, roams: p.roams, drops: p.drops, now: now,
		sealer: sl, sbuf: make([]byte, 0, MaxDatagram), opener: op, closed: make(chan struct{})}
	ep := p.endpoint
	s.endpoint.Store(&ep)
	return s, nil
}

// Send seals payload into one data datagram and sends it to the peer.
func (s *Session) Send(payload []byte) error {
	if len(payload) > MaxPayload {
		return errors.New("datagram payload too large")
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	select {
	case <-s.closed:
		return ErrClosed
	default:
	}
	d, err := s.sealer.seal(s.sbuf[:0], payload, s.now())
	if err != nil {
		return err
	}
	if err := s.xmit(d, *s.endpoint.Load()); err != nil {
		return err
	}
	s.txDatagrams.Add(1)
	return nil
}

// SetRekeyInterval sets how long this side's send key lives (the other
// direction is the peer's to decide).
func (s *Session) SetRekeyInterval(d time.Duration) {
	if d <= 0 {
		return
	}
	s.smu.Lock()
	s.sealer.interval = d
	s.smu.Unlock()
}

// receive opens a data datagram for this session (the demux found its
// index) in place and hands the payload to the sink.
func (s *Session) receive(d []byte, from netip.AddrPort) {
	s.omu.Lock()
	payload, newest, reason := s.opener.open(d, s.now())
	s.omu.Unlock()
	if reason != "" {
		s.drops.Inc(reason)
		return
	}
	s.rxDatagrams.Add(1)
	if s.roams && newest && *s.endpoint.Load() != from {
		// Authenticated and the newest: the peer is at from now (NAT
		// rebinding, a new address). A replayed or forged datagram never
		// gets here.
		s.endpoint.Store(&from)
	}
	if f := s.sink.Load(); f != nil {
		(*f)(payload)
	} else {
		s.drops.Inc(DropNoSink)
	}
}

// setSink installs the function that receives opened payloads; it must
// not keep the slice.
func (s *Session) setSink(f func([]byte)) { s.sink.Store(&f) }

// Close ends the session: its index is forgotten (datagrams for it are
// dropped as unknown) and its sink's reader is woken.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.smu.Lock()
		close(s.closed)
		s.smu.Unlock()
		for _, f := range s.onClose {
			f()
		}
	})
	return nil
}

// Done is closed when the session is.
func (s *Session) Done() <-chan struct{} { return s.closed }

// Endpoint is the peer's address as last authenticated.
func (s *Session) Endpoint() netip.AddrPort { return *s.endpoint.Load() }

// SessionStats are a session's counters.
type SessionStats struct {
	RxDatagrams, TxDatagrams uint64
	KeyUpdatesSent           uint64 // this side's send key stepped
	KeyUpdatesReceived       uint64 // the peer's key updates followed
}

// Stats snapshots the session's counters.
func (s *Session) Stats() SessionStats {
	st := SessionStats{RxDatagrams: s.rxDatagrams.Load(), TxDatagrams: s.txDatagrams.Load()}
	s.smu.Lock()
	st.KeyUpdatesSent = s.sealer.updates
	s.smu.Unlock()
	s.omu.Lock()
	st.KeyUpdatesReceived = s.opener.updates
	s.omu.Unlock()
	return st
}

// Addr is a session's peer as a net.Addr, for kcp-go: a constant string,
// so kcp-go's per-datagram source check (it compares addr.String()) neither
// allocates nor fails when the peer roams.
type Addr struct{ s string }

func (a Addr) Network() string { return "udp" }
func (a Addr) String() string  { return a.s }

var _ net.Addr = Addr{}
