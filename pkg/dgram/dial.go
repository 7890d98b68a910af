package dgram

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/gtun/gtun/pkg/secure"
)

// DefaultRetry is how long a client waits for an answer before it sends a
// new initiation (new ephemeral key and timestamp: the server's replay
// filter drops a message it has seen, so a retry is never a copy).
const DefaultRetry = time.Second

// DialConfig is what a client needs.
type DialConfig struct {
	Handshake secure.ClientConfig
	// Retry is the wait before a new initiation (0: DefaultRetry).
	Retry time.Duration
	// Timeout bounds the whole handshake (0: Handshake.Timeout, else
	// secure.DefaultHandshakeTimeout).
	Timeout time.Duration
}

// NoAnswerError is a dial that got no usable answer within its timeout: it
// is a timeout (net.Error) and wraps secure.ErrNoAnswer.
type NoAnswerError struct {
	Attempts int
	Cookies  int   // cookie replies received: the server is there, under load
	Last     error // the last socket error seen (e.g. connection refused), if any
}

func (e *NoAnswerError) Error() string {
	s := fmt.Sprintf("%v (%d initiations", secure.ErrNoAnswer, e.Attempts)
	if e.Cookies > 0 {
		s += fmt.Sprintf(", %d cookie replies: the server is under load", e.Cookies)
	}
	if e.Last != nil {
		s += fmt.Sprintf("; last socket error: %v", e.Last)
	}
	return s + ")"
}
func (e *NoAnswerError) Unwrap() error   { return secure.ErrNoAnswer }
func (e *NoAnswerError) Timeout() bool   { return true }
func (e *NoAnswerError) Temporary() bool { return true }

// pending is one initiation sent and not yet answered.
type pending struct {
	in   *secure.Initiation
	mac1 [macLen]byte
}

// Dial runs the handshake with the server at addr over a UDP socket of its
// own (connected, so the kernel drops datagrams from anyone but the
// server) and returns the session. Each retry is a new initiation; a
// cookie reply is answered at once with an initiation that carries mac2.
func Dial(ctx context.Context, addr string, cfg DialConfig) (*Session, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		return nil, err
	}
	sizeBuffers(conn)
	s, err := dialOn(ctx, conn, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func dialOn(ctx context.Context, conn *net.UDPConn, cfg DialConfig) (*Session, error) {
	retry := cfg.Retry
	if retry <= 0 {
		retry = DefaultRetry
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = cfg.Handshake.Timeout
	}
	if timeout <= 0 {
		timeout = secure.DefaultHandshakeTimeout
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()

	jar := newCookieJar(cfg.Handshake.ServerKey)
	sent := map[uint32]*pending{}
	noAnswer := &NoAnswerError{}
	send := func() error {
		in, first, err := secure.Initiate(cfg.Handshake)
		if err != nil {
			return err
		}
		sender, err := randomIndex()
		if err != nil {
			return err
		}
		d := appendInitiation(nil, sender, first)
		jar.stamp(d)
		p := &pending{in: in}
		copy(p.mac1[:], first[len(first)-macLen:])
		sent[sender] = p
		noAnswer.Attempts++
		if _, err := conn.Write(d); err != nil {
			noAnswer.Last = err // e.g. ECONNREFUSED from an earlier ICMP: keep trying until the deadline
		}
		return nil
	}
	if err := send(); err != nil {
		return nil, err
	}
	next := time.Now().Add(retry)
	buf := make([]byte, MaxDatagram+1)
	cookieAnswered := false
	for {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		now := time.Now()
		if !now.Before(deadline) {
			return nil, noAnswer
		}
		if !now.Before(next) {
			if err := send(); err != nil {
				return nil, err
			}
			next = now.Add(retry)
			cookieAnswered = false
		}
		_ = conn.SetReadDeadline(minTime(next, deadline))
		n, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
			case errors.Is(err, syscall.ECONNREFUSED):
				noAnswer.Last = err
				// Nothing listens there now; wait for the next retry
				// rather than spin on the error.
				sleepUntil(ctx, minTime(next, deadline))
			default:
				return nil, fmt.Errorf("udp read: %w", err)
			}
			continue
		}
		d := buf[:n]
		typ, ok := header(d)
		if !ok {
			continue
		}
		switch typ {
		case TypeResponse:
			r, ok := parseResponse(d)
			if !ok {
				continue
			}
			p := sent[r.receiver]
			if p == nil {
				continue // not ours: the index is 32 random bits
			}
			keys, err := p.in.Finish(r.reply)
			if err != nil {
				var ve *secure.VersionError
				var re *secure.RemoteError
				if errors.As(err, &ve) || errors.As(err, &re) {
					return nil, err // the server said why, in words
				}
				continue // forged or garbled: wait for the real answer
			}
			_ = conn.SetReadDeadline(time.Time{})
			return clientSession(conn, keys, r.receiver, r.sender)
		case TypeCookieReply:
			if len(d) != CookieReplyLen {
				continue
			}
			p := sent[index(d[headerLen:])]
			if p == nil || !jar.consume(d, p.mac1[:]) {
				continue
			}
			noAnswer.Cookies++
			// One immediate retry per cookie round, now with mac2: the
			// server is alive and asks for proof of our address.
			if !cookieAnswered {
				cookieAnswered = true
				if err := send(); err != nil {
					return nil, err
				}
				next = time.Now().Add(retry)
			}
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func sleepUntil(ctx context.Context, t time.Time) {
	select {
	case <-time.After(time.Until(t)):
	case <-ctx.Done():
	}
}

// clientSession makes the client's session over its connected socket and
// starts the goroutine that reads it; closing the session closes the
// socket, which ends that goroutine.
func clientSession(conn *net.UDPConn, keys secure.Keys, local, remote uint32) (*Session, error) {
	ra := conn.RemoteAddr().(*net.UDPAddr).AddrPort()
	server := netip.AddrPortFrom(ra.Addr().Unmap(), ra.Port())
	counts := new(drops)
	w, err := newBatchWriter(conn, true, counts, func(b []byte, _ netip.AddrPort) error { _, err := conn.Write(b); return err })
	if err != nil {
		return nil, err
	}
	// The reader's buffers now, not when its goroutine first runs: an
	// error is the dial's, and the session allocates nothing after Dial.
	br, err := newGROReader(conn, MaxDatagram+1)
	if err != nil {
		w.close()
		return nil, err
	}
	s, err := sessionFromKeys(keys, sessionParams{local: local, remote: remote, endpoint: server, drops: counts,
		xmit: func(b []byte, to netip.AddrPort) error { w.send(b, to); return nil }, xmitGSO: w.sendGSO})
	if err != nil {
		w.close()
		return nil, err
	}
	s.sock = conn
	s.onClose = append(s.onClose, func() { w.close(); conn.Close() })
	go clientReceive(conn, br, s, server) // ends when Close closes the socket
	return s, nil
}

// clientReceive reads the client's socket for its session: data for its
// index is opened, everything else (a late response or cookie reply, a
// forgery) is dropped and counted.
func clientReceive(conn *net.UDPConn, br *batchReader, s *Session, server netip.AddrPort) {
	var rx receiver // holds the session's receive lock across a message's datagrams
	for {
		n, err := br.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// A deadline left by the handshake (a cancelled dial
				// sets one): this reader has none.
				_ = conn.SetReadDeadline(time.Time{})
				continue
			}
			// ICMP errors (the server restarting: connection refused)
			// come and go; the session layer's keepalive decides when the
			// session is dead, not one error. Pace the loop on them.
			select {
			case <-s.closed:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		now := time.Now()
		for i := range n {
			msg, seg, _ := br.message(i) // from the server: the socket is connected
			for len(msg) > 0 {
				var d []byte
				d, msg = nextDatagram(msg, seg)
				s.route(&rx, d, server, now)
			}
			rx.release()
		}
		s.flush()
	}
}

// route handles one datagram from the client's socket: data for its index
// is opened, everything else (a late response or cookie reply, a forgery)
// is dropped and counted.
func (s *Session) route(rx *receiver, d []byte, server netip.AddrPort, now time.Time) {
	typ, ok := header(d)
	switch {
	case !ok || len(d) > MaxDatagram || (typ == TypeData && len(d) < DataOverhead):
		s.drops.Inc(DropMalformed)
	case typ != TypeData:
		s.drops.Inc(DropUnsolicited)
	case index(d[headerLen:]) != s.local:
		s.drops.Inc(DropUnknownIndex)
	default:
		rx.receive(s, d, server, now)
	}
}
