package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/guard"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/transport"
)

func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, tname string) {
	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.rate.Log(slog.LevelWarn, "accept", "accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		// Admission comes before any goroutine, buffer or crypto is
		// spent on the connection (for kcp, the session kcp-go made for
		// the new UDP source is dropped again by Close).
		ticket, refused := s.guard.AdmitConn(raw)
		if ticket == nil {
			raw.Close()
			s.hsFailures.Inc(refused)
			s.rate.Log(slog.LevelWarn, "admit:"+refused, "handshake refused before it started; connection closed",
				"reason", refused, "remote", raw.RemoteAddr().String(), "transport", tname, "refused_total", s.hsFailures.Get(refused))
			continue
		}
		s.goRun(func() { s.serveConn(ctx, raw, tname, ticket) })
	}
}

// serveConn runs one client connection. Until the client's hello has
// arrived the connection is unauthenticated: it holds its admission ticket
// and has handshake_timeout, from accept, to get there.
func (s *Server) serveConn(ctx context.Context, raw net.Conn, tname string, ticket *guard.Ticket) {
	defer ticket.Release()
	remote := raw.RemoteAddr().String()
	deadline := time.Now().Add(time.Duration(s.hsTimeout.Load()))
	// Handshake and setup have deadlines of their own; shutdown need not wait.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	sc, key, err := s.responder.Accept(raw, deadline)
	if err != nil {
		raw.Close()
		reason := handshakeReason(err)
		if ticket.Evicted() && (reason == "io" || reason == "timeout") {
			reason = guard.Evicted // closed to make room for a source holding fewer
		}
		s.hsFailures.Inc(reason)
		// Never a key: an unknown client's public key prefix is all that
		// is logged (to find it in a peer list), nothing secret.
		args := []any{"remote", remote, "reason", reason, "err", err, "refused_total", s.hsFailures.Get(reason)}
		if reason == "unknown_peer" {
			args = append(args, "key_prefix", key.Short())
		}
		s.rate.Log(slog.LevelWarn, "hs:"+reason, "handshake refused", args...)
		return
	}
	ticket.Authenticated() // a known key proved itself from this source
	s.serveSession(ctx, sc, key, remote, tname, deadline, ticket.Release, nil)
}

// kcpAcceptLoop serves the kcp connections the datagram listener
// authenticated: their handshake is done, only the hello is to come.
func (s *Server) kcpAcceptLoop(ctx context.Context, l *transport.KCPListener) {
	for {
		a, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("datagram listener stopped", "err", err)
			}
			return
		}
		s.goRun(func() {
			stop := context.AfterFunc(ctx, func() { a.Conn.Close() })
			defer stop()
			deadline := time.Now().Add(time.Duration(s.hsTimeout.Load()))
			s.serveSession(ctx, a.Conn, a.Peer, a.Session.Endpoint().String(), transport.KCP, deadline, func() {}, a)
		})
	}
}

// datagramRefused counts and logs a first message over UDP that the
// responder refused, as serveConn does for TCP.
func (s *Server) datagramRefused(err error, from netip.AddrPort) {
	reason := handshakeReason(err)
	s.hsFailures.Inc(reason)
	s.rate.Log(slog.LevelWarn, "hs:"+reason, "handshake refused", "remote", from.String(), "transport", transport.KCP,
		"reason", reason, "err", err, "refused_total", s.hsFailures.Get(reason))
}

// serveSession runs an authenticated connection, whatever its transport,
// from the client's hello on: the hello must arrive before deadline; then
// admitted() is called (the connection is no longer a handshake in
// progress), the client gets its config and the session runs until it
// ends. dg is the datagram session with its kcp stream (nil over TCP): a
// hello for the udp transport moves the data frames to its datagrams.
func (s *Server) serveSession(ctx context.Context, sc *secure.Conn, key secure.PublicKey, remote, tname string, deadline time.Time, admitted func(), dg *transport.Accepted) {
	_ = sc.SetReadDeadline(deadline) // for the hello; cleared once it is in
	sess, hello, err := session.Accept(sc, 0, s.log)
	if err != nil {
		s.hsFailures.Inc("session_setup")
		s.rate.Log(slog.LevelWarn, "setup", "session setup failed", "remote", remote, "err", err, "refused_total", s.hsFailures.Get("session_setup"))
		return
	}
	_ = sc.SetReadDeadline(time.Time{})
	admitted()
	refuse := func(reason string) {
		_ = sess.SendControl(&session.Msg{Type: session.TypeError, Error: reason})
		sess.Close()
	}
	if dg != nil {
		// One datagram listener serves both: the hello names the
		// transport, which must be one this server offers.
		want := hello.Transport
		if want == "" {
			want = transport.KCP
		}
		if (want != transport.KCP && want != transport.UDP) || !slices.Contains(s.cfg.Transports, want) {
			s.hsFailures.Inc("transport")
			s.log.Warn("client asks for a transport this server does not offer", "remote", remote, "transport", want, "offered", s.cfg.Transports)
			refuse(fmt.Sprintf("transport %q is not in the server's transports %v", want, s.cfg.Transports))
			return
		}
		tname = want
	}
	if dg != nil && (hello.FECData != s.cfg.FECData || hello.FECParity != s.cfg.FECParity) {
		s.hsFailures.Inc("fec_mismatch")
		s.log.Warn("client's kcp FEC differs from the server's", "remote", remote,
			"client", fmt.Sprintf("%d/%d", hello.FECData, hello.FECParity), "server", fmt.Sprintf("%d/%d", s.cfg.FECData, s.cfg.FECParity))
		refuse(fmt.Sprintf("fec_data/fec_parity mismatch: client %d/%d, server %d/%d", hello.FECData, hello.FECParity, s.cfg.FECData, s.cfg.FECParity))
		return
	}
	if hello.Version != secure.ProtocolVersion {
		s.hsFailures.Inc("version")
		s.log.Warn("client hello has another protocol version", "remote", remote, "client", hello.Version, "server", secure.ProtocolVersion)
		refuse(fmt.Sprintf("protocol version mismatch: server speaks %d, client %d", secure.ProtocolVersion, hello.Version))
		return
	}
	s.mu.Lock()
	p, ok := s.peers[key]
	var name string
	if ok {
		name = p.cfg.Name
	}
	keepalive, deadAfter, rekey := s.keepalive, s.deadAfter, s.rekey
	s.mu.Unlock()
	if !ok { // removed while handshaking
		refuse("peer not known")
		return
	}
	addr, err := s.pool.Acquire(key, name)
	if err != nil {
		s.log.Error("cannot assign an address", "peer", name, "err", err)
		refuse(err.Error())
		return
	}
	if tname == transport.UDP {
		dg.ControlOnly()
		sess.UseDatagrams(transport.NewDatagrams(dg.Session))
	}
	sess.SetKeepalive(keepalive, deadAfter)
	sess.SetRekeyInterval(rekey) // the client gets it with its config
	if err := sess.SendControl(s.configFor(p, addr)); err != nil {
		s.log.Warn("send config failed", "peer", name, "err", err)
		sess.Close()
		return
	}
	ps := &peerSession{peer: p, name: name, addr: addr, addr6: s.address6(addr), sess: sess, endpoint: remote, transport: tname, since: time.Now(), push: newPusher()}
	if !s.register(key, ps) {
		refuse("peer removed")
		return
	}
	args := []any{"peer", name, "address", addr}
	if ps.addr6.IsValid() {
		args = append(args, "address6", ps.addr6)
	}
	s.log.Info("peer connected", append(args, "endpoint", remote, "transport", tname)...)
	pushDone, pushed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(pushed)
		ps.push.run(sess, pushDone, s.log, name)
	}()
	err = sess.Run(ctx, session.Handlers{Packet: func(pkt []byte) { s.fromPeer(ps, pkt) }})
	close(pushDone) // the session is closed: a push still writing has returned or soon does
	<-pushed
	s.unregister(key, ps)
	s.log.Info("peer disconnected", "peer", name, "address", addr, "err", err)
}

// handshakeTimeout is the config's, or the default for configs built in
// code (tests) that leave it zero.
func handshakeTimeout(c *config.Server) time.Duration {
	if c.HandshakeTimeout > 0 {
		return c.HandshakeTimeout
	}
	return secure.DefaultHandshakeTimeout
}

func handshakeReason(err error) string {
	var ve *secure.VersionError
	switch {
	case errors.Is(err, secure.ErrUnknownPeer):
		return "unknown_peer"
	case errors.Is(err, secure.ErrReplay):
		return "replay"
	case errors.As(err, &ve):
		return "version"
	case errors.Is(err, secure.ErrBadMAC1):
		return "bad_mac1"
	case errors.Is(err, secure.ErrDuplicate):
		return "duplicate"
	case errors.Is(err, secure.ErrMalformed):
		return "malformed"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "timeout"
	}
	return "io"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
