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
)

// Defaults both sides fall back to when the config leaves them unset.
const (
	DefaultKeepalive = 2 * time.Second
	DefaultDeadAfter = 3
	DefaultQueueLen  = 256
	setupTimeout     = 10 * time.Second
)

// ErrDead is returned by Run when keepalives stopped arriving.
var ErrDead = errors.New("session dead: no keepalive from the peer")

// Stats are the counters of one session; safe to read at any time.
type Stats struct {
	TxBytes, TxPackets atomic.Uint64
	RxBytes, RxPackets atomic.Uint64
	QueueDrops         atomic.Uint64 // packets dropped because the send queue was full
}

// Session is one authenticated, multiplexed connection between gtun and gtund.
type Session struct {
	mux      *yamux.Session
	ctrl     *yamux.Stream
	data     *yamux.Stream
	isClient bool
	log      *slog.Logger

	keepalive time.Duration
	deadAfter int
	queue     chan *packet.Buf

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
	c.MaxStreamWindowSize = 4 << 20 // let one data stream fill a fast, long path
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = setupTimeout
	c.LogOutput = io.Discard
	return c
}

func newSession(mux *yamux.Session, isClient bool, log *slog.Logger, queueLen int) *Session {
	if queueLen <= 0 {
		queueLen = DefaultQueueLen
	}
	s := &Session{mux: mux, isClient: isClient, log: log, queue: make(chan *packet.Buf, queueLen),
		keepalive: DefaultKeepalive, deadAfter: DefaultDeadAfter}
	s.lastRecv.Store(time.Now().UnixNano())
	return s
}

// Dial runs the client side over an already sealed conn: it opens the control
// stream, sends hello and waits for the server's config, then opens the data
// stream. The session owns conn from here on.
func Dial(ctx context.Context, conn net.Conn, hello *Msg, queueLen int, log *slog.Logger) (*Session, *Msg, error) {
	mux, err := yamux.Client(wrapForMux(conn), muxConfig())
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("yamux client: %w", err)
	}
	s := newSession(mux, true, log, queueLen)
	cfg, err := s.dial(ctx, hello)
	if err != nil {
		mux.Close()
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
	if s.data, err = s.mux.OpenStream(); err != nil {
		return nil, fmt.Errorf("open data stream: %w", err)
	}
	return m, nil
}

// Accept runs the server side over a sealed conn up to the client's hello.
// The caller answers with SendControl (config or error), then AcceptData.
func Accept(conn net.Conn, queueLen int, log *slog.Logger) (*Session, *Msg, error) {
	mux, err := yamux.Server(wrapForMux(conn), muxConfig())
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("yamux server: %w", err)
	}
	s := newSession(mux, false, log, queueLen)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if s.ctrl, err = mux.AcceptStreamWithContext(ctx); err != nil {
		mux.Close()
		return nil, nil, fmt.Errorf("accept control stream: %w", err)
	}
	_ = s.ctrl.SetReadDeadline(time.Now().Add(setupTimeout))
	m, err := ReadMsg(s.ctrl)
	if err != nil {
		mux.Close()
		return nil, nil, fmt.Errorf("read hello: %w", err)
	}
	_ = s.ctrl.SetReadDeadline(time.Time{})
	if m.Type != TypeHello {
		mux.Close()
		return nil, nil, fmt.Errorf("expected hello, got %q", m.Type)
	}
	return s, m, nil
}

// AcceptData waits for the client's data stream.
func (s *Session) AcceptData() error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	var err error
	if s.data, err = s.mux.AcceptStreamWithContext(ctx); err != nil {
		return fmt.Errorf("accept data stream: %w", err)
	}
	return nil
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
func (s *Session) SendControl(m *Msg) error {
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	_ = s.ctrl.SetWriteDeadline(time.Now().Add(setupTimeout))
	defer s.ctrl.SetWriteDeadline(time.Time{})
	return WriteMsg(s.ctrl, m)
}

// Enqueue hands a packet to the session's sender. The queue is bounded: when
// it is full the packet is dropped and counted rather than blocking the TUN
// reader that serves every session. The session owns b either way.
func (s *Session) Enqueue(b *packet.Buf) bool {
	select {
	case s.queue <- b:
		return true
	default:
		s.Stats.QueueDrops.Add(1)
		packet.Put(b)
		return false
	}
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
func (s *Session) RemoteAddr() net.Addr { return s.mux.RemoteAddr() }

// Close tears the session down; Run returns soon after.
func (s *Session) Close() error { return s.mux.Close() }

// Handlers are called by Run from its reader goroutines.
type Handlers struct {
	// Packet gets every packet from the peer; it must not keep pkt.
	Packet func(pkt []byte)
	// Control gets control messages other than ping/pong.
	Control func(m *Msg)
}

// Run moves packets and keepalives until the session fails, is closed, or
// ctx ends. It returns the first error; the session is closed on return.
func (s *Session) Run(ctx context.Context, h Handlers) error {
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
	start(func(context.Context) error { return s.recvData(h.Packet) })
	start(func(context.Context) error { return s.recvControl(h.Control) })
	start(s.keepaliveLoop)
	select {
	case <-ctx.Done():
	case <-s.mux.CloseChan():
		cancel(errors.New("session closed"))
	}
	s.mux.Close()
	wg.Wait()
	err := context.Cause(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, maxBatch+frameHeader+packet.MaxSize); return &b }}

// directWrite is the frame size from which a frame goes to the stream on its
// own, straight from its buffer (the length prefix sits in its headroom);
// smaller frames are copied into a batch so that many fit one write.
const directWrite = 8 * 1024

// sendLoop drains the queue: large frames are written as they are, small
// ones packed (up to maxBatch bytes) into one stream write. The batch buffer
// is borrowed only while there is something to send, so idle sessions hold
// none.
func (s *Session) sendLoop(ctx context.Context) error {
	var bp *[]byte
	var batch []byte
	packets := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := s.data.Write(batch)
		s.Stats.TxBytes.Add(uint64(len(batch) - packets*frameHeader))
		s.Stats.TxPackets.Add(uint64(packets))
		batch, packets = batch[:0], 0
		return err
	}
	defer func() {
		if bp != nil {
			batchPool.Put(bp)
		}
	}()
	for {
		var b *packet.Buf
		select {
		case b = <-s.queue:
		case <-ctx.Done():
			return nil
		}
		for b != nil {
			if b.N >= directWrite {
				if err := flush(); err != nil {
					packet.Put(b)
					return fmt.Errorf("write data: %w", err)
				}
				_, err := s.data.Write(b.Framed())
				s.Stats.TxBytes.Add(uint64(b.N))
				s.Stats.TxPackets.Add(1)
				packet.Put(b)
				if err != nil {
					return fmt.Errorf("write data: %w", err)
				}
			} else {
				if bp == nil {
					bp = batchPool.Get().(*[]byte)
					batch = (*bp)[:0]
				}
				batch = appendFrame(batch, b.Bytes())
				packets++
				packet.Put(b)
				if len(batch) >= maxBatch {
					if err := flush(); err != nil {
						return fmt.Errorf("write data: %w", err)
					}
				}
			}
			select {
			case b = <-s.queue:
			default:
				b = nil
			}
		}
		if err := flush(); err != nil {
			return fmt.Errorf("write data: %w", err)
		}
		if bp != nil {
			*bp = batch[:0]
			batchPool.Put(bp)
			bp, batch = nil, nil
		}
	}
}

func (s *Session) recvData(deliver func([]byte)) error {
	pr := NewPacketReader(s.data)
	b := packet.Get()
	defer packet.Put(b)
	for {
		if err := pr.ReadPacket(b); err != nil {
			return fmt.Errorf("read data: %w", err)
		}
		s.lastRecv.Store(time.Now().UnixNano())
		s.Stats.RxBytes.Add(uint64(b.N))
		s.Stats.RxPackets.Add(1)
		if deliver != nil {
			deliver(b.Bytes())
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
		s.lastRecv.Store(now)
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

// keepaliveLoop sends pings (client) and declares the session dead when the
// peer has been silent for deadAfter intervals (both sides).
func (s *Session) keepaliveLoop(ctx context.Context) error {
	t := time.NewTicker(s.keepalive)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if now.Sub(s.LastRecv()) > time.Duration(s.deadAfter)*s.keepalive {
				return ErrDead
			}
			if s.isClient {
				seq++
				if err := s.SendControl(&Msg{Type: TypePing, Seq: seq, Time: time.Now().UnixNano()}); err != nil {
					return fmt.Errorf("send ping: %w", err)
				}
			}
		}
	}
}
