package dgram

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/secure"
)

// ErrClosed is returned by a closed session's Send.
var ErrClosed = errors.New("datagram session closed")

// Session is one authenticated datagram channel between a client and a
// server: two indexes, one key chain each way, and the peer's endpoint.
// Send seals a payload into a data datagram; payloads that open wait in
// the session's queue for its reader (PacketConn, for kcp), which exists
// from the session's first moment, so that nothing the peer sends before
// the layer above is ready is lost. Safe for concurrent use.
type Session struct {
	local, remote uint32 // our index (the peer writes it on what it sends us) and the peer's
	xmit          func(b []byte, to netip.AddrPort) error
	xmitGSO       func(b []byte, seg int, to netip.AddrPort) // a run of datagrams of seg bytes; nil: one by one
	endpoint      atomic.Pointer[netip.AddrPort]             // where datagrams for the peer go
	roams         bool                                       // the endpoint follows the newest authenticated datagram (server side)
	drops         *drops                                     // the listener's or dialer's counters
	now           func() time.Time

	smu    sync.Mutex
	sealer *sealer
	sbuf   []byte

	omu    sync.Mutex // serializes receiving (one producer in practice: the demux, or the client's reader)
	opener *opener

	in   chan inbound // opened payloads, for the reader
	wait *time.Timer  // deliver's, under omu
	full atomic.Uint64

	packets atomic.Pointer[packetSink] // where packet datagrams go; nil: dropped (not_ready)
	touched bool                       // under omu: a packet was handed over since the last flush

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
	xmitGSO       func(b []byte, seg int, to netip.AddrPort)
	drops         *drops
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
	s := &Session{local: p.local, remote: p.remote, xmit: p.xmit, xmitGSO: p.xmitGSO, roams: p.roams, drops: p.drops, now: now,
		sealer: sl, sbuf: make([]byte, 0, MaxStreamPayload+DataOverhead), opener: op, closed: make(chan struct{}),
		in: make(chan inbound, queueLen), wait: time.NewTimer(time.Hour)}
	s.wait.Stop()
	ep := p.endpoint
	s.endpoint.Store(&ep)
	return s, nil
}

// PacketHandler takes the packet datagrams of a session (the udp
// transport) on the goroutine that read them: no queue, no hand-off.
type PacketHandler interface {
	// Packet gets one opened payload: buf[at:]. The at bytes before it
	// (the datagram's header, at least DataHeaderLen) are the handler's
	// to overwrite, e.g. with a header of its own. buf is the reader's:
	// the handler must not keep it past its return.
	// flags are the datagram's (FlagCsumPartial).
	Packet(buf []byte, at int, flags byte)
	// Flush follows the last Packet of a batch the reader took from the
	// socket in one system call: what the handler held back to join with
	// the next packet must go now.
	Flush()
}

// A PacketPlacer is a PacketHandler that says where a packet is to be
// opened before it is: the session decrypts the datagram straight into the
// buffer Place returns instead of in place, and the handler need not copy
// it afterwards (the udp transport's coalescer joins segments where they
// were opened).
type PacketPlacer interface {
	PacketHandler
	// Place returns where to open a packet of n bytes (n bytes long), or
	// nil for in place (then Packet follows if it opens).
	Place(n int) []byte
	// Placed follows every place given: the packet in dst opened (ok),
	// with the datagram's flags, or not (dst holds nothing then).
	Placed(dst []byte, ok bool, flags byte)
}

type packetSink struct {
	h PacketHandler
	p PacketPlacer // h, if it places packets
}

// SetPacketHandler routes the session's packet datagrams to h from now on;
// nil drops them (counted as not_ready).
func (s *Session) SetPacketHandler(h PacketHandler) {
	if h == nil {
		s.packets.Store(nil)
		return
	}
	p, _ := h.(PacketPlacer)
	s.packets.Store(&packetSink{h, p})
}

// Send seals payload into one stream datagram and sends it to the peer.
func (s *Session) Send(payload []byte) error { return s.send(KindStream, 0, payload) }

// send seals payload into one datagram of kind with flags and sends it to
// the peer (batched with others on a busy path: see batchWriter). Packets
// go in GSO runs sealed by a PacketSealer (SendSealed); tests send single
// packet datagrams here.
func (s *Session) send(kind, flags byte, payload []byte) error {
	if len(payload) > MaxPayload || (kind == KindStream && len(payload) > MaxStreamPayload) {
		return errors.New("datagram payload too large")
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	select {
	case <-s.closed:
		return ErrClosed
	default:
	}
	d, err := s.sealer.seal(s.sbuf[:0], kind, flags, payload, s.now())
	if err != nil {
		return err
	}
	s.sbuf = d[:0] // grown for a packet larger than a stream payload: kept
	if err := s.xmit(d, *s.endpoint.Load()); err != nil {
		return err
	}
	s.txDatagrams.Add(1)
	return nil
}

// SendSealed sends datagrams a PacketSealer made, laid back to back in buf,
// each seg bytes but the last (which may be shorter): with one system
// call (UDP GSO) where the socket takes it.
func (s *Session) SendSealed(buf []byte, seg int) error {
	select {
	case <-s.closed:
		return ErrClosed
	default:
	}
	if len(buf) == 0 {
		return nil
	}
	n := (len(buf) + seg - 1) / seg
	to := *s.endpoint.Load()
	if n == 1 || s.xmitGSO == nil {
		for len(buf) > 0 {
			d := buf[:min(seg, len(buf))]
			buf = buf[len(d):]
			if err := s.xmit(d, to); err != nil {
				return err
			}
		}
	} else {
		s.xmitGSO(buf, seg, to)
	}
	s.txDatagrams.Add(uint64(n))
	return nil
}

// GSO limits a run given to SendSealed: at most GSOMaxSegments datagrams,
// GSOMaxBytes in all.
const (
	GSOMaxSegments = gsoMaxSegments
	GSOMaxBytes    = gsoMaxBytes
)

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
// index) in place: a stream payload is queued for the reader, a packet goes
// to the packet handler at once.
func (s *Session) receive(d []byte, from netip.AddrPort) { s.receiveAt(d, from, s.now()) }

// receiveAt is receive at a time the reader took once for its batch.
func (s *Session) receiveAt(d []byte, from netip.AddrPort, now time.Time) {
	var r receiver
	r.receive(s, d, from, now)
	r.release()
}

// receiver opens the data datagrams a reader took in one system call, and
// holds a session's receive lock across the consecutive ones that are that
// session's (a UDP GRO message is a run of ~45 datagrams of one peer), so
// that a run pays for one lock and one update of the session's counter,
// not one per datagram. The reader releases it before anything else that
// may take a session's lock (flush), and at the end of each message.
type receiver struct {
	s      *Session // whose omu is held; nil: none
	opened uint64   // datagrams of s opened under this hold
}

// receive opens data datagram d of session s.
func (r *receiver) receive(s *Session, d []byte, from netip.AddrPort, now time.Time) {
	if r.s != s {
		r.release()
		s.omu.Lock() // held through deliver too, which uses the one wait timer
		r.s = s
	}
	if s.openLocked(d, from, now) {
		r.opened++
	}
}

// release lets the held session's lock go.
func (r *receiver) release() {
	if r.s == nil {
		return
	}
	r.s.rxDatagrams.Add(r.opened)
	r.s.omu.Unlock()
	r.s, r.opened = nil, 0
}

// openLocked opens d, under omu, and hands what it carries on; it reports
// whether d opened.
func (s *Session) openLocked(d []byte, from netip.AddrPort, now time.Time) bool {
	kind, flags := d[2], d[3] // authenticated once open succeeds
	var sink *packetSink
	var dst []byte // where the handler wants the packet; nil: in place
	if kind == KindPacket {
		if sink = s.packets.Load(); sink != nil && sink.p != nil {
			dst = sink.p.Place(len(d) - DataOverhead)
		}
	}
	payload, newest, reason, ok := s.opener.openTo(dst, d, now)
	if dst != nil {
		sink.p.Placed(dst, ok, flags)
	}
	if !ok {
		s.drops.Inc(reason)
		return false
	}
	if s.roams && newest && *s.endpoint.Load() != from {
		// Authenticated and the newest: the peer is at from now (NAT
		// rebinding, a new address). A replayed or forged datagram never
		// gets here. (A copy, so that only a move allocates.)
		ep := from
		s.endpoint.Store(&ep)
	}
	if kind == KindPacket {
		if sink == nil {
			s.drops.Inc(DropNotReady)
			return true
		}
		s.touched = true
		if dst == nil {
			sink.h.Packet(d[:DataHeaderLen+len(payload)], DataHeaderLen, flags)
		}
		return true
	}
	s.deliver(payload)
	return true
}

// flush ends a batch of the reader's: the packet handler's Flush, if it
// got packets since the last.
func (s *Session) flush() {
	s.omu.Lock()
	defer s.omu.Unlock()
	if !s.touched {
		return
	}
	s.touched = false
	if sink := s.packets.Load(); sink != nil {
		sink.h.Flush()
	}
}

// queueLen is how many opened payloads a session holds for its reader: a
// burst of a few hundred kcp segments between two reads.
const queueLen = 1024

// maxWait is how long the producer waits for room in a full queue before
// it drops the payload. kcp-go's reader does more per segment (FEC, ARQ)
// than the demux does to open one, so in a burst the queue fills; waiting
// for a slot matches the demux to the reader's pace and leaves the rest of
// the burst in the socket's buffer, as kcp-go's own listener did (it ran
// every session's input on its socket reader). The bound keeps a reader
// that has stopped from holding up every other session for long.
const maxWait = 5 * time.Millisecond

// deliver copies the payload (the producer reuses its buffer) and queues
// it. A stream payload larger than any this side sends is dropped as
// malformed: the queue's buffers are sized for kcp's segments.
func (s *Session) deliver(payload []byte) {
	if len(payload) > MaxStreamPayload {
		s.drops.Inc(DropMalformed)
		return
	}
	b := payloadPool.Get().(*[MaxStreamPayload]byte)
	in := inbound{b, copy(b[:], payload)}
	select {
	case s.in <- in:
		return
	default:
	}
	s.wait.Reset(maxWait)
	select {
	case s.in <- in:
		s.wait.Stop()
		return
	case <-s.wait.C:
	case <-s.closed:
		s.wait.Stop()
	}
	payloadPool.Put(b)
	s.full.Add(1)
	s.drops.Inc(DropQueueFull)
}

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

// Indexes are this side's index of the session and the peer's.
func (s *Session) Indexes() (local, remote uint32) { return s.local, s.remote }

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
