// Package transport gives the layers above a reliable, ordered byte stream
// to the peer: TCP, or KCP over UDP for lossy, distant links where TCP over
// TCP collapses. Everything above it (Noise, session, control) is the same
// for every transport, so a transport only has to dial and listen.
package transport

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/xtaci/kcp-go/v5"
	"golang.org/x/sys/unix"
)

// Names of the transports, as written in configs. Auto is a client policy
// (kcp first, tcp when UDP is blocked), not a transport of its own.
const (
	TCP  = "tcp"
	KCP  = "kcp"
	Auto = "auto"
)

// DefaultPort is where gtund listens (TCP and UDP) unless configured otherwise.
const DefaultPort = 9623

// dialTimeout is short: after an outage the next attempt (and its SYN)
// comes sooner, and the reconnect loop retries anyway.
const dialTimeout = 3 * time.Second

// Options tune a transport. Both ends must agree on FEC.
type Options struct {
	// FECData and FECParity turn on KCP's Reed-Solomon forward error
	// correction: every FECData packets go with FECParity recovery packets,
	// so a lost packet is rebuilt without waiting for a retransmission.
	// 0 and 0: off.
	FECData, FECParity int
}

// KCP tuning. The record layer above already seals every byte, so KCP's own
// crypto is off (nil block cipher). Segments fit a 1500-byte path with the
// IP, UDP and FEC headers, so nothing is ever IP-fragmented.
const (
	kcpMTU       = 1350
	kcpWindow    = 4096 // segments in flight each way: ~5.4 MiB, a 50 ms path at 860 Mbit/s
	kcpInterval  = 10   // ms between KCP's internal updates
	kcpResend    = 2    // fast retransmit after 2 duplicate ACKs
	kcpNoCongest = 1    // no congestion window: loss is not taken as congestion
	kcpSockBuf   = 4 << 20
)

// Dial connects to addr over the named transport.
func Dial(ctx context.Context, name, addr string, o Options) (net.Conn, error) {
	switch name {
	case TCP, "":
		d := net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		tuneTCP(c)
		return c, nil
	case KCP:
		// KCP has no connection setup: the handshake above is the first
		// packet exchange, and its deadline bounds a silent (blocked) path.
		s, err := kcp.DialWithOptions(addr, nil, o.FECData, o.FECParity)
		if err != nil {
			return nil, err
		}
		tuneKCP(s)
		_ = s.SetReadBuffer(kcpSockBuf)
		_ = s.SetWriteBuffer(kcpSockBuf)
		return s, nil
	}
	return nil, fmt.Errorf("unknown transport %q", name)
}

// Listen opens a listener for the named transport.
func Listen(name, addr string, o Options) (net.Listener, error) {
	switch name {
	case TCP:
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		return tcpListener{ln.(*net.TCPListener)}, nil
	case KCP:
		ln, err := kcp.ListenWithOptions(addr, nil, o.FECData, o.FECParity)
		if err != nil {
			return nil, err
		}
		_ = ln.SetReadBuffer(kcpSockBuf)
		_ = ln.SetWriteBuffer(kcpSockBuf)
		return kcpListener{ln}, nil
	}
	return nil, fmt.Errorf("unknown transport %q", name)
}

type tcpListener struct{ *net.TCPListener }

func (l tcpListener) Accept() (net.Conn, error) {
	c, err := l.TCPListener.AcceptTCP()
	if err != nil {
		return nil, err
	}
	tuneTCP(c)
	return c, nil
}

type kcpListener struct{ *kcp.Listener }

func (l kcpListener) Accept() (net.Conn, error) {
	s, err := l.Listener.AcceptKCP()
	if err != nil {
		return nil, err
	}
	tuneKCP(s)
	return s, nil
}

func tuneKCP(s *kcp.UDPSession) {
	s.SetStreamMode(true) // a byte stream, like TCP: records may span segments
	s.SetWriteDelay(false)
	s.SetNoDelay(1, kcpInterval, kcpResend, kcpNoCongest)
	s.SetWindowSize(kcpWindow, kcpWindow)
	s.SetMtu(kcpMTU)
	s.SetACKNoDelay(true)
}

// notSentLowat caps the unsent bytes the kernel queues on the socket.
// Without it a slow uplink buffers megabytes, and a keepalive queued behind
// them arrives too late: the session would be declared dead while healthy.
const notSentLowat = 256 << 10

// tuneTCP disables Nagle (the session batches writes itself, and small
// control messages must not wait behind a delayed ACK) and bounds the send
// queue in the kernel.
func tuneTCP(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	_ = tc.SetNoDelay(true)
	_ = tc.SetKeepAlive(true)
	_ = tc.SetKeepAlivePeriod(15 * time.Second)
	if rc, err := tc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
		})
	}
}
