package server

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/gtun/gtun/pkg/device"
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

// fromPeer writes a frame from a client to the TUN if checkFromPeer
// lets it through.
func (s *Server) fromPeer(ps *peerSession, frame []byte) {
	if reason, detail := s.checkFromPeer(ps, frame); reason != "" {
		s.drop(ps, reason, dropMessages[reason], detail...)
		return
	}
	if err := s.dev.WriteFrame(frame); err != nil {
		s.drop(ps, DropTunWrite, "tun write failed", "err", err)
	}
}

// dropMessages are the log lines of checkFromPeer's drop reasons.
var dropMessages = map[string]string{
	DropMalformed:   "malformed packet from peer",
	DropBadOffload:  "bad offload header from peer",
	DropSpoofed:     "packet with a source that is neither the peer's address nor in its subnets",
	DropACL:         "packet to a destination the peer is not allowed",
	DropGatewayHost: "packet to the gateway's own address that is not a ping (the peer's allowed does not name the gateway)",
}

// checkFromPeer decides whether a frame from a client may go into the
// TUN: "" if so, else the drop reason and what to log with it. Its offload
// header must describe its packet, the packet's source must be the
// client's own address or within its subnets (site-to-site), and its
// destination within what the peer is allowed to reach. gtund's own tunnel
// address answers pings (diagnostics) and nothing else unless the peer's
// allowed names it: packets to it go to the host's own sockets (sshd, the
// metrics port), which are not the cluster.
func (s *Server) checkFromPeer(ps *peerSession, frame []byte) (reason string, detail []any) {
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
	case src != ps.addr && !ps.peer.fromSubnet(src):
		return DropSpoofed, []any{"src", src}
	}
	if _, ok := ps.peer.allowed.Load().Lookup(dst); !ok {
		switch {
		case dst != s.cfg.Gateway:
			return DropACL, []any{"dst", dst}
		case !packet.EchoRequest(pkt):
			return DropGatewayHost, []any{"dst", dst}
		}
	}
	return "", nil
}

func (s *Server) drop(ps *peerSession, reason, msg string, args ...any) {
	s.drops.Inc(reason)
	name := ""
	if ps != nil {
		ps.peer.drops.Inc(reason)
		name = ps.name
		args = append(args, "peer", name)
	}
	s.rate.Log(slog.LevelWarn, "drop:"+reason+":"+name, msg, args...)
}

func (s *Server) readDevice(ctx context.Context) {
	device.Frames(ctx, s.dev, s.rate, func(b *packet.Buf, dst netip.Addr) {
		var ps *peerSession
		if i, ok := s.poolIndex(dst); ok {
			ps = s.byAddr[i].Load()
		} else {
			ps, _ = s.bySubnet.Load().Lookup(dst)
		}
		if ps == nil {
			packet.Put(b)
			s.drops.Inc(DropNoRoute) // common and harmless (e.g. a client just left): count, don't log
			return
		}
		if !ps.sess.Enqueue(b) {
			s.drop(ps, DropQueueFull, "send queue full")
		}
	}, func() { s.drops.Inc(DropMalformed) })
}
