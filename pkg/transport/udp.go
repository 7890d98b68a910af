package transport

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xtaci/kcp-go/v5"

	"github.com/gtun/gtun/pkg/dgram"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
)

// The udp transport carries every IP packet in a datagram of its own,
// sealed under the datagram session's keys with its own counter and
// checked against the session's replay window (pkg/dgram): a lost
// datagram costs its packet alone, and the inner TCP's congestion control
// is the only one on the path (no TCP over TCP). The control messages
// (hello, pushed config, keepalives) need to arrive and in order: they
// ride in the same session's kcp stream, as on the kcp transport, which on
// udp carries nothing else. One listener (and one UDP port) serves kcp and
// udp; the client's hello says which one a session is.

// UDP is the datagram transport's name in configs.
const UDP = "udp"

// Datagrams is the udp transport's data path over one datagram session:
// frames from the TUN (TSO super-packets too) are cut into packets of the
// tunnel MTU in user space and each is sealed into a datagram; packets that
// arrive go to the receiver as frames with a plain virtio-net header.
// SendFrame is safe for concurrent use; it implements session.Datagrams.
type Datagrams struct {
	s *dgram.Session

	mu     sync.Mutex                      // SendFrame's: what follows
	cut    packet.Segmenter                // the frame being sent
	sealer dgram.PacketSealer              // holds the session's seal lock while a run is sealed
	run    []byte                          // sealed datagrams of one size back to back, for one GSO send
	runSeg int                             // their size; 0: run is empty
	runN   int                             // how many
	runEnd bool                            // the last one is shorter: nothing may follow it in this run
	held   atomic.Bool                     // SendFrameMore left the run unsent
	unread int                             // datagrams sealed since the clock was read
	send   func(run []byte, seg int) error // the session's SendSealed; a benchmark's stand-in

	deliver atomic.Pointer[func([]byte)]
	gro     *packet.Coalescer // the receiver's, on the session's reading goroutine
}

// ErrTooBig is a packet larger than a datagram carries (a tunnel MTU set
// above what the path takes).
var ErrTooBig = errors.New("packet larger than a datagram carries")

// NewDatagrams makes the data path of session s. Packets that arrive
// before SetReceiver are dropped (and counted by the datagram layer).
func NewDatagrams(s *dgram.Session) *Datagrams {
	d := &Datagrams{s: s, sealer: s.PacketSealer(), send: s.SendSealed}
	d.gro = packet.NewCoalescer(d.flushFrame)
	return d
}

// SendFrame sends frame ([virtio-net header][IP packet]) as one datagram
// per packet of the tunnel MTU. A TSO frame is cut in place (see
// packet.SegmentPartial): the frame is overwritten.
func (d *Datagrams) SendFrame(frame []byte) error { return d.sendFrame(frame, false) }

// SendFrameMore is SendFrame for a caller with more frames coming (the TUN
// reader while the TUN has frames ready): the last datagrams of a TSO
// frame may wait, unsent, for the next frame's to fill the GSO send they
// start, until SendHeld. A 64 KiB frame is ~47 datagrams of ~1.4 KB, more
// than one GSO send takes (64 KB): sent frame by frame, every frame costs
// a second, short send (and a second skb through both kernels); carried
// over, the sends stay full. A small frame's one datagram waits the same
// way for the next ones of its size. Anything sent on the session
// meanwhile goes after them, in order.
func (d *Datagrams) SendFrameMore(frame []byte) error { return d.sendFrame(frame, true) }

// SendHeld sends what SendFrameMore held back.
func (d *Datagrams) SendHeld() error {
	if !d.held.Load() {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.held.Store(false)
	return d.sendRun()
}

func (d *Datagrams) sendFrame(frame []byte, more bool) error {
	if len(frame) <= packet.VnetHdrLen {
		return packet.ErrMalformed
	}
	h := packet.DecodeVnetHdr(frame)
	pkt := frame[packet.VnetHdrLen:]
	d.mu.Lock()
	defer d.mu.Unlock()
	var err error
	if h.Plain() {
		// Nothing to cut or complete: one datagram, which joins the run
		// as a segment does (small packets the TUN has ready at once
		// leave in one GSO send).
		d.readClock(1)
		err = d.addToRun(pkt, false)
	} else {
		// TCP segments keep their partial checksum (the far side's TUN
		// takes them with the offload): no pass over the payload for it
		// here.
		if err = d.cut.StartPartial(h, pkt); err == nil {
			d.readClock(d.cut.Len())
			for seg, partial, ok := d.cut.Next(); ok; seg, partial, ok = d.cut.Next() {
				if err = d.addToRun(seg, partial); err != nil {
					break
				}
			}
		}
	}
	if more && err == nil && d.runN > 0 && !d.runEnd {
		d.sealer.Release() // never held between frames
		d.held.Store(true) // the next frame's datagrams may join the run
		return nil
	}
	d.held.Store(false)
	if ferr := d.sendRun(); err == nil {
		err = ferr
	}
	return err
}

// readClock gives the sealer the time for a frame of n datagrams. The
// clock decides key updates only, and reading it costs as much as sealing
// a small packet: it is read once a frame, and a frame that joins a run
// held back for it (small packets while the TUN has more ready) takes the
// time the run started with, up to a GSO send's worth of datagrams.
func (d *Datagrams) readClock(n int) {
	if d.runN == 0 || d.unread >= dgram.GSOMaxSegments {
		d.sealer.Begin(time.Now())
		d.unread = 0
	}
	d.unread += n
}

// addToRun seals a segment at the end of the run, sending the run first
// if the segment cannot join it (another size, or no room).
func (d *Datagrams) addToRun(seg []byte, partial bool) error {
	if len(seg) > dgram.MaxPayload {
		return ErrTooBig
	}
	size := len(seg) + dgram.DataOverhead
	if d.runSeg != 0 && (d.runEnd || size > d.runSeg || d.runN == dgram.GSOMaxSegments || len(d.run)+size > dgram.GSOMaxBytes) {
		if err := d.sendRun(); err != nil {
			return err
		}
	}
	if d.runSeg == 0 {
		d.runSeg = size
	}
	if cap(d.run)-len(d.run) < size {
		// Grown as used, up to one GSO send: a session that sends only a
		// few small packets does not hold 64 KB for them.
		d.run = slices.Grow(d.run, max(size, min(len(d.run), dgram.GSOMaxBytes-len(d.run))))
	}
	d.runEnd = size < d.runSeg
	var flags byte
	if partial {
		flags = dgram.FlagCsumPartial
	}
	var err error
	d.run, err = d.sealer.Seal(d.run, seg, flags)
	d.runN++
	return err
}

// sendRun sends the run's datagrams (one system call with UDP GSO). The
// session's seal lock is let go first, whether the run is sent or not.
func (d *Datagrams) sendRun() error {
	d.sealer.Release()
	if d.runN == 0 {
		return nil
	}
	err := d.send(d.run, d.runSeg)
	d.run, d.runSeg, d.runN, d.runEnd = d.run[:0], 0, 0, false
	return err
}

// SetReceiver sets where arriving frames go (nil: dropped, counted by the
// datagram layer as not_ready).
func (d *Datagrams) SetReceiver(deliver func(frame []byte)) {
	if deliver == nil {
		d.deliver.Store(nil)
		d.s.SetPacketHandler(nil)
		return
	}
	d.deliver.Store(&deliver)
	d.s.SetPacketHandler(d)
}

// Rekeys counts the datagram session's key updates.
func (d *Datagrams) Rekeys() (sent, received uint64) {
	st := d.s.Stats()
	return st.KeyUpdatesSent, st.KeyUpdatesReceived
}

// Packet is the datagram session's handler: buf[at:] is one packet, with
// room for a virtio-net header before it. Consecutive segments of a TCP
// flow are joined into one frame (GRO in user space) until the end of the
// reader's batch.
func (d *Datagrams) Packet(buf []byte, at int, flags byte) {
	d.gro.Add(buf, at, flags&dgram.FlagCsumPartial != 0)
}

// Place is where the datagram session opens the next packet, n bytes: in
// the coalescer's buffer, where it joins the frame being built without a
// copy (see packet.Coalescer.Place).
func (d *Datagrams) Place(n int) []byte { return d.gro.Place(n) }

// Placed takes the packet Place placed, opened or not.
func (d *Datagrams) Placed(dst []byte, ok bool, flags byte) {
	d.gro.Placed(dst, ok, flags&dgram.FlagCsumPartial != 0)
}

// Flush ends the reader's batch: the frame being joined goes.
func (d *Datagrams) Flush() { d.gro.Flush() }

func (d *Datagrams) flushFrame(frame []byte) {
	if f := d.deliver.Load(); f != nil {
		(*f)(frame)
	}
}

// Session is the datagram session under the path.
func (d *Datagrams) Session() *dgram.Session { return d.s }

// UDPListener accepts the datagram sessions of both datagram transports:
// kcp, and udp's control stream. The hello tells the server which one a
// session is; for udp it then adds the session's Datagrams.
type UDPListener = KCPListener

// DialUDP runs the handshake with the server at addr over datagrams, then
// the control stream (kcp) and the packet path inside the session.
func DialUDP(ctx context.Context, addr string, o Options, hs secure.ClientConfig, timeout time.Duration) (*secure.Conn, *Datagrams, error) {
	sc, s, ks, err := dialKCP(ctx, addr, o, hs, timeout)
	if err != nil {
		return nil, nil, err
	}
	tuneControl(ks)
	return sc, NewDatagrams(s), nil
}

// controlInterval is the kcp update interval (ms) of a stream that carries
// control messages alone. kcp-go wakes every session every interval; at
// kcp's 10 ms an idle udp session cost gtund 7-9 ms of CPU a second (a
// tcp session 1), which a gateway of thousands of clients cannot pay.
// Writes and ACKs go out at once whatever the interval (no write delay,
// ACKs without delay), so a keepalive's round trip is not lengthened;
// only a lost control record waits up to an interval longer for its
// resend.
const controlInterval = 1000

func tuneControl(ks *kcp.UDPSession) {
	ks.SetNoDelay(1, controlInterval, kcpResend, kcpNoCongest)
}
