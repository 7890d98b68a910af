package dgram

import (
	"errors"
	"net"
	"sync"
	"time"
)

// PacketConn is a session seen as a net.PacketConn, one payload per
// datagram, for kcp-go (kcp.NewConn3): WriteTo seals into a data datagram
// to the peer, ReadFrom returns opened payloads in arrival order. Nothing
// that did not open under the session's keys ever comes out of ReadFrom,
// so kcp-go only ever sees the peer's segments.
type PacketConn struct {
	s    *Session
	addr net.Addr // an Addr, boxed once: ReadFrom returns it per datagram
}

type inbound struct {
	b *[MaxStreamPayload]byte
	n int
}

var payloadPool = sync.Pool{New: func() any { return new([MaxStreamPayload]byte) }}

// PacketConn returns the session as a PacketConn. The session has one
// queue of payloads: use one PacketConn per session.
func (s *Session) PacketConn() *PacketConn {
	return &PacketConn{s: s, addr: Addr{s.Endpoint().String()}}
}

// ReadFrom returns the next opened payload. It fails with net.ErrClosed
// once the session is closed.
func (p *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case in := <-p.s.in:
		n := copy(b, in.b[:in.n])
		payloadPool.Put(in.b)
		return n, p.addr, nil
	case <-p.s.closed:
		return 0, nil, net.ErrClosed
	}
}

// WriteTo seals b into a data datagram to the session's peer; addr is
// ignored (a session has one peer, wherever it is now).
func (p *PacketConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	if err := p.s.Send(b); err != nil {
		if errors.Is(err, ErrClosed) {
			return 0, net.ErrClosed
		}
		return 0, err
	}
	return len(b), nil
}

// Close closes the session.
func (p *PacketConn) Close() error { return p.s.Close() }

// LocalAddr is the session's peer too: a session has no address of its own
// that kcp-go could use.
func (p *PacketConn) LocalAddr() net.Addr { return p.addr }

// RemoteAddr is the address ReadFrom reports: constant for the session.
func (p *PacketConn) RemoteAddr() net.Addr { return p.addr }

// Dropped is how many payloads were dropped because the queue stayed full.
func (p *PacketConn) Dropped() uint64 { return p.s.full.Load() }

var errNoDeadlines = errors.New("dgram.PacketConn has no deadlines: close the session to unblock ReadFrom")

// Deadlines are not supported: kcp-go keeps its own and never sets them on
// the conn it runs over.
func (p *PacketConn) SetDeadline(time.Time) error      { return errNoDeadlines }
func (p *PacketConn) SetReadDeadline(time.Time) error  { return errNoDeadlines }
func (p *PacketConn) SetWriteDeadline(time.Time) error { return errNoDeadlines }

var _ net.PacketConn = (*PacketConn)(nil)
