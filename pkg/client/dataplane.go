package client

/* gtun's data plane: packets between the TUN device and the servers' sessions.

From the TUN to a server (one goroutine: readDevice):

 1. device.Frames reads a frame into a pooled packet.Buf and finds its
    destination (malformed when it has none); readDevice owns the buffer.
 2. byDst, the longest-prefix table of the routes every server owns (and
    of each server's own tunnel address), picks the upstream; no_route
    when none has the destination. The table is immutable, swapped whole
    when a server pushes a config (routePlan decides who owns a prefix two
    servers push): a lookup takes no lock.
 3. The upstream's session, an atomic pointer: no_session while it
    reconnects (its routes stay, so flows resume with the next session).
 4. Session.Send: with nothing queued ahead, it seals the frame in place
    and writes it to the socket itself without waiting (no hand-off, no
    wake-up: the idle path's latency). What the socket does not take, and
    every frame behind it, goes to the session's writer goroutine through
    a bounded queue (session.DefaultQueueLen frames; full: queue_full): the
    reader never waits on one server while the others wait behind it. The
    buffer is the session's from then on; it returns to the pool once
    written.

From a server to the TUN (one goroutine per session: the session's reader):

 1. The session reads a record, opens it in place in a pooled buffer and
    calls fromServer with the frame, which must not keep it.
 2. checkFromServer: a server is trusted for what its routes cover. The
    offload header must describe its packet (bad_offload), the packet must
    parse (malformed), be addressed to this client's address from that
    server or, in gateway mode, to the subnets it routes here
    (wrong_destination), and come from a source this client routes to that
    server or from the server's own address (spoofed_source; an ICMP error
    is judged by the packet it quotes). What it checks against is read
    from atomic pointers, without a lock.
 3. The device's WriteFrame copies the frame into the kernel (tun_write
    when it fails). No queue, no hand-off.

Drops are counted for gtun and, for what a server sent, for that server
too, in fixed arrays of atomic counters (stats.Counts), and logged at most
once per interval per server and reason (lograte.Gate) with the count the
interval held back: neither takes a lock or allocates. What readDevice
drops is counted, not logged (no_session is every packet of a reconnect),
but for send_error (the transport refused a frame: something is wrong),
logged at a bounded rate (lograte.Limiter).
*/

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/gtun/gtun/pkg/device"
	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/stats"
)

// DropReason is why gtun dropped a packet.
type DropReason uint8

// Drop reasons. What a server sent counts for gtun and for that server;
// what readDevice drops for gtun alone.
const (
	DropNoRoute          DropReason = iota // from the TUN to a destination no server's routes cover
	DropNoSession                          // from the TUN to a server that is reconnecting
	DropQueueFull                          // the server's send queue was full
	DropMalformed                          // not an IP packet, or cut short
	DropBadOffload                         // a virtio-net header that does not describe its packet
	DropWrongDestination                   // from a server, to neither this client's address from it nor the subnets it routes here
	DropSpoofed                            // from a server, with a source outside its routes (and not its own address)
	DropTunWrite                           // the kernel refused the frame
	DropSendError                          // the transport refused the frame (udp: a packet larger than a datagram carries, a closed session)
	numDropReasons
)

var dropNames = [numDropReasons]string{"no_route", "no_session", "queue_full", "malformed", "bad_offload", "wrong_destination", "spoofed_source", "tun_write", "send_error"}

// String is the reason's name in status and metrics.
func (r DropReason) String() string { return dropNames[r] }

// dropLines are the log lines of drops of what a server sent.
var dropLines = [numDropReasons]string{
	DropMalformed:        "malformed packet from server",
	DropBadOffload:       "bad offload header from server",
	DropWrongDestination: "packet from server not addressed to this client or its subnets",
	DropSpoofed:          "packet from server with a source outside its routes (and not its own tunnel address)",
	DropTunWrite:         "tun write failed",
}

// dropLogInterval is how often drops of one server and reason are logged
// at most.
const dropLogInterval = 10 * time.Second

// drops count packets dropped, by reason.
type drops = stats.Counts[DropReason]

// dropLog holds back a server's drop log lines, by reason.
type dropLog [numDropReasons]lograte.Gate

// tunnelAddrs are what checkFromServer checks a server's packets against,
// from the config the server pushed: replaced whole, read without a lock.
type tunnelAddrs struct {
	address netip.Prefix // this client's tunnel address from the server, with the pool's length
	gateway netip.Addr   // the server's own tunnel address
	// address6 and gateway6 are the IPv6 ones (the server's pool6); zero
	// when the server has none.
	address6 netip.Prefix
	gateway6 netip.Addr
	subnets  *packet.Table[struct{}] // gateway mode: this client's networks the server routes here
}

// readDevice sends every frame read from the TUN to the session of the
// server whose routes cover its destination, until ctx ends. The last
// session it sent to may hold the end of a frame back for the next
// (session.SendMore): it sends it before the reader turns to another
// session or waits for the TUN.
func (c *Client) readDevice(ctx context.Context) {
	var held session.Held
	device.Frames(ctx, c.dev, c.rate, func(b *packet.Buf, dst netip.Addr) {
		up, ok := c.byDst.Load().Lookup(dst)
		if !ok {
			packet.Put(b)
			c.drops.Inc(DropNoRoute)
			return
		}
		sess := up.sess.Load()
		if sess == nil {
			packet.Put(b)
			c.drops.Inc(DropNoSession) // reconnecting: the route stays, the packet cannot
			return
		}
		held.To(sess)
		if err := sess.SendMore(b); err != nil {
			r := sendDrops.For(err)
			c.drops.Inc(r)
			if r == DropSendError {
				c.rate.Log(slog.LevelWarn, "send-error", "send to server failed", "err", err)
			}
		}
	}, func() { c.drops.Inc(DropMalformed) }, held.Flush)
	held.Flush() // ctx ended: nothing stays held
}

// sendDrops are the drop reasons of a frame a session did not send.
var sendDrops = session.SendDrops[DropReason]{QueueFull: DropQueueFull, BadOffload: DropBadOffload, Malformed: DropMalformed, Other: DropSendError}

// fromServer writes a frame from a server to the TUN if checkFromServer
// lets it through.
func (c *Client) fromServer(up *upstream, frame []byte) {
	if r, drop := c.checkFromServer(up, frame); drop {
		c.drop(up, r, frame, nil)
		return
	}
	if err := c.dev.WriteFrame(frame); err != nil {
		c.drop(up, DropTunWrite, frame, err)
	}
}

// checkFromServer decides whether a frame from a server may go into the
// TUN: drop is false if so, else reason says why not. A server is trusted
// for what its routes cover and no more: the packet must be addressed to
// this client's tunnel address from that server (or, in gateway mode, to
// the subnets it routes here), and its source must be one this client
// routes to that server (the server's routes as this client accepted and
// owns them, so a reply goes back the way the packet came) or the server's
// own tunnel address (its pings' answers, its ICMP errors). Sources of a
// cluster's connections to this client's subnets (site-to-site) are inside
// its routes too; with a map they are the virtual ones. ICMP errors are
// judged by the packet they quote.
func (c *Client) checkFromServer(up *upstream, frame []byte) (reason DropReason, drop bool) {
	pkt, src, dst, problem := packet.OpenFrame(frame)
	switch problem {
	case packet.FrameMalformed:
		return DropMalformed, true
	case packet.FrameBadOffload:
		return DropBadOffload, true
	}
	t := up.tunnel.Load()
	if dst != t.address.Addr() && (!t.address6.IsValid() || dst != t.address6.Addr()) {
		// Gateway mode: the server routes this client's subnets here.
		if _, ok := t.subnets.Lookup(dst); !ok {
			return DropWrongDestination, true
		}
	}
	if src != t.gateway && (!t.gateway6.IsValid() || src != t.gateway6) && !c.routesTo(src, up) {
		// An ICMP error from a router on the cluster's side (fragmentation
		// needed, unreachable) has that router's source, often outside
		// the routes; it is about a packet this client sent to the
		// server, and trusted as far as that packet's destination is.
		if about, ok := packet.ErrorAbout(pkt); !ok || !c.routesTo(about, up) {
			return DropSpoofed, true
		}
	}
	return 0, false
}

// routesTo reports whether this client sends packets for a to up.
func (c *Client) routesTo(a netip.Addr, up *upstream) bool {
	owner, ok := c.byDst.Load().Lookup(a)
	return ok && owner == up
}

// drop counts a packet from up's server dropped for reason r, for gtun
// and for the server, and logs it unless a line of the same server and
// reason went out less than dropLogInterval ago: with what frame holds
// and err. Only the log line, at that bounded rate, allocates.
func (c *Client) drop(up *upstream, r DropReason, frame []byte, err error) {
	c.drops.Inc(r)
	up.drops.Inc(r)
	held, ok := up.dropLog[r].Allow(dropLogInterval)
	if !ok {
		return
	}
	args := []any{"server", up.name, "reason", r.String(), "server_total", up.drops.Get(r), "frame", packet.Summary(frame)}
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	if err != nil {
		args = append(args, "err", err)
	}
	c.log.Warn(dropLines[r], args...)
}

// flushDropLogs logs the drops each server's log held back, by reason,
// once their interval has passed: the count of a flood that stopped still
// reaches the log.
func (c *Client) flushDropLogs() {
	for _, up := range c.servers() {
		for r := range numDropReasons {
			if held, ok := up.dropLog[r].Flush(dropLogInterval); ok {
				c.log.Warn(dropLines[r], "server", up.name, "reason", r.String(), "server_total", up.drops.Get(r), "suppressed", held)
			}
		}
	}
}
