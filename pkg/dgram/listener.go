package dgram

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gtun/gtun/pkg/guard"
	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/secure"
)

// Handshake queue: first messages that passed mac1 (and, under load, mac2)
// wait here for the one worker that does the Diffie-Hellman, so that the
// demux never stops for one and the data of live sessions keeps flowing.
// Above loadThreshold of it in use the listener counts as under load for
// loadHold (WireGuard's measure, with its numbers scaled down).
const (
	handshakeQueue = 256
	loadThreshold  = handshakeQueue / 8
	loadHold       = time.Second
	acceptQueue    = 128
	// DefaultMaxSessions bounds the sessions of one listener (all are
	// authenticated; a peer that reconnects makes a new one and its old
	// one ends).
	DefaultMaxSessions = 1 << 16
)

// ListenConfig is what a Listener needs.
type ListenConfig struct {
	// Responder does the handshake: mac1, its replay filter, the DH and
	// the authorization. A server shares one across its transports.
	Responder *secure.Responder
	// Guard limits, under load, the handshakes of each source whose
	// address a cookie has proven (a proven source can still send fresh
	// first messages that each cost a DH). Nil: no per-source limit.
	Guard *guard.Guard
	// Refused is told about every initiation the responder refused, with
	// the error (for the daemon's counters and logs). May be nil.
	Refused func(err error, from netip.AddrPort)
	// MaxSessions bounds the sessions (0: DefaultMaxSessions).
	MaxSessions int
	Logger      *slog.Logger
}

// Listener is the server's datagram endpoint: one UDP socket, a demux
// goroutine and a handshake worker. Accept returns authenticated sessions.
type Listener struct {
	conn    *net.UDPConn
	writer  *batchWriter // the sessions' data datagrams, batched
	cfg     ListenConfig
	log     *slog.Logger
	rate    *lograte.Limiter
	cookies *cookieChecker
	index   *indexTable

	hsq       chan handshakeJob
	accepted  chan *Session
	loadUntil atomic.Int64 // unix nanoseconds; under load until then

	drops       drops
	cookiesSent atomic.Uint64
	sessions    atomic.Uint64 // made since start

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
	cbuf      []byte // the demux's cookie replies
}

type handshakeJob struct {
	b    [InitiationOverhead + maxFirstMessage]byte
	n    int
	from netip.AddrPort
}

// Listen opens the UDP socket on addr and starts serving it.
func Listen(addr string, cfg ListenConfig) (*Listener, error) {
	if cfg.Responder == nil {
		return nil, errors.New("dgram.Listen: no responder")
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	sizeBuffers(conn)
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Listener{conn: conn, cfg: cfg, log: log, rate: lograte.New(log, 10*time.Second),
		cookies: newCookieChecker(cfg.Responder.PublicKey()), index: newIndexTable(cfg.MaxSessions),
		hsq: make(chan handshakeJob, handshakeQueue), accepted: make(chan *Session, acceptQueue),
		closed: make(chan struct{}), cbuf: make([]byte, 0, CookieReplyLen)}
	if l.writer, err = newBatchWriter(conn, false, &l.drops, l.send); err != nil {
		conn.Close()
		return nil, err
	}
	l.wg.Add(3)
	go func() { defer l.wg.Done(); l.demux() }()
	go func() { defer l.wg.Done(); l.handshakes() }()
	go func() { defer l.wg.Done(); l.logDrops() }()
	return l, nil
}

// socketBuffer is the UDP socket's kernel buffer each way: a kcp window of
// bursts between two reads, and the udp transport's flows of several
// streams between two reads of the demux (with 4 MiB, 4 iperf3 streams
// through gtund overflowed it hundreds of times a second).
const socketBuffer = 8 << 20

// sizeBuffers sets the socket's buffers to socketBuffer: past the
// system's limit (net.core.rmem_max, 208 KiB on a stock kernel) when the
// process may (CAP_NET_ADMIN, which both daemons hold), else as far as
// the limit allows.
func sizeBuffers(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	var forced bool
	_ = rc.Control(func(fd uintptr) {
		forced = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer) == nil &&
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer) == nil
	})
	if !forced {
		_ = c.SetReadBuffer(socketBuffer)
		_ = c.SetWriteBuffer(socketBuffer)
	}
}

// Addr is the local address.
func (l *Listener) Addr() net.Addr { return l.conn.LocalAddr() }

// Accept returns the next authenticated session.
func (l *Listener) Accept() (*Session, error) {
	select {
	case s := <-l.accepted:
		return s, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops the listener: the socket closes, Accept returns
// net.ErrClosed, and every session it made is closed.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		l.writer.close()
		err = l.conn.Close()
		l.wg.Wait()
		for _, s := range l.index.all() {
			s.Close()
		}
		for {
			select {
			case s := <-l.accepted:
				s.Close()
				continue
			default:
			}
			break
		}
	})
	return err
}

// demux reads every datagram and routes it: data to its session by index,
// initiations through mac1 (and under load mac2) to the handshake queue.
// Anything else is dropped and counted; nothing here keeps state for a
// datagram that has not been authenticated.
func (l *Listener) demux() {
	br, err := newGROReader(l.conn, MaxDatagram+1) // one more: a larger datagram is seen as too large
	if err != nil {
		l.log.Error("datagram listener cannot read its socket", "err", err)
		return
	}
	batch := make([]*Session, 0, readBatch) // the sessions the last read had data for
	var rx receiver
	for {
		n, err := br.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.rate.Log(slog.LevelWarn, "dgram-read", "udp read failed", "err", err)
			continue
		}
		now := time.Now() // once per batch: the sessions' clock for key epochs
		var last *Session // the session of the last data datagram: a run's are one session's
		for i := range n {
			msg, seg, from := br.message(i)
			for len(msg) > 0 {
				var d []byte
				d, msg = nextDatagram(msg, seg)
				if s := l.routeAt(&rx, d, from, now); s != nil && s != last {
					if !slices.Contains(batch, s) {
						batch = append(batch, s)
					}
					last = s
				}
			}
			rx.release()
		}
		// The batch is in: packets a session's handler held back to
		// join with the next one go now.
		for i, s := range batch {
			s.flush()
			batch[i] = nil
		}
		batch = batch[:0]
	}
}

// route handles one datagram the demux read; it returns the session of a
// data datagram.
func (l *Listener) route(d []byte, from netip.AddrPort) *Session {
	var rx receiver
	defer rx.release()
	return l.routeAt(&rx, d, from, time.Now())
}

// routeAt is route at the time the demux read the datagram's batch; rx
// opens data datagrams (and may hold their session's lock on return).
func (l *Listener) routeAt(rx *receiver, d []byte, from netip.AddrPort, now time.Time) *Session {
	typ, ok := header(d)
	if !ok || len(d) > MaxDatagram {
		l.drop(DropMalformed, from)
		return nil
	}
	switch typ {
	case TypeData:
		if len(d) < DataOverhead {
			l.drop(DropMalformed, from)
			return nil
		}
		// A GRO message is a run of one peer's datagrams: the session
		// the receiver holds is the one its index names, without a
		// lookup (a read lock) per datagram.
		i := index(d[headerLen:])
		s := rx.s
		if s == nil || s.local != i {
			s = l.index.lookup(i)
		}
		if s == nil {
			l.drop(DropUnknownIndex, from)
			return nil
		}
		rx.receive(s, d, from, now)
		return s
	case TypeInitiation:
		rx.release() // nothing else runs under a session's lock
		l.initiation(d, from)
	case TypeResponse, TypeCookieReply:
		l.drop(DropUnsolicited, from) // a server sends these, never takes them
	default:
		l.drop(DropMalformed, from)
	}
	return nil
}

// drop counts a dropped datagram. It does nothing else: a flood of
// forged datagrams must cost a counter each, not a log line or an
// allocation; logDrops reports the counts at a bounded rate.
func (l *Listener) drop(reason DropReason, _ netip.AddrPort) { l.drops.Inc(reason) }

// initiation checks a first message before it may cost anything: mac1
// first, then (under load) mac2, and the per-source limit of proven
// sources, then the replay filter; it then queues it for the handshake
// worker.
func (l *Listener) initiation(d []byte, from netip.AddrPort) {
	in, ok := parseInitiation(d)
	if !ok {
		l.drop(DropMalformed, from)
		return
	}
	if !l.cfg.Responder.CheckMAC1(in.first) {
		l.drop(DropBadMAC1, from)
		return
	}
	if l.underLoad() {
		if !l.cookies.checkMAC2(in, from) {
			reply, err := l.cookies.appendReply(l.cbuf[:0], in, from)
			if err != nil {
				l.rate.Log(slog.LevelError, "dgram-cookie", "cannot make a cookie reply", "err", err)
				return
			}
			if _, err := l.conn.WriteToUDPAddrPort(reply, from); err == nil {
				l.cookiesSent.Add(1)
			}
			l.drop(DropCookieRequired, from)
			return
		}
		// The source is proven: it receives at this address. Now, and only
		// now, a per-source budget applies.
		if g := l.cfg.Guard; g != nil {
			t, _ := g.Admit(from.Addr())
			if t == nil {
				l.drop(DropRateLimited, from) // whichever limit: the guard counts its own
				return
			}
			t.Release()
		}
	}
	// The replay filter before the queue: a recorded message sent again,
	// from anywhere and however often, costs a lookup.
	if !l.cfg.Responder.Remember(in.first) {
		l.drop(DropDuplicate, from)
		return
	}
	select {
	case l.hsq <- l.job(d, from):
	default:
		l.drop(DropHandshakeFull, from)
	}
	if len(l.hsq) >= loadThreshold {
		l.loadUntil.Store(time.Now().Add(loadHold).UnixNano())
	}
}

func (l *Listener) job(d []byte, from netip.AddrPort) handshakeJob {
	var j handshakeJob
	j.n = copy(j.b[:], d)
	j.from = from
	return j
}

// underLoad reports whether initiations must prove their source first: the
// handshake queue filled recently, or the responder's replay filter did.
func (l *Listener) underLoad() bool {
	return time.Now().UnixNano() < l.loadUntil.Load() || l.cfg.Responder.UnderLoad()
}

// handshakes is the worker: one DH at a time, off the demux.
func (l *Listener) handshakes() {
	for {
		select {
		case <-l.closed:
			return
		case j := <-l.hsq:
			l.handshake(&j)
		}
	}
}

func (l *Listener) handshake(j *handshakeJob) {
	in, _ := parseInitiation(j.b[:j.n]) // parsed and screened (mac1, replay filter) by the demux
	reply, keys, client, err := l.cfg.Responder.RespondRemembered(in.first)
	var ve *secure.VersionError
	if err != nil && !errors.As(err, &ve) {
		if l.cfg.Refused != nil {
			l.cfg.Refused(err, j.from)
		}
		return // silence
	}
	if err != nil {
		// An authenticated client of another protocol version is told so
		// in the reply; no session.
		if l.cfg.Refused != nil {
			l.cfg.Refused(err, j.from)
		}
		l.send(appendResponse(nil, 0, in.sender, reply), j.from)
		return
	}
	s, err := l.newSession(keys, client, in.sender, j.from)
	if err != nil {
		l.rate.Log(slog.LevelWarn, "dgram-session", "cannot make a datagram session", "peer", client.Short(), "err", err)
		return
	}
	if err := l.send(appendResponse(nil, s.local, in.sender, reply), j.from); err != nil {
		l.rate.Log(slog.LevelWarn, "dgram-send", "cannot send the handshake response", "to", j.from.String(), "err", err)
	}
	select {
	case l.accepted <- s:
		l.sessions.Add(1)
	default:
		s.Close()
		l.drop(DropAcceptFull, j.from)
	}
}

// newSession makes the session of a completed handshake and gives it its
// index; closing it forgets the index.
func (l *Listener) newSession(keys secure.Keys, client secure.PublicKey, remote uint32, from netip.AddrPort) (*Session, error) {
	s, err := sessionFromKeys(keys, sessionParams{remote: remote, endpoint: from, roams: true, xmit: l.sendData, xmitGSO: l.writer.sendGSO, drops: &l.drops})
	if err != nil {
		return nil, err
	}
	s.peer = client
	local, err := l.index.add(s)
	if err != nil {
		return nil, err
	}
	s.local = local
	s.onClose = append(s.onClose, func() { l.index.remove(local, s) })
	return s, nil
}

// send sends one datagram now (handshake responses, and the writer's
// datagrams on an idle path).
func (l *Listener) send(b []byte, to netip.AddrPort) error {
	_, err := l.conn.WriteToUDPAddrPort(b, to)
	return err
}

// sendData sends a session's data datagram through the batching writer.
func (l *Listener) sendData(b []byte, to netip.AddrPort) error {
	l.writer.send(b, to)
	return nil
}

// logDrops logs the drop counts that grew, each reason at most once per
// lograte interval (the line carries the latest total), and flushes the
// limiter so that the totals of a flood that stopped reach the log.
func (l *Listener) logDrops() {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	last := map[string]uint64{}
	for {
		select {
		case <-l.closed:
			return
		case <-t.C:
		}
		for reason, n := range l.drops.Snapshot() {
			if n == last[reason] {
				continue
			}
			last[reason] = n
			level := slog.LevelInfo
			if reason == DropQueueFull.String() || reason == DropHandshakeFull.String() || reason == DropAcceptFull.String() {
				level = slog.LevelWarn // ours to fix, not an attacker's noise
			}
			l.rate.Log(level, "dgram-drop:"+reason, "datagrams dropped", "reason", reason, "total", n, "listen", l.conn.LocalAddr().String())
		}
		l.rate.Flush()
	}
}

// ListenerStats are a listener's counters.
type ListenerStats struct {
	Sessions    int               `json:"sessions"`          // live now
	Established uint64            `json:"established"`       // since start
	CookiesSent uint64            `json:"cookies_sent"`      // initiations answered with a cookie instead of a DH
	UnderLoad   bool              `json:"under_load"`        // cookies asked for now
	Dropped     map[string]uint64 `json:"dropped,omitempty"` // datagrams dropped, by reason
}

// Stats snapshots the listener's counters.
func (l *Listener) Stats() ListenerStats {
	return ListenerStats{Sessions: l.index.len(), Established: l.sessions.Load(), CookiesSent: l.cookiesSent.Load(),
		UnderLoad: l.underLoad(), Dropped: l.drops.Snapshot()}
}

// String names the listener for logs.
func (l *Listener) String() string { return fmt.Sprintf("dgram://%s", l.conn.LocalAddr()) }
