package client

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/gtun/gtun/pkg/device"
	"github.com/gtun/gtun/pkg/packet"
)

// fromServer writes a frame from a server to the TUN if checkFromServer
// lets it through.
func (c *Client) fromServer(up *upstream, frame []byte) {
	if reason, detail := c.checkFromServer(up, frame); reason != "" {
		c.serverDrop(up, reason, fromServerDrops[reason], detail...)
		return
	}
	if err := c.dev.WriteFrame(frame); err != nil {
		c.serverDrop(up, "tun_write", "tun write failed", "err", err)
	}
}

// fromServerDrops are the log lines of checkFromServer's drop reasons.
var fromServerDrops = map[string]string{
	"malformed":         "malformed packet from server",
	"bad_offload":       "bad offload header from server",
	"wrong_destination": "packet from server not addressed to this client or its subnets",
	"spoofed_source":    "packet from server with a source outside its routes (and not its own tunnel address)",
}

// checkFromServer decides whether a frame from a server may go into the
// TUN: "" if so, else the drop reason and what to log with it. A server is
// trusted for what its routes cover and no more: the packet must be
// addressed to this client's tunnel address from that server (or, in
// gateway mode, to the subnets it routes here), and its source must be one
// this client routes to that server (the server's routes as this client
// accepted and owns them, so a reply goes back the way the packet came) or
// the server's own tunnel address (its pings' answers, its ICMP errors).
// Sources of a cluster's connections to this client's subnets
// (site-to-site) are inside its routes too; with a map they are the
// virtual ones. ICMP errors are judged by the packet they quote.
func (c *Client) checkFromServer(up *upstream, frame []byte) (reason string, detail []any) {
	if len(frame) <= packet.VnetHdrLen {
		return "malformed", []any{"server", up.name, "err", "short frame"}
	}
	pkt := frame[packet.VnetHdrLen:]
	if h := packet.DecodeVnetHdr(frame); !h.Plain() {
		if err := h.Validate(pkt); err != nil {
			return "bad_offload", []any{"server", up.name, "err", err}
		}
	}
	src, dst, err := packet.Addrs(pkt)
	if err != nil {
		return "malformed", []any{"server", up.name, "err", err}
	}
	up.mu.Lock()
	ours, gateway := dst == up.address.Addr(), src == up.gateway
	up.mu.Unlock()
	if !ours {
		// Gateway mode: the server routes this client's subnets here.
		if _, ok := up.subnets.Load().Lookup(dst); !ok {
			return "wrong_destination", []any{"server", up.name, "dst", dst}
		}
	}
	if !gateway && !c.routesTo(src, up) {
		// An ICMP error from a router on the cluster's side (fragmentation
		// needed, unreachable) has that router's source, often outside
		// the routes; it is about a packet this client sent to the
		// server, and trusted as far as that packet's destination is.
		if about, ok := packet.ErrorAbout(pkt); !ok || !c.routesTo(about, up) {
			return "spoofed_source", []any{"server", up.name, "src", src}
		}
	}
	return "", nil
}

// routesTo reports whether this client sends packets for a to up.
func (c *Client) routesTo(a netip.Addr, up *upstream) bool {
	owner, ok := c.byDst.Load().Lookup(a)
	return ok && owner == up
}

// serverDrop counts a drop of what a server sent, in total and for the
// server, and logs it at a bounded rate per server and reason.
func (c *Client) serverDrop(up *upstream, reason, msg string, args ...any) {
	c.drops.Inc(reason)
	up.drops.Inc(reason)
	c.rate.Log(slog.LevelWarn, "drop:"+reason+":"+up.name, msg, args...)
}

func (c *Client) drop(reason, msg string, args ...any) {
	c.drops.Inc(reason)
	c.rate.Log(slog.LevelWarn, "drop:"+reason, msg, args...)
}

func (c *Client) readDevice(ctx context.Context) {
	device.Frames(ctx, c.dev, c.rate, func(b *packet.Buf, dst netip.Addr) {
		up, ok := c.byDst.Load().Lookup(dst)
		if !ok {
			packet.Put(b)
			c.drops.Inc("no_route")
			return
		}
		sess := up.sess.Load()
		if sess == nil {
			packet.Put(b)
			c.drops.Inc("no_session") // reconnecting: the route stays, the packet cannot
			return
		}
		if !sess.Send(b) {
			c.drops.Inc("queue_full")
		}
	}, func() { c.drops.Inc("malformed") })
}
