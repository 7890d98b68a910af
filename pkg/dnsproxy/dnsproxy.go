// Package dnsproxy is what gtun's split DNS forwarder and gtund's DNS
// proxy share: DNS served on one address over UDP and TCP, queries passed
// to upstream servers, and answers sized for the client.
package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Server answers DNS on one address, UDP and TCP.
type Server struct {
	Addr     netip.AddrPort
	udp, tcp *dns.Server
	done     chan error
}

// Listen serves h on addr until Close; port 0 is a free port, the same
// for UDP and TCP, in the returned Server's Addr. The sockets are bound with
// IP_FREEBIND: addr is a tunnel address, which may be missing for a moment
// (the TUN device is being repaired); they stay bound to it regardless.
// Serve errors after the start go to onErr.
func Listen(addr netip.AddrPort, h dns.Handler, onErr func(error)) (*Server, error) {
	level, opt, udpNet, tcpNet := unix.IPPROTO_IP, unix.IP_FREEBIND, "udp4", "tcp4"
	if addr.Addr().Is6() {
		level, opt, udpNet, tcpNet = unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, "udp6", "tcp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, 1) })
		return errors.Join(err, serr)
	}}
	var pc net.PacketConn
	var ln net.Listener
	var err error
	// Port 0: TCP on the port the kernel chose for UDP, which a TCP socket
	// may hold already; then another port, a few times.
	for try := 0; ; try++ {
		pc, ln, err = listenBoth(lc, udpNet, tcpNet, addr)
		if err == nil || addr.Port() != 0 || !errors.Is(err, unix.EADDRINUSE) || try == 8 {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	s := &Server{Addr: addr, done: make(chan error, 2),
		udp: &dns.Server{PacketConn: pc, Handler: h},
		tcp: &dns.Server{Listener: ln, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second},
	}
	started := make(chan struct{}, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() {
			err := srv.ActivateAndServe()
			if err != nil && onErr != nil {
				onErr(err)
			}
			s.done <- err
		}()
	}
	for range 2 {
		select {
		case <-started:
		case err := <-s.done:
			s.Close()
			return nil, fmt.Errorf("dns: serve %s: %w", addr, err)
		}
	}
	return s, nil
}

// listenBoth binds UDP on addr, then TCP on the same address and port.
func listenBoth(lc net.ListenConfig, udpNet, tcpNet string, addr netip.AddrPort) (net.PacketConn, net.Listener, error) {
	pc, err := lc.ListenPacket(context.Background(), udpNet, addr.String())
	if err != nil {
		return nil, nil, fmt.Errorf("dns: listen udp %s: %w", addr, err)
	}
	if addr.Port() == 0 {
		addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
		addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	}
	ln, err := lc.Listen(context.Background(), tcpNet, addr.String())
	if err != nil {
		pc.Close()
		return nil, nil, fmt.Errorf("dns: listen tcp %s: %w", addr, err)
	}
	return pc, ln, nil
}

// Close stops both servers; their sockets are closed when it returns.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = s.udp.ShutdownContext(ctx)
	_ = s.tcp.ShutdownContext(ctx)
}

// MaxInFlight bounds the queries a server passes upstream at once: each
// waits up to a few seconds for an answer, and a client that floods
// queries must not pile up goroutines and sockets without end. Beyond it
// a query is answered SERVFAIL at once (and counted by the caller).
const MaxInFlight = 256

// Slots bounds the queries in flight (MaxInFlight).
type Slots chan struct{}

// NewSlots makes the bound.
func NewSlots() Slots { return make(Slots, MaxInFlight) }

// Take takes a slot if one is free; the caller gives it back with Give.
func (s Slots) Take() bool {
	select {
	case s <- struct{}{}:
		return true
	default:
		return false
	}
}

// Give returns a slot taken.
func (s Slots) Give() { <-s }

// Network is "tcp" when w's client came over TCP, else "udp".
func Network(w dns.ResponseWriter) string {
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		return "tcp"
	}
	return "udp"
}

// Exchange asks each upstream (host:port) in turn over network, each for at
// most timeout; a truncated UDP answer is asked again over TCP, so the
// answer is whole. The first answer wins; errors of all are joined.
func Exchange(req *dns.Msg, network string, upstreams []string, timeout time.Duration) (*dns.Msg, error) {
	if len(upstreams) == 0 {
		return nil, errors.New("no upstream servers")
	}
	var errs []error
	for _, up := range upstreams {
		c := &dns.Client{Net: network, Timeout: timeout}
		resp, _, err := c.Exchange(req, up)
		if err == nil && resp.Truncated && network == "udp" {
			c.Net = "tcp"
			resp, _, err = c.Exchange(req, up)
		}
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
	}
	return nil, errors.Join(errs...)
}

// Reply sends resp to the client of req. Over UDP it is cut to what the
// client takes (512 bytes, or its EDNS0 buffer size) with TC set, so the
// client asks again over TCP, as from any DNS server.
func Reply(w dns.ResponseWriter, req, resp *dns.Msg) error {
	if Network(w) == "udp" {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = max(int(o.UDPSize()), dns.MinMsgSize)
		}
		resp.Truncate(size)
	}
	return w.WriteMsg(resp)
}
