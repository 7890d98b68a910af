package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
)

// Defaults both sides fall back to when the config leaves them unset.
const (
	DefaultKeepalive = 2 * time.Second
	DefaultDeadAfter = 3
	DefaultQueueLen  = 256
	setupTimeout     = 10 * time.Second
	// maxBatch bounds how many packets one write (writev) carries.
	maxBatch = 64
	// ctrlQueue bounds control messages waiting either way; a peer that
	// floods more than this ends its session.
	ctrlQueue = 64
)

// ErrDead is returned by Run when keepalives stopped arriving.
var ErrDead = errors.New("session dead: no keepalive from the peer")

var errClosed = errors.New("session closed")

// Stats are the counters of one session; safe to read at any time.
type Stats struct {
	TxBytes, TxPackets atomic.Uint64
	RxBytes, RxPackets atomic.Uint64
	QueueDrops         atomic.Uint64 // packets dropped because the send queue was full
	SendErrors         atomic.Uint64 // frames the datagram path refused (see Send's errors)
}

// Session is one authenticated connection between gtun and gtund. Control
// messages and data frames travel as their own record types on the sealed
// connection; frames are sealed and opened in place in their buffers. Each
// session has one reader and one writer goroutine (plus the caller of Run),
// which keeps an idle session small: gtund holds thousands. (A multiplexer
// such as yamux was measured here and removed: its data stream cost two
// copies and two goroutine hand-offs per frame each way, and its one
// control stream two goroutines and ~10 KiB per session.)
type Session struct {
	sc       *secure.Conn
	isClient bool
	log      *slog.Logger

	keepalive time.Duration
	deadAfter int
	queue     chan *packet.Buf // data frames to send
	ctrlOut   chan *Msg        // control messages to send from goroutines that must not block
	ctrlIn    chan *Msg        // control messages received
	inflight  atomic.Int64     // packets enqueued and not yet written (and Send's unsent tail)
	flush     chan struct{}    // Send left a tail in the connection: the writer sends it

	deliver    atomic.Pointer[func([]byte)] // set by Run
	runStarted chan struct{}                // closed by Run: frames are delivered from then on
	closed     chan struct{}
	closeOnce  sync.Once
	readerDone chan struct{}
	writerDone chan struct{}
	errMu      sync.Mutex
	err        error // why the session ended, first cause

	// dg carries the data frames instead of the records when set (the
	// udp transport: one sealed datagram per packet); the records then
	// carry the control messages alone.
	dg Datagrams

	Stats    Stats
	rtt      atomic.Int64 // nanoseconds, last measured
	lastRecv atomic.Int64 // unix nanoseconds of the last record from the peer
	lastPing atomic.Int64 // unix nanoseconds of the last ping the server saw
}

// start wraps sc and starts the session's reader and writer; both stop when
// the session is closed.
func start(sc *secure.Conn, isClient bool, log *slog.Logger, queueLen int) *Session {
	if queueLen <= 0 {
		queueLen = DefaultQueueLen
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Session{sc: sc, isClient: isClient, log: log, keepalive: DefaultKeepalive, deadAfter: DefaultDeadAfter,
		queue: make(chan *packet.Buf, queueLen), ctrlOut: make(chan *Msg, ctrlQueue), ctrlIn: make(chan *Msg, ctrlQueue),
		flush: make(chan struct{}, 1), runStarted: make(chan struct{}), closed: make(chan struct{}),
		readerDone: make(chan struct{}), writerDone: make(chan struct{})}
	s.lastRecv.Store(time.Now().UnixNano())
	go s.readLoop()
	go s.writeLoop()
	return s
}

// Datagrams is a data path beside the records: the udp transport's
// datagrams, which carry each packet sealed on its own, so that a lost one
// holds up nothing behind it.
type Datagrams interface {
	// SendFrame sends a frame ([virtio-net header][IP packet], a TSO
	// super-packet too) as datagrams of at most the path's size; the
	// frame is the caller's again on return, its bytes overwritten (a
	// super-packet is cut in place).
	SendFrame(frame []byte) error
	// SendFrameMore is SendFrame when more frames follow at once: the
	// frame's last datagrams may wait for the next frame's, to fill a
	// GSO send, until SendHeld.
	SendFrameMore(frame []byte) error
	// SendHeld sends what SendFrameMore held back.
	SendHeld() error
	// SetReceiver routes the frames that arrive to deliver, on the
	// goroutine that read them; nil drops them (counted by the path).
	SetReceiver(deliver func(frame []byte))
	// Rekeys counts the datagram keys' updates, sent and received.
	Rekeys() (sent, received uint64)
}

// UseDatagrams moves the session's data frames to d, both ways; called
// before Run (a frame that arrives before Run is dropped and counted by
// d: datagrams are not held back).
func (s *Session) UseDatagrams(d Datagrams) { s.dg = d }

// Dial runs the client side over a sealed conn: it sends hello and waits
// for the server's config. The session owns sc from here on.
func Dial(ctx context.Context, sc *secure.Conn, hello *Msg, queueLen int, log *slog.Logger) (*Session, *Msg, error) {
	s := start(sc, true, log, queueLen)
	if err := s.SendControl(hello); err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("send hello: %w", err)
	}
	deadline := time.Now().Add(setupTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	m, err := s.awaitControl(ctx, deadline)
	if err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	switch m.Type {
	case TypeConfig:
	case TypeError:
		s.Close()
		return nil, nil, fmt.Errorf("server refused the session: %s", m.Error)
	default:
		s.Close()
		return nil, nil, fmt.Errorf("expected config, got %q", m.Type)
	}
	s.applyKeepalive(m)
	s.applyRekeyInterval(m)
	return s, m, nil
}

// Accept runs the server side over a sealed conn up to the client's hello.
// The caller answers with SendControl (config or error), then Run.
func Accept(sc *secure.Conn, queueLen int, log *slog.Logger) (*Session, *Msg, error) {
	s := start(sc, false, log, queueLen)
	m, err := s.awaitControl(context.Background(), time.Now().Add(setupTimeout))
	if err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("read hello: %w", err)
	}
	if m.Type != TypeHello {
		s.Close()
		return nil, nil, fmt.Errorf("expected hello, got %q", m.Type)
	}
	return s, m, nil
}

func (s *Session) awaitControl(ctx context.Context, deadline time.Time) (*Msg, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case m := <-s.ctrlIn:
		return m, nil
	case <-s.closed:
		return nil, s.cause()
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, errors.New("timed out")
	}
}

func (s *Session) applyKeepalive(m *Msg) {
	if m.KeepaliveMS > 0 {
		s.keepalive = time.Duration(m.KeepaliveMS) * time.Millisecond
	}
	if m.DeadAfter > 0 {
		s.deadAfter = m.DeadAfter
	}
}

// applyRekeyInterval takes the lifetime of the client's send keys from a
// config message, at the start and whenever the server pushes a new one.
func (s *Session) applyRekeyInterval(m *Msg) {
	s.sc.SetRekeyInterval(time.Duration(m.RekeyIntervalMS) * time.Millisecond)
}

// SetRekeyInterval sets how long this side's send keys live: the server's
// rekey_interval, which its config messages push to the client. It
// applies to the key in use.
func (s *Session) SetRekeyInterval(d time.Duration) { s.sc.SetRekeyInterval(d) }

// Rekeys counts a session's key updates: Sent, this side's send key
// replaced; Received, the peer's.
type Rekeys struct {
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
}

// Add returns the sum of two counts.
func (r Rekeys) Add(o Rekeys) Rekeys { return Rekeys{r.Sent + o.Sent, r.Received + o.Received} }

// Rekeys counts the key updates of the session so far.
func (s *Session) Rekeys() Rekeys {
	sent, received := s.sc.Rekeys()
	r := Rekeys{Sent: sent, Received: received}
	if s.dg != nil {
		sent, received = s.dg.Rekeys()
		r = r.Add(Rekeys{Sent: sent, Received: received})
	}
	return r
}

// KeyAge is how long this side's current send key has been in use.
func (s *Session) KeyAge() time.Duration { return s.sc.KeyAge() }

// SetKeepalive sets the server's keepalive expectations (the client learns
// them from the config message).
func (s *Session) SetKeepalive(interval time.Duration, deadAfter int) {
	if interval > 0 {
		s.keepalive = interval
	}
	if deadAfter > 0 {
		s.deadAfter = deadAfter
	}
}

// SendControl writes one control message now; safe for concurrent use. It
// blocks while the connection does (the path is down and the socket buffer
// full) until the session is closed.
func (s *Session) SendControl(m *Msg) error {
	b, err := EncodeMsg(m)
	if err != nil {
		return err
	}
	return s.sc.WriteRecord(secure.TypeControl, b)
}

// queueControl hands a message to the writer without blocking; when its
// queue is full the message is dropped (pings and pongs are).
func (s *Session) queueControl(m *Msg) {
	select {
	case s.ctrlOut <- m:
	default:
	}
}

// SendDrops names a daemon's drop reasons (R: gtun's or gtund's) for the
// ways Send and Enqueue refuse a frame, so that both daemons count a
// refusal alike.
type SendDrops[R any] struct {
	QueueFull  R // ErrQueueFull
	BadOffload R // a virtio-net header that does not describe its packet (packet.ErrBadVnetHdr)
	Malformed  R // not an IP packet, or cut short (packet.ErrMalformed)
	Other      R // the transport refused it (the udp path's send failed)
}

// For is the reason of the error Send or Enqueue returned.
func (d SendDrops[R]) For(err error) R {
	switch {
	case errors.Is(err, ErrQueueFull):
		return d.QueueFull
	case errors.Is(err, packet.ErrBadVnetHdr):
		return d.BadOffload
	case errors.Is(err, packet.ErrMalformed):
		return d.Malformed
	}
	return d.Other
}

// ErrQueueFull is Enqueue's and Send's: the session's send queue was full
// and the packet is dropped.
var ErrQueueFull = errors.New("send queue full")

// Enqueue hands a packet to the session's writer. The queue is bounded: when
// it is full the packet is dropped and counted rather than blocking the TUN
// reader that serves every session (ErrQueueFull). On the datagram path the
// frame is sent at once, and an error is the path's own refusal of the
// frame (an offload header that does not describe it, a packet larger than
// a datagram carries, a closed session). The session owns b either way.
func (s *Session) Enqueue(b *packet.Buf) error {
	if s.dg != nil {
		return s.sendDatagrams(b, false)
	}
	s.inflight.Add(1)
	select {
	case s.queue <- b:
		return nil
	default:
		s.inflight.Add(-1)
		s.Stats.QueueDrops.Add(1)
		packet.Put(b)
		return ErrQueueFull
	}
}

// Send is Enqueue for a caller that is the session's only producer (gtun's
// TUN reader): when nothing is waiting to be sent, it writes the packet
// itself, saving the hand-off to the writer goroutine and its wake-up,
// which is most of the latency a packet sees inside gtun. Like Enqueue it
// never waits on the connection, since the caller serves every session: a
// write the socket cannot take at once (the path is down, the buffer full)
// leaves its unsent part to this session's writer, which may wait, and the
// packets after it queue (bounded, dropped and counted when full). On a
// connection that cannot be written without waiting (not a socket) every
// packet queues. Order is kept: with nothing in flight no older packet can
// still be on its way.
func (s *Session) Send(b *packet.Buf) error {
	if s.dg != nil {
		return s.sendDatagrams(b, false)
	}
	if s.inflight.Load() != 0 {
		return s.Enqueue(b)
	}
	n := b.N
	res, err := s.sc.TryWritePackets(b.Record())
	if res == secure.TryBusy && err == nil {
		return s.Enqueue(b)
	}
	packet.Put(b)
	if err != nil { // the reader sees the broken connection and ends the session
		return nil
	}
	s.Stats.TxBytes.Add(uint64(n))
	s.Stats.TxPackets.Add(1)
	if res == secure.TryTail {
		// In flight until the writer has flushed it: later packets queue
		// behind it. Never more than one tail: the next one needs
		// inflight back at 0, after the writer took this signal.
		s.inflight.Add(1)
		select {
		case s.flush <- struct{}{}:
		default:
		}
	}
	return nil
}

// SendMore is Send for a TUN reader with more frames ready: on the
// datagram path the frame's last datagrams may wait for the next frame's,
// to fill one GSO send, until SendHeld, which the reader calls before it
// sends to another session or waits for the TUN. On a stream path it is
// Send.
func (s *Session) SendMore(b *packet.Buf) error {
	if s.dg != nil {
		return s.sendDatagrams(b, true)
	}
	return s.Send(b)
}

// EnqueueMore is SendMore with Enqueue on a stream path.
func (s *Session) EnqueueMore(b *packet.Buf) error {
	if s.dg != nil {
		return s.sendDatagrams(b, true)
	}
	return s.Enqueue(b)
}

// SendHeld sends what SendMore and EnqueueMore held back (nothing on a stream path).
func (s *Session) SendHeld() {
	if s.dg == nil {
		return
	}
	if err := s.dg.SendHeld(); err != nil {
		s.Stats.SendErrors.Add(1)
	}
}

// Held is, for a TUN reader, the session it last sent to with SendMore or
// EnqueueMore, which may hold the end of a frame back: To sends that before
// the reader turns to another session, Flush before it waits for the TUN
// (device.Frames' idle) or stops. The zero value holds nothing.
type Held struct{ s *Session }

// To is called before a frame goes to s.
func (h *Held) To(s *Session) {
	if h.s != nil && h.s != s {
		h.s.SendHeld()
	}
	h.s = s
}

// Flush sends what the last session holds.
func (h *Held) Flush() {
	if h.s != nil {
		h.s.SendHeld()
		h.s = nil
	}
}

// sendDatagrams sends a frame as datagrams, on the caller's goroutine:
// sealing and handing datagrams to the socket never waits on the peer (a
// datagram the socket cannot take is lost and counted, as on the wire),
// so no queue and no writer goroutine stand between the TUN and the path.
func (s *Session) sendDatagrams(b *packet.Buf, more bool) error {
	n := b.N
	var err error
	if more {
		err = s.dg.SendFrameMore(b.Bytes())
	} else {
		err = s.dg.SendFrame(b.Bytes())
	}
	packet.Put(b)
	if err != nil {
		s.Stats.SendErrors.Add(1)
		return err
	}
	s.Stats.TxBytes.Add(uint64(n))
	s.Stats.TxPackets.Add(1)
	return nil
}

// datagramIn takes a frame from the datagram path (its reader's
// goroutine) to the Run handler.
func (s *Session) datagramIn(frame []byte) {
	s.lastRecv.Store(time.Now().UnixNano())
	s.Stats.RxBytes.Add(uint64(len(frame)))
	s.Stats.RxPackets.Add(1)
	if d := s.deliver.Load(); d != nil {
		(*d)(frame)
	}
}

// maxReportedRTT bounds the round trip a client may report: anything longer
// is nonsense (a session is dead long before) and is ignored.
const maxReportedRTT = time.Minute

// RTT is the last keepalive round trip, zero before the first: measured on
// the client, reported by the client in its pings on the server.
func (s *Session) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// LastRecv is when the peer was last heard from.
func (s *Session) LastRecv() time.Time { return time.Unix(0, s.lastRecv.Load()) }

// LastKeepalive is when the server last saw a ping (server side).
func (s *Session) LastKeepalive() time.Time {
	if v := s.lastPing.Load(); v != 0 {
		return time.Unix(0, v)
	}
	return time.Time{}
}

// RemoteAddr is the peer's transport address.
func (s *Session) RemoteAddr() net.Addr { return s.sc.RemoteAddr() }

// Cipher names the record cipher of the session.
func (s *Session) Cipher() string { return s.sc.Cipher() }

// Close tears the session down; Run returns soon after.
func (s *Session) Close() error {
	s.end(errClosed)
	return nil
}

// end closes the session once, recording the first cause.
func (s *Session) end(cause error) {
	s.closeOnce.Do(func() {
		s.errMu.Lock()
		s.err = cause
		s.errMu.Unlock()
		close(s.closed)
		s.sc.Close() // unblocks the reader and any writer
	})
}

func (s *Session) cause() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// goodbyeWait bounds a client's goodbye: a server that does not read must
// not hold up a stop.
const goodbyeWait = 250 * time.Millisecond

// goodbye tells the server that the client ends this session (gtun stops,
// the server left its config, or it moves to a preferred endpoint). Over
// tcp the closed connection says it anyway; over udp and kcp nothing
// would, and gtund would keep the session, and count the peer connected,
// until dead_after keepalives had gone missing. The write's goroutine ends
// at the latest when Run closes the session, which unblocks it.
func (s *Session) goodbye() {
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		_ = s.SendControl(&Msg{Type: TypeError, Error: "gtun stopped, or moved to another endpoint"})
	}()
	t := time.NewTimer(goodbyeWait)
	defer t.Stop()
	select {
	case <-sent:
	case <-s.closed:
	case <-t.C:
	}
}

// Handlers are called by Run.
type Handlers struct {
	// Packet gets every frame from the peer, on the reader goroutine; it
	// must not keep frame.
	Packet func(frame []byte)
	// Control gets control messages other than ping/pong/error.
	Control func(m *Msg)
}

// Run delivers packets and control messages and watches the keepalives
// until the session fails, is closed, or ctx ends. It returns why; the
// session is closed on return.
func (s *Session) Run(ctx context.Context, h Handlers) error {
	if h.Packet != nil {
		s.deliver.Store(&h.Packet)
	}
	close(s.runStarted)
	if s.dg != nil {
		s.dg.SetReceiver(s.datagramIn)
		defer s.dg.SetReceiver(nil)
	}
	// Liveness is checked here, apart from anything that writes: when the
	// path is down, writers block on a full socket buffer.
	t := time.NewTicker(s.keepalive)
	defer t.Stop()
	var seq uint64
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			if s.isClient {
				s.goodbye()
			}
			break loop
		case <-s.closed:
			err = s.cause()
			break loop
		case now := <-t.C:
			if now.Sub(s.LastRecv()) > time.Duration(s.deadAfter)*s.keepalive {
				err = ErrDead
				break loop
			}
			if s.isClient {
				seq++
				s.queueControl(&Msg{Type: TypePing, Seq: seq, Time: time.Now().UnixNano(), RTT: s.rtt.Load()})
			}
		case m := <-s.ctrlIn:
			if err = s.handleControl(m, h.Control); err != nil {
				break loop
			}
		}
	}
	if err == nil {
		s.end(errClosed)
	} else {
		s.end(err)
	}
	<-s.readerDone
	<-s.writerDone
	s.deliver.Store(nil)
	if errors.Is(err, errClosed) && ctx.Err() == nil {
		return errClosed
	}
	return err
}

func (s *Session) handleControl(m *Msg, handle func(*Msg)) error {
	switch m.Type {
	case TypePing:
		s.lastPing.Store(time.Now().UnixNano())
		if !s.isClient {
			s.queueControl(&Msg{Type: TypePong, Seq: m.Seq, Time: m.Time})
			if m.RTT > 0 && m.RTT < int64(maxReportedRTT) { // what the client measured
				s.rtt.Store(m.RTT)
			}
		}
	case TypePong:
		if now := time.Now().UnixNano(); m.Time > 0 && now > m.Time {
			s.rtt.Store(now - m.Time)
		}
	case TypeError:
		return fmt.Errorf("peer closed the session: %s", m.Error)
	case TypeConfig:
		if s.isClient { // a reload on the server pushed it
			s.applyRekeyInterval(m)
		}
		if handle != nil {
			handle(m)
		}
	default:
		if handle != nil {
			handle(m)
		}
	}
	return nil
}

// readLoop reads every record from the peer. A packet record is opened in a
// pooled buffer, right where the frame belongs, and handed to the deliver
// handler without a copy; the buffer is taken only once a record's header
// has arrived, so an idle session holds none. Control messages go to Run.
// The reader never writes: a reader blocked on a full connection could
// deadlock against a peer doing the same.
func (s *Session) readLoop() {
	defer close(s.readerDone)
	var b *packet.Buf
	defer func() {
		if b != nil {
			packet.Put(b)
		}
	}()
	get := func(int) []byte {
		if b == nil { // a record after a key update may ask again
			b = packet.Get()
		}
		return b.RecordSpace()
	}
	// The first record from a peer is its hello (or the server's config):
	// a frame before it is a protocol violation, and waiting for Run on
	// its behalf would hold the session until the setup timeout.
	spoke := false
	for {
		if b != nil {
			packet.Put(b)
			b = nil
		}
		typ, payload, err := s.sc.ReadRecord(get)
		if err != nil {
			s.end(fmt.Errorf("read: %w", err))
			return
		}
		s.lastRecv.Store(time.Now().UnixNano())
		switch typ {
		case secure.TypePacket:
			if !spoke {
				s.end(errors.New("data frame before the peer's first control message"))
				return
			}
			if len(payload) == 0 || len(payload) > packet.MaxSize {
				s.end(fmt.Errorf("packet record of %d bytes", len(payload)))
				return
			}
			s.Stats.RxBytes.Add(uint64(len(payload)))
			s.Stats.RxPackets.Add(1)
			// Frames may follow the config before the client runs: wait
			// for Run rather than drop them.
			select {
			case <-s.runStarted:
			case <-s.closed:
				return
			}
			if d := s.deliver.Load(); d != nil {
				(*d)(payload)
			}
		case secure.TypeControl:
			m, err := DecodeMsg(payload)
			if err != nil {
				s.end(err)
				return
			}
			spoke = true
			select {
			case s.ctrlIn <- m:
			default:
				s.end(errors.New("peer floods control messages"))
				return
			}
		default:
			s.end(fmt.Errorf("unexpected record type %d", typ))
			return
		}
	}
}

// writeLoop sends what other goroutines must not block on: queued data
// frames, sealed each in its own buffer with every frame waiting at that
// moment (up to maxBatch) going out in one writev, and queued control
// messages (pings, pongs).
func (s *Session) writeLoop() {
	defer close(s.writerDone)
	bufs := make([]*packet.Buf, 0, maxBatch)
	recs := make([][]byte, 0, maxBatch)
	defer func() {
		for _, b := range bufs {
			packet.Put(b)
		}
	}()
	for {
		select {
		case b := <-s.queue:
			bufs = append(bufs, b)
		case m := <-s.ctrlOut:
			if err := s.SendControl(m); err != nil {
				s.end(fmt.Errorf("write: %w", err))
				return
			}
			continue
		case <-s.flush:
			// What Send's write left unsent; waiting here stalls this
			// session only.
			err := s.sc.Flush()
			s.inflight.Add(-1)
			if err != nil {
				s.end(fmt.Errorf("write: %w", err))
				return
			}
			continue
		case <-s.closed:
			return
		}
	fill:
		for len(bufs) < maxBatch {
			select {
			case b := <-s.queue:
				bufs = append(bufs, b)
			default:
				break fill
			}
		}
		var n uint64
		for _, b := range bufs {
			n += uint64(b.N)
			recs = append(recs, b.Record())
		}
		err := s.sc.WritePackets(recs...)
		for i, b := range bufs {
			packet.Put(b)
			bufs[i], recs[i] = nil, nil
		}
		s.inflight.Add(-int64(len(bufs)))
		s.Stats.TxBytes.Add(n)
		s.Stats.TxPackets.Add(uint64(len(bufs)))
		bufs, recs = bufs[:0], recs[:0]
		if err != nil {
			s.end(fmt.Errorf("write: %w", err))
			return
		}
	}
}
