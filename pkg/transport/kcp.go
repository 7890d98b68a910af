package transport

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/xtaci/kcp-go/v5"

	"github.com/gtun/gtun/pkg/dgram"
	"github.com/gtun/gtun/pkg/secure"
)

// KCP rides inside authenticated datagrams (pkg/dgram): the handshake is
// the datagram layer's, and kcp-go runs over the session's PacketConn, so
// every kcp segment travels sealed under the session's datagram keys and
// nothing that does not open under them reaches kcp-go. A forged datagram,
// whatever its conversation id or source (the client's own address and
// port included), is dropped before kcp-go sees it: it can neither make a
// kcp session nor end one. The records (pkg/secure Conn) run over the kcp
// stream with keys of their own from the same handshake, so a session has
// one handshake and two AEADs on its path (the datagram's and the
// record's): the cost of keeping kcp-go's ARQ and FEC as they are, on a
// path that moves ~0.5 Gbit/s, where the AEAD is not what limits it.

// Accepted is a kcp connection whose handshake is done.
type Accepted struct {
	Conn *secure.Conn     // the records, over the kcp stream
	Peer secure.PublicKey // the client's authenticated key
	// Session is the datagram session carrying the kcp segments.
	Session *dgram.Session
	ks      *kcp.UDPSession
}

// ControlOnly retunes the kcp stream for a session whose records are the
// control messages alone (the udp transport's, which the hello names):
// see controlInterval.
func (a *Accepted) ControlOnly() { tuneControl(a.ks) }

// KCPListener accepts kcp connections inside datagram sessions.
type KCPListener struct {
	dl *dgram.Listener
	o  Options
}

// ListenKCP opens the datagram listener on addr (UDP) and serves kcp
// inside its sessions.
func ListenKCP(addr string, o Options, cfg dgram.ListenConfig) (*KCPListener, error) {
	dl, err := dgram.Listen(addr, cfg)
	if err != nil {
		return nil, err
	}
	return &KCPListener{dl: dl, o: o}, nil
}

// Accept returns the next authenticated kcp connection.
func (l *KCPListener) Accept() (*Accepted, error) {
	for {
		s, err := l.dl.Accept()
		if err != nil {
			return nil, err
		}
		sc, ks, err := kcpOver(s, l.o)
		if err != nil {
			s.Close()
			continue // only a cipher that cannot be made: this session is lost, the next may not be
		}
		return &Accepted{Conn: sc, Peer: s.Peer(), Session: s, ks: ks}, nil
	}
}

// Close closes the listener and every session it made.
func (l *KCPListener) Close() error { return l.dl.Close() }

// Addr is the UDP address listened on.
func (l *KCPListener) Addr() net.Addr { return l.dl.Addr() }

// Stats are the datagram listener's counters.
func (l *KCPListener) Stats() dgram.ListenerStats { return l.dl.Stats() }

// DialKCP runs the handshake with the server at addr over datagrams
// (retrying, answering a cookie) within timeout, then kcp inside the
// session; it returns the records and the datagram session under them.
func DialKCP(ctx context.Context, addr string, o Options, hs secure.ClientConfig, timeout time.Duration) (*secure.Conn, *dgram.Session, error) {
	sc, s, _, err := dialKCP(ctx, addr, o, hs, timeout)
	return sc, s, err
}

func dialKCP(ctx context.Context, addr string, o Options, hs secure.ClientConfig, timeout time.Duration) (*secure.Conn, *dgram.Session, *kcp.UDPSession, error) {
	s, err := dgram.Dial(ctx, addr, dgram.DialConfig{Handshake: hs, Timeout: timeout})
	if err != nil {
		return nil, nil, nil, err
	}
	sc, ks, err := kcpOver(s, o)
	if err != nil {
		s.Close()
		return nil, nil, nil, err
	}
	return sc, s, ks, nil
}

// kcpOver starts kcp-go over the session and the records over kcp. The
// conversation id is both sides' indexes combined: the same on both ends,
// different for every session.
func kcpOver(s *dgram.Session, o Options) (*secure.Conn, *kcp.UDPSession, error) {
	pc := s.PacketConn()
	local, remote := s.Indexes()
	ks, err := kcp.NewConn3(local^remote, pc.RemoteAddr(), nil, o.FECData, o.FECParity, pc)
	if err != nil {
		return nil, nil, err
	}
	tuneKCP(ks)
	sc, err := secure.NewConn(&kcpStream{UDPSession: ks, s: s}, s.StreamKeys())
	if err != nil {
		ks.Close()
		s.Close()
		return nil, nil, err
	}
	return sc, ks, nil
}

// kcpStream is kcp-go's session over a datagram session; closing it
// closes both (kcp-go does not close a PacketConn it was given, and the
// session's reader goroutine in kcp-go ends when the session does).
type kcpStream struct {
	*kcp.UDPSession
	s    *dgram.Session
	once sync.Once
}

// closeLinger is how long a closed kcp stream still sends: what was
// written last (a refusal in words, "server shutting down") is then
// retransmitted if lost, as TCP does after close, instead of vanishing
// with the session. Readers and writers return at once.
const closeLinger = time.Second

func (c *kcpStream) Close() error {
	c.once.Do(func() {
		now := time.Now()
		_ = c.UDPSession.SetDeadline(now)
		time.AfterFunc(closeLinger, func() {
			c.UDPSession.Close()
			c.s.Close()
		})
	})
	return nil
}

// SetRekeyInterval sets how long the datagram session's send keys live:
// the records' interval (secure.Conn passes it on).
func (c *kcpStream) SetRekeyInterval(d time.Duration) { c.s.SetRekeyInterval(d) }

// RemoteAddr is the peer's address as last authenticated (it follows a
// client whose NAT moved it).
func (c *kcpStream) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(c.s.Endpoint()) }
