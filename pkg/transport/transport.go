// Package transport gives the layers above a reliable, ordered byte stream
// to the peer. Everything above it (Noise, session, control) is the same for
// every transport, so a new one only has to dial and listen.
package transport

import (
	"context"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Names of the supported transports, as written in configs.
const (
	TCP = "tcp"
)

// DefaultPort is where gtund listens unless configured otherwise.
const DefaultPort = 9623

// Dial connects to addr over the named transport.
func Dial(ctx context.Context, name, addr string) (net.Conn, error) {
	switch name {
	case TCP, "":
		// A short dial timeout: after an outage the next attempt (and its SYN) comes
		// sooner, and the reconnect loop retries anyway.
		d := net.Dialer{Timeout: 3 * time.Second, KeepAlive: 15 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		tuneTCP(c)
		return c, nil
	}
	return nil, fmt.Errorf("unknown transport %q", name)
}

// Listen opens a listener for the named transport.
func Listen(name, addr string) (net.Listener, error) {
	switch name {
	case TCP:
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		return tcpListener{ln.(*net.TCPListener)}, nil
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
			if notSentLowat > 0 {
				_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
			}
		})
	}
}
