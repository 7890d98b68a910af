package server

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/gtun/gtun/pkg/packet"
)

// Drop reasons, counted per peer and in total.
const (
	DropSpoofed = "spoofed_source"
	DropACL     = "acl"
	// DropGatewayHost: to gtund's own tunnel address, neither an ICMP echo
	// request nor named by the peer's allowed (the host's services, sshd
	// or the metrics port, are not the peer's to reach).
	DropGatewayHost = "gateway_host"
	DropMalformed   = "malformed"
	DropBadOffload  = "bad_offload"
	DropNoRoute     = "no_route"
	DropQueueFull   = "queue_full"
	DropTunWrite    = "tun_write"
)

// fromClient writes a frame from a client to the TUN if checkFromClient
// lets it through.
func (s *Server) fromClient(c *clientConn, frame []byte) {
	if reason, detail := s.checkFromClient(c, frame); reason != "" {
		s.drop(c, reason, dropMessages[reason], detail...)
		return
	}
	if err := s.tun.WriteFrame(frame); err != nil {
		s.drop(c, DropTunWrite, "tun write failed", "err", err)
	}
}

// dropMessages are the log lines of checkFromClient's drop reasons.
var dropMessages = map[string]string{
	DropMalformed:   "malformed packet from peer",
	DropBadOffload:  "bad offload header from peer",
	DropSpoofed:     "packet with a source that is neither the peer's address nor in its subnets",
	DropACL:         "packet to a destination the peer is not allowed",
	DropGatewayHost: "packet to the gateway's own address that is not a ping (the peer's allowed does not name the gateway)",
}

// checkFromClient decides whether a frame from a client may go into the
// TUN: "" if so, else the drop reason and what to log with it. Its offload
// header must describe its packet, the packet's source must be the
// client's own address or within its subnets (site-to-site), and its
// destination within what the peer is allowed to reach. gtund's own tunnel
// address answers pings (diagnostics) and nothing else unless the peer's
// allowed names it: packets to it go to the host's own sockets (sshd, the
// metrics port), which are not the cluster.
func (s *Server) checkFromClient(c *clientConn, frame []byte) (reason string, detail []any) {
	if len(frame) <= packet.VnetHdrLen {
		return DropMalformed, []any{"err", "short frame"}
	}
	pkt := frame[packet.VnetHdrLen:]
	if h := packet.DecodeVnetHdr(frame); !h.Plain() {
		if err := h.Validate(pkt); err != nil {
			return DropBadOffload, []any{"err", err}
		}
	}
	src, dst, err := packet.Addrs(pkt)
	switch {
	case err != nil:
		return DropMalformed, []any{"err", err}
	case src != c.addr && !c.peer.fromSubnet(src):
		return DropSpoofed, []any{"src", src}
	}
	if _, ok := c.peer.allowed.Load().Lookup(dst); !ok {
		switch {
		case dst != s.cfg.Gateway:
			return DropACL, []any{"dst", dst}
		case !packet.EchoRequest(pkt):
			return DropGatewayHost, []any{"dst", dst}
		}
	}
	return "", nil
}

func (s *Server) drop(c *clientConn, reason, msg string, args ...any) {
	s.drops.Inc(reason)
	name := ""
	if c != nil {
		c.peer.drops.Inc(reason)
		name = c.name
		args = append(args, "peer", name)
	}
	s.rate.Log(slog.LevelWarn, "drop:"+reason+":"+name, msg, args...)
}

func (s *Server) tunReadLoop(ctx context.Context) {
	s.tun.Frames(ctx, func(b *packet.Buf, dst netip.Addr) {
		var c *clientConn
		if i, ok := s.poolIndex(dst); ok {
			c = s.byAddr[i].Load()
		} else {
			c, _ = s.bySubnet.Load().Lookup(dst)
		}
		if c == nil {
			packet.Put(b)
			s.drops.Inc(DropNoRoute) // common and harmless (e.g. a client just left): count, don't log
			return
		}
		if !c.sess.Enqueue(b) {
			s.drop(c, DropQueueFull, "send queue full")
		}
	}, func() { s.drops.Inc(DropMalformed) })
}
