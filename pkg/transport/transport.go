// Package transport connects gtun and gtund: TCP (a byte stream), udp (one
// sealed datagram per IP packet, beside a kcp stream for the control
// messages), or KCP over UDP (a reliable stream for lossy, distant links).
// Over TCP the handshake runs on the stream (pkg/secure); udp and KCP run
// inside authenticated datagram sessions (pkg/dgram), whose handshake
// comes first, so DialKCP and ListenKCP return connections already sealed.
// Everything above (session, control) is the same for every transport.
package transport

import (
	"context"
	"net"
	"time"

	"github.com/xtaci/kcp-go/v5"
	"golang.org/x/sys/unix"
)

// Names of the transports, as written in configs (UDP is in udp.go). Auto
// is a client policy (udp first, tcp when UDP is blocked), not a transport
// of its own.
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

// KCP tuning. The datagrams KCP rides in are sealed (pkg/dgram), so KCP's
// own crypto is off (nil block cipher). Segments fit a 1500-byte path with
// the IP, UDP, datagram and FEC headers and the tag (1350 + 8 + 32 + 28
// bytes), so nothing is ever IP-fragmented.
const (
	kcpMTU       = 1350
	kcpWindow    = 4096 // segments in flight each way: ~5.4 MiB, a 50 ms path at 860 Mbit/s
	kcpInterval  = 10   // ms between KCP's internal updates
	kcpResend    = 2    // fast retransmit after 2 duplicate ACKs
	kcpNoCongest = 1    // no congestion window: loss is not taken as congestion
)

// DialTCP connects to addr over TCP; the handshake runs on the stream.
func DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tuneTCP(c)
	return c, nil
}

// ListenTCP opens a TCP listener; the handshake runs on each connection.
func ListenTCP(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return tcpListener{ln.(*net.TCPListener)}, nil
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
