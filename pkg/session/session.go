package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

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
)

func init() {
	// Frames are sealed where they lie: the buffer geometry must match the
	// record layout.
	if packet.Headroom != secure.PacketHeadroom || packet.Tailroom != secure.PacketTailroom {
		panic("packet buffer headroom/tailroom do not match the secure record layout")
	}
}

// ErrDead is returned by Run when keepalives stopped arriving.
var ErrDead = errors.New("session dead: no keepalive from the peer")

// Stats are the counters of one session; safe to read at any time.
type Stats struct {
	TxBytes, TxPackets atomic.Uint64
	RxBytes, RxPackets atomic.Uint64
	QueueDrops         atomic.Uint64 // packets dropped because the send queue was full
}

// Session is one authenticated connection between gtun and gtund. Control
// messages travel in a yamux stream over the sealed byte stream; packets
// travel beside it as sealed packet records, written and read in place from
// their buffers. Moving data frames through yamux cost two copies and two
// goroutine hand-offs per frame each way (see README, Performance).
type Session struct {
	sc       *secure.Conn
	mc       *muxConn
	mux      *yamux.Session
	ctrl     *yamux.Stream
	isClient bool
	log      *slog.Logger

	keepalive time.Duration
	deadAfter int
	queue     chan *packet.Buf
	inflight  atomic.Int64 // packets enqueued and not yet written

	deliver    atomic.Pointer[func([]byte)] // set by Run; packets before it are dropped
	readerDone chan struct{}
	readerErr  error // valid once readerDone is closed

	Stats    Stats
	rtt      atomic.Int64 // nanoseconds, last measured
	lastRecv atomic.Int64 // unix nanoseconds of the last message or packet from the peer
	lastPing atomic.Int64 // unix nanoseconds of the last ping the server saw
	ctrlMu   sync.Mutex
}

func muxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false // our control stream carries keepalives and measures RTT
	c.AcceptBacklog = 8
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = setupTimeout
	c.LogOutput = io.Discard
	return c
}

// start wraps sc and starts the goroutine that reads every record: stream
// records feed yamux, packet records go to the deliver handler. It stops
// when sc is closed.
func start(sc *secure.Conn, isClient bool, log *slog.Logger, queueLen int) *Session {
	if queueLen <= 0 {
		queueLen = DefaultQueueLen
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Session{sc: sc, mc: newMuxConn(sc), isClient: isClient, log: log, queue: make(chan *packet.Buf, queueLen),
		keepalive: DefaultKeepalive, deadAfter: DefaultDeadAfter, readerDone: make(chan struct{})}
	s.lastRecv.Store(time.Now().UnixNano())
	go s.readLoop()
	return s
}

// Dial runs the client side over a sealed conn: it opens the control stream,
// sends hello and waits for the server's config. The session owns sc from
// here on.
func Dial(ctx context.Context, sc *secure.Conn, hello *Msg, queueLen int, log *slog.Logger) (*Session, *Msg, error) {
	s := start(sc, true, log, queueLen)
	var err error
	if s.mux, err = yamux.Client(s.mc, muxConfig()); err != nil {
		s.closeAll()
		return nil, nil, fmt.Errorf("yamux client: %w", err)
	}
	cfg, err := s.dial(ctx, hello)
	if err != nil {
		s.closeAll()
		return nil, nil, err
	}
	return s, cfg, nil
}

func (s *Session) dial(ctx context.Context, hello *Msg) (*Msg, error) {
	var err error
	if s.ctrl, err = s.mux.OpenStream(); err != nil {
		return nil, fmt.Errorf("open control stream: %w", err)
	}
	if err := WriteMsg(s.ctrl, hello); err != nil {
		return nil, fmt.Errorf("send hello: %w", err)
	}
	deadline := time.Now().Add(setupTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.ctrl.SetReadDeadline(deadline)
	m, err := ReadMsg(s.ctrl)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	_ = s.ctrl.SetReadDeadline(time.Time{})
	switch m.Type {
	case TypeConfig:
	case TypeError:
		return nil, fmt.Errorf("server refused the session: %s", m.Error)
	default:
		return nil, fmt.Errorf("expected config, got %q", m.Type)
	}
	s.applyKeepalive(m)
	return m, nil
}

// Accept runs the server side over a sealed conn up to the client's hello.
// The caller answers with SendControl (config or error), then Run.
func Accept(sc *secure.Conn, queueLen int, log *slog.Logger) (*Session, *Msg, error) {
	s := start(sc, false, log, queueLen)
	var err error
	if s.mux, err = yamux.Server(s.mc, muxConfig()); err != nil {
		s.closeAll()
		return nil, nil, fmt.Errorf("yamux server: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if s.ctrl, err = s.mux.AcceptStreamWithContext(ctx); err != nil {
		s.closeAll()
		return nil, nil, fmt.Errorf("accept control stream: %w", err)
	}
	_ = s.ctrl.SetReadDeadline(time.Now().Add(setupTimeout))
	m, err := ReadMsg(s.ctrl)
	if err != nil {
		s.closeAll()
		return nil, nil, fmt.Errorf("read hello: %w", err)
	}
	_ = s.ctrl.SetReadDeadline(time.Time{})
	if m.Type != TypeHello {
		s.closeAll()
		return nil, nil, fmt.Errorf("expected hello, got %q", m.Type)
	}
	return s, m, nil
}

func (s *Session) applyKeepalive(m *Msg) {
	if m.KeepaliveMS > 0 {
		s.keepalive = time.Duration(m.KeepaliveMS) * time.Millisecond
	}
	if m.DeadAfter > 0 {
		s.deadAfter = m.DeadAfter
	}
}

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

// SendControl writes one control message; safe for concurrent use.
func (s *Session) SendControl(m *Msg) error { return s.sendControlWithin(m, setupTimeout) }

func (s *Session) sendControlWithin(m *Msg, d time.Duration) error {
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	_ = s.ctrl.SetWriteDeadline(time.Now().Add(d))
	defer s.ctrl.SetWriteDeadline(time.Time{})
	return WriteMsg(s.ctrl, m)
}

// Enqueue hands a packet to the session's sender. The queue is bounded: when
// it is full the packet is dropped and counted rather than blocking the TUN
// reader that serves every session. The session owns b either way.
func (s *Session) Enqueue(b *packet.Buf) bool {
	s.inflight.Add(1)
	select {
	case s.queue <- b:
		return true
	default:
		s.inflight.Add(-1)
		s.Stats.QueueDrops.Add(1)
		packet.Put(b)
		return false
	}
}

// Send is Enqueue for a caller that is the session's only producer and may
// block on the connection (gtun's TUN reader): when nothing is waiting to be
// sent, it writes the packet itself, saving the hand-off to the sender
// goroutine and its wake-up, which is most of the latency a packet sees
// inside gtun. Order is kept: with nothing in flight no older packet can
// still be on its way.
func (s *Session) Send(b *packet.Buf) bool {
	if s.inflight.Load() != 0 || s.deliver.Load() == nil {
		return s.Enqueue(b)
	}
	n := b.N
	err := s.sc.WritePackets(b.Record())
	packet.Put(b)
	if err == nil { // on error the reader sees the broken connection and ends the session
		s.Stats.TxBytes.Add(uint64(n))
		s.Stats.TxPackets.Add(1)
	}
	return true
}

// RTT is the last keepalive round trip (client side), zero before the first.
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
	s.closeAll()
	return nil
}

func (s *Session) closeAll() {
	if s.mux != nil {
		s.mux.Close()
	}
	s.sc.Close()
	s.mc.closeRead(io.ErrClosedPipe)
}

// Handlers are called by Run from its reader goroutines.
type Handlers struct {
	// Packet gets every frame from the peer; it must not keep frame.
	Packet func(frame []byte)
	// Control gets control messages other than ping/pong.
	Control func(m *Msg)
}

// Run moves packets and keepalives until the session fails, is closed, or
// ctx ends. It returns the first error; the session is closed on return.
func (s *Session) Run(ctx context.Context, h Handlers) error {
	if h.Packet != nil {
		s.deliver.Store(&h.Packet)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	start := func(f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				cancel(err)
			}
		}()
	}
	start(s.sendLoop)
	start(func(context.Context) error { return s.recvControl(h.Control) })
	if s.isClient {
		start(s.pingLoop)
	}
	// Liveness is checked here, apart from anything that writes: when the
	// path is down, writers block on a full socket buffer.
	live := time.NewTicker(s.keepalive)
	defer live.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-s.mux.CloseChan():
			cancel(errors.New("session closed"))
			break wait
		case <-s.readerDone:
			cancel(s.readerErr)
			break wait
		case now := <-live.C:
			if now.Sub(s.LastRecv()) > time.Duration(s.deadAfter)*s.keepalive {
				cancel(ErrDead)
				break wait
			}
		}
	}
	s.closeAll()
	wg.Wait()
	<-s.readerDone
	s.deliver.Store(nil)
	err := context.Cause(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// readLoop reads every record from the peer. Packet records are opened in
// a pooled buffer, right where the frame belongs, and handed to the deliver
// handler without a copy; stream records go to yamux.
func (s *Session) readLoop() {
	defer close(s.readerDone)
	var b *packet.Buf
	defer func() {
		if b != nil {
			packet.Put(b)
		}
	}()
	// The buffer is taken once a record's header has arrived and returned
	// after it was handled: an idle session holds none.
	get := func(int) []byte {
		b = packet.Get()
		return b.RecordSpace()
	}
	for {
		if b != nil {
			packet.Put(b)
			b = nil
		}
		typ, payload, err := s.sc.ReadRecord(get)
		if err != nil {
			s.readerErr = fmt.Errorf("read: %w", err)
			s.mc.closeRead(err)
			return
		}
		s.lastRecv.Store(time.Now().UnixNano())
		switch typ {
		case secure.TypeStream:
			if err := s.mc.feed(payload); err != nil {
				s.readerErr = err
				return
			}
		case secure.TypePacket:
			if len(payload) == 0 || len(payload) > packet.MaxSize {
				s.readerErr = fmt.Errorf("packet record of %d bytes", len(payload))
				s.mc.closeRead(s.readerErr)
				return
			}
			s.Stats.RxBytes.Add(uint64(len(payload)))
			s.Stats.RxPackets.Add(1)
			if d := s.deliver.Load(); d != nil {
				(*d)(payload)
			}
		default:
			s.readerErr = fmt.Errorf("unknown record type %d", typ)
			s.mc.closeRead(s.readerErr)
			return
		}
	}
}

// sendLoop drains the queue and seals each frame in its own buffer; the
// frames waiting at that moment (up to maxBatch) go out in one writev.
func (s *Session) sendLoop(ctx context.Context) error {
	bufs := make([]*packet.Buf, 0, maxBatch)
	recs := make([][]byte, 0, maxBatch)
	for {
		select {
		case b := <-s.queue:
			bufs = append(bufs, b)
		case <-ctx.Done():
			return nil
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
			return fmt.Errorf("write data: %w", err)
		}
	}
}

func (s *Session) recvControl(handle func(*Msg)) error {
	for {
		m, err := ReadMsg(s.ctrl)
		if err != nil {
			return fmt.Errorf("read control: %w", err)
		}
		now := time.Now().UnixNano()
		switch m.Type {
		case TypePing:
			s.lastPing.Store(now)
			if !s.isClient {
				if err := s.SendControl(&Msg{Type: TypePong, Seq: m.Seq, Time: m.Time}); err != nil {
					return fmt.Errorf("send pong: %w", err)
				}
			}
		case TypePong:
			if m.Time > 0 && now > m.Time {
				s.rtt.Store(now - m.Time)
			}
		case TypeError:
			return fmt.Errorf("peer closed the session: %s", m.Error)
		default:
			if handle != nil {
				handle(m)
			}
		}
	}
}

// pingLoop sends the client's keepalive pings; the server answers each
// with a pong, which gives the RTT. A ping that cannot be handed over within
// an interval (the path is down) is skipped.
func (s *Session) pingLoop(ctx context.Context) error {
	t := time.NewTicker(s.keepalive)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			seq++
			err := s.sendControlWithin(&Msg{Type: TypePing, Seq: seq, Time: time.Now().UnixNano()}, s.keepalive)
			if err != nil && !errors.Is(err, yamux.ErrTimeout) && !errors.Is(err, yamux.ErrConnectionWriteTimeout) {
				return fmt.Errorf("send ping: %w", err)
			}
		}
	}
}
