package server

/* gtund's data plane: packets between the TUN device and the peers' sessions.

From a peer to the TUN (one goroutine per session: the session's reader):

 1. The session reads a record, opens it in place in a pooled packet.Buf
    and calls fromPeer with the frame. The buffer is the session's:
    fromPeer must not keep the frame.
 2. checkFromPeer: the offload header must describe its packet
    (bad_offload), the packet must parse (malformed), its source must be
    the peer's tunnel address or within its subnets (spoofed_source), and
    its destination within what the peer is allowed (acl). gtund's own
    tunnel address answers pings, and DNS when gtund's proxy is the peer's
    DNS server (a mapped cluster), and nothing else unless the peer's
    allowed names it (gateway_host).
 3. The device's WriteFrame copies the frame into the kernel (tun_write
    when it fails). No queue, no hand-off.

From the TUN to a peer (one goroutine: readDevice):

 1. device.Frames reads a frame into a pooled buffer and finds its
    destination (malformed when it has none); readDevice owns the buffer.
 2. The destination picks the session: a pool address by its slot in
    byAddr (one atomic load), else a peer's subnet by longest prefix in
    bySubnet (an immutable table, swapped whole when a peer with subnets
    comes or goes). No session: no_route.
 3. Session.Enqueue hands the buffer to that session's writer goroutine
    through its bounded queue (session.DefaultQueueLen frames; full:
    queue_full, and the buffer goes back to the pool), so the reader never
    waits on one peer while the others wait behind it. The writer seals
    each frame in place, writes all that are queued (up to 64 records) with
    one writev, and returns the buffers to the pool.

Drops are counted twice, for gtund and for the peer, in fixed arrays of
atomic counters (stats.Counts), and logged at most once per interval per
peer and reason (lograte.Gate) with the count the interval held back:
neither takes a lock or allocates. no_route and malformed frames from the
TUN are counted, not logged: they are common and harmless (a client just
left, IPv6 router solicitations).
*/

import (
	"context"
	"net/netip"
	"time"

	"github.com/gtun/gtun/pkg/device"
	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/stats"
)

// DropReason is why gtund dropped a packet.
type DropReason uint8

// Drop reasons. A peer's packets count for gtund and for the peer; no_route
// and malformed frames from the TUN for gtund alone.
const (
	DropSpoofed     DropReason = iota // a source neither the peer's address nor in its subnets
	DropACL                           // a destination outside the peer's allowed
	DropGatewayHost                   // to gtund's own tunnel address, neither a ping nor named by allowed: the host's sshd or metrics port are not the peer's to reach
	DropMalformed                     // not an IP packet, or cut short
	DropBadOffload                    // a virtio-net header that does not describe its packet
	DropTunWrite                      // the kernel refused the frame
	DropQueueFull                     // the peer's send queue was full
	DropNoRoute                       // from the TUN to an address no session has
	DropSendError                     // the transport refused the frame (udp: a packet larger than a datagram carries, a closed session)
	numDropReasons
)

var dropNames = [numDropReasons]string{"spoofed_source", "acl", "gateway_host", "malformed", "bad_offload", "tun_write", "queue_full", "no_route", "send_error"}

// String is the reason's name in status and metrics.
func (r DropReason) String() string { return dropNames[r] }

// dropLines are the log lines of drops of a peer's packets.
var dropLines = [numDropReasons]string{
	DropSpoofed:     "packet with a source that is neither the peer's address nor in its subnets",
	DropACL:         "packet to a destination the peer is not allowed",
	DropGatewayHost: "packet to the gateway's own address that is not a ping (the peer's allowed does not name the gateway)",
	DropMalformed:   "malformed packet from peer",
	DropBadOffload:  "bad offload header from peer",
	DropTunWrite:    "tun write failed",
	DropQueueFull:   "send queue to peer full",
	DropSendError:   "send to peer failed",
}

// dropLogInterval is how often a peer's drops of one reason are logged at
// most.
const dropLogInterval = 10 * time.Second

// drops count packets dropped, by reason.
type drops = stats.Counts[DropReason]

// dropLog holds back a peer's drop log lines, by reason.
type dropLog [numDropReasons]lograte.Gate

// fromPeer writes a frame from a peer's session to the TUN if
// checkFromPeer lets it through.
func (s *Server) fromPeer(ps *peerSession, frame []byte) {
	if r, drop := s.checkFromPeer(ps, frame); drop {
		s.drop(ps, r, frame, nil)
		return
	}
	if err := s.dev.WriteFrame(frame); err != nil {
		s.drop(ps, DropTunWrite, frame, err)
	}
}

// checkFromPeer decides whether a frame from a peer may go into the TUN:
// drop is false if so, else reason says why not. Its offload header must
// describe its packet, the packet's source must be the peer's own address
// or within its subnets (site-to-site), and its destination within what
// the peer is allowed to reach. gtund's own tunnel address answers pings
// (diagnostics) and nothing else unless the peer's allowed names it:
// packets to it go to the host's own sockets (sshd, the metrics port),
// which are not the cluster.
func (s *Server) checkFromPeer(ps *peerSession, frame []byte) (reason DropReason, drop bool) {
	pkt, src, dst, problem := packet.OpenFrame(frame)
	switch problem {
	case packet.FrameMalformed:
		return DropMalformed, true
	case packet.FrameBadOffload:
		return DropBadOffload, true
	}
	if src != ps.addr && src != ps.addr6 && !ps.peer.fromSubnet(src) {
		return DropSpoofed, true
	}
	if _, ok := ps.peer.allowed.Load().Lookup(dst); !ok {
		switch {
		case dst != s.cfg.Gateway && dst != s.cfg.Gateway6:
			return DropACL, true
		case packet.EchoRequest(pkt):
		case ps.peer.dnsProxy.Load() && packet.ToPort(pkt, 53):
			// its DNS server: gtund's proxy, while the routes are mapped
		default:
			return DropGatewayHost, true
		}
	}
	return 0, false
}

// drop counts a packet of ps's peer dropped for reason r, for gtund and for
// the peer, and logs it unless a line of the same peer and reason went out
// less than dropLogInterval ago: with what frame holds (nil: not at hand)
// and err. Only the log line, at that bounded rate, allocates.
func (s *Server) drop(ps *peerSession, r DropReason, frame []byte, err error) {
	s.drops.Inc(r)
	ps.peer.drops.Inc(r)
	held, ok := ps.peer.dropLog[r].Allow(dropLogInterval)
	if !ok {
		return
	}
	args := []any{"peer", ps.name, "reason", r.String(), "peer_total", ps.peer.drops.Get(r)}
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	if frame != nil {
		args = append(args, "frame", packet.Summary(frame))
	}
	if err != nil {
		args = append(args, "err", err)
	}
	s.log.Warn(dropLines[r], args...)
}

// flushDropLogs logs the drops each peer's log held back, by reason, once
// their interval has passed: the count of a flood that stopped still
// reaches the log.
func (s *Server) flushDropLogs() {
	type named struct {
		name string
		p    *peer
	}
	s.mu.Lock()
	peers := make([]named, 0, len(s.peers))
	for _, p := range s.peers {
		peers = append(peers, named{p.cfg.Name, p})
	}
	s.mu.Unlock()
	for _, n := range peers {
		for r := range numDropReasons {
			if held, ok := n.p.dropLog[r].Flush(dropLogInterval); ok {
				s.log.Warn(dropLines[r], "peer", n.name, "reason", r.String(), "peer_total", n.p.drops.Get(r), "suppressed", held)
			}
		}
	}
}

// readDevice sends every frame read from the TUN to the session of the
// peer that owns its destination, until ctx ends.
//
// A udp session may hold the end of a frame back for the next frame's
// datagrams to join its GSO send (session.EnqueueMore); the reader sends
// it before it turns to another session or waits for the TUN.
func (s *Server) readDevice(ctx context.Context) {
	var held session.Held
	device.Frames(ctx, s.dev, s.rate, func(b *packet.Buf, dst netip.Addr) {
		ps := s.route(dst)
		if ps == nil {
			packet.Put(b)
			s.drops.Inc(DropNoRoute)
			return
		}
		held.To(ps.sess)
		if err := ps.sess.EnqueueMore(b); err != nil {
			s.drop(ps, sendDrops.For(err), nil, err)
		}
	}, func() { s.drops.Inc(DropMalformed) }, held.Flush)
	held.Flush()
}

// sendDrops are the drop reasons of a frame a session did not send.
var sendDrops = session.SendDrops[DropReason]{QueueFull: DropQueueFull, BadOffload: DropBadOffload, Malformed: DropMalformed, Other: DropSendError}

// route is the session packets to dst go to: the one holding dst's slot
// when dst is a pool address, else the one of the peer whose subnets
// contain it (longest prefix); nil when none.
func (s *Server) route(dst netip.Addr) *peerSession {
	if i, ok := s.poolIndex(dst); ok {
		return s.byAddr[i].Load()
	}
	ps, _ := s.bySubnet.Load().Lookup(dst)
	return ps
}
