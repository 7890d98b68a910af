package dgram

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// readBatch is how many datagrams one recvmmsg takes at most: a burst of
// kcp segments between two reads costs one system call (on this project's
// virtual machines a system call and the thread switches around it cost
// more than opening a datagram).
const readBatch = 64

// mmsghdr is struct mmsghdr (x/sys has the call numbers, not the type).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// batchReader reads datagrams from a UDP socket many per system call,
// into buffers it owns and reuses: nothing is allocated per datagram.
// Not safe for concurrent use: one reading goroutine owns it.
type batchReader struct {
	rc     syscall.RawConn
	msgs   [readBatch]mmsghdr
	iovs   [readBatch]unix.Iovec
	names  [readBatch]unix.RawSockaddrInet6 // large enough for either family
	oobs   [readBatch][24]byte              // a UDP_GRO cmsg: the size of the datagrams joined in a message
	bufs   [readBatch][]byte
	batch  int // messages a read takes: readBatch, or groReadBatch with GRO (only those have buffers)
	gro    bool
	n      int
	errno  syscall.Errno
	readFn func(fd uintptr) bool // r.recv, made once (a method value allocates)
}

func newBatchReader(c *net.UDPConn, size int) (*batchReader, error) {
	return newBatchReaderOf(c, size, readBatch)
}

// newBatchReaderOf is newBatchReader reading batch messages at a time.
func newBatchReaderOf(c *net.UDPConn, size, batch int) (*batchReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &batchReader{rc: rc, batch: batch}
	for i := range batch {
		r.bufs[i] = make([]byte, size)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(size)
		r.msgs[i].hdr.Iov = &r.iovs[i]
		r.msgs[i].hdr.SetIovlen(1)
		r.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.readFn = r.recv
	return r, nil
}

// groReadBatch is how many messages one recvmmsg takes with UDP GRO on:
// each may hold a run of datagrams (up to 64 KiB), so fewer buffers hold
// as much as readBatch datagrams would, many times over.
const groReadBatch = 16

// newGROReader is newBatchReader for a socket that takes UDP_GRO (Linux
// 5.0+): the kernel joins a run of datagrams of one size from one source
// into one message, and message(i) says their size. Where the socket
// refuses it, every message is one datagram of at most size bytes.
func newGROReader(c *net.UDPConn, size int) (*batchReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), solUDP, udpGRO, 1) }); err != nil || serr != nil {
		return newBatchReader(c, size)
	}
	r, err := newBatchReaderOf(c, 1<<16, groReadBatch)
	if err != nil {
		return nil, err
	}
	r.gro = true
	for i := range r.batch {
		r.msgs[i].hdr.Control = &r.oobs[i][0]
	}
	return r, nil
}

// read waits for datagrams and returns how many it read (at least one).
// Datagram i is then r.datagram(i). A closed socket returns net.ErrClosed.
func (r *batchReader) read() (int, error) {
	for i := range r.batch {
		r.msgs[i].hdr.Namelen = uint32(unsafe.Sizeof(r.names[i]))
		r.msgs[i].hdr.Flags = 0
		r.msgs[i].len = 0
		if r.gro {
			r.msgs[i].hdr.SetControllen(len(r.oobs[i]))
		}
	}
	r.n, r.errno = 0, 0
	if err := r.rc.Read(r.readFn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, fmt.Errorf("recvmmsg: %w", r.errno)
	}
	return r.n, nil
}

// recv is the RawConn callback: false asks the runtime to wait until the
// socket is readable.
func (r *batchReader) recv(fd uintptr) bool {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(r.batch), unix.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == unix.EAGAIN:
		return false
	case errno == unix.EINTR:
		return false
	case errno != 0:
		r.errno = errno
	default:
		r.n = int(n)
	}
	return true
}

// datagram is the i-th datagram of the last read and its source. A
// truncated one (larger than the buffers) comes back longer than them, so
// that the caller's size check drops it.
func (r *batchReader) datagram(i int) ([]byte, netip.AddrPort) {
	m := &r.msgs[i]
	b := r.bufs[i][:min(int(m.len), len(r.bufs[i]))]
	if m.hdr.Flags&unix.MSG_TRUNC != 0 {
		b = r.bufs[i][:len(r.bufs[i])] // the full buffer: one byte too many for MaxDatagram
	}
	return b, sockaddrAddrPort(&r.names[i])
}

// message is the i-th message of the last read, the size of the datagrams
// it holds back to back (the last may be shorter; without GRO the one
// datagram's length), and their source. Cut it with nextDatagram.
func (r *batchReader) message(i int) ([]byte, int, netip.AddrPort) {
	b, from := r.datagram(i)
	seg := len(b)
	if r.gro && r.msgs[i].hdr.Controllen >= uint64(unix.CmsgLen(2)) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&r.oobs[i][0]))
		if h.Level == solUDP && h.Type == udpGRO {
			if v := int(*(*uint16)(unsafe.Pointer(&r.oobs[i][unix.CmsgLen(0)]))); v > 0 {
				seg = v
			}
		}
	}
	return b, max(seg, 1), from
}

// nextDatagram cuts the first datagram of seg bytes (or what is left) off
// a message.
func nextDatagram(msg []byte, seg int) (d, rest []byte) {
	n := min(seg, len(msg))
	return msg[:n], msg[n:]
}

// sockaddrAddrPort reads a struct sockaddr_in or sockaddr_in6; an IPv4
// address comes back as such (not v4-mapped).
func sockaddrAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// writeBatch is how many datagrams one sendmmsg carries at most.
const writeBatch = 32

// sparseGap: a datagram that follows the previous one by more than this is
// sent at once by its sender (an idle path: a ping, an ack, a keepalive
// takes no hand-off to another goroutine); closer ones are a burst (kcp-go
// sends its window one WriteTo at a time) and are gathered for one
// sendmmsg by the flusher.
const sparseGap = 200 * time.Microsecond

// batchWriter sends the datagrams of one UDP socket's sessions, many per
// system call. A burst is gathered into one of two batches while the
// flusher goroutine sends the other; a batch that fills up is sent at once
// by the sender that filled it (the others wait for it: backpressure).
// Batches leave in the order they were filled (kcp takes reordering for
// loss and resends), and an idle path's datagram never overtakes one.
// Errors are per datagram and counted: UDP loses datagrams, and the layers
// above resend (kcp) or do not care.
type batchWriter struct {
	connected bool // the client's socket: no destination per datagram
	family    int  // of the socket: an IPv6 socket takes IPv4 destinations v4-mapped
	errors    *drops
	direct    func(b []byte, to netip.AddrPort) error

	mu       sync.Mutex // guards what follows; taken before sendMu
	sendMu   sync.Mutex // held while a batch is on its way out: one at a time, in order
	cur      *batch     // being filled; the other is the flusher's
	other    *batch
	kicked   bool
	flushing bool          // the flusher has a batch on its way out
	last     time.Duration // since writerEpoch, of the last datagram given
	kick     chan struct{}
	closed   chan struct{}
	done     chan struct{}

	rc    syscall.RawConn
	gso   gsoMsg // under sendMu
	noGSO bool   // under sendMu: the socket refused UDP_SEGMENT once
}

type batch struct {
	rc    syscall.RawConn
	msgs  [writeBatch]mmsghdr
	iovs  [writeBatch]unix.Iovec
	names [writeBatch]unix.RawSockaddrInet6
	bufs  [writeBatch][MaxDatagram]byte
	n     int
	// the sendmmsg in progress (a batch is sent by one goroutine at a time)
	from, sent int
	errno      syscall.Errno
	writeFn    func(fd uintptr) bool // b.sendmmsg, made once
}

var writerEpoch = time.Now()

func newBatchWriter(c *net.UDPConn, connected bool, errs *drops, direct func(b []byte, to netip.AddrPort) error) (*batchWriter, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	w := &batchWriter{connected: connected, errors: errs, direct: direct, rc: rc,
		kick: make(chan struct{}, 1), closed: make(chan struct{}), done: make(chan struct{})}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var sa unix.Sockaddr
		if sa, serr = unix.Getsockname(int(fd)); serr == nil {
			w.family = unix.AF_INET
			if _, ok := sa.(*unix.SockaddrInet6); ok {
				w.family = unix.AF_INET6
			}
		}
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	w.cur, w.other = newBatch(rc), newBatch(rc)
	go w.flusher()
	return w, nil
}

func newBatch(rc syscall.RawConn) *batch {
	b := &batch{rc: rc}
	for i := range b.msgs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	b.writeFn = b.sendmmsg
	return b
}

// send sends b to to: at once when the path is idle, else in a batch. b
// is copied; the caller may reuse it on return.
func (w *batchWriter) send(b []byte, to netip.AddrPort) {
	now := time.Since(writerEpoch)
	w.mu.Lock()
	sparse := w.cur.n == 0 && !w.kicked && !w.flushing && now-w.last > sparseGap
	w.last = now
	if sparse {
		w.mu.Unlock()
		if err := w.direct(b, to); err != nil {
			w.errors.Inc(DropSendError)
		}
		return
	}
	bt := w.cur
	i := bt.n
	bt.iovs[i].SetLen(copy(bt.bufs[i][:], b))
	if w.connected {
		bt.msgs[i].hdr.Name, bt.msgs[i].hdr.Namelen = nil, 0
	} else {
		bt.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&bt.names[i]))
		bt.msgs[i].hdr.Namelen = putSockaddr(&bt.names[i], to, w.family)
	}
	bt.n++
	if bt.n == writeBatch {
		// Under mu: senders wait. After the flusher's batch, if one is
		// on its way out: it was filled first.
		w.sendMu.Lock()
		bt.send(w.errors)
		w.sendMu.Unlock()
		w.mu.Unlock()
		return
	}
	if !w.kicked {
		w.kicked = true
		w.kick <- struct{}{} // room for one, and only the holder of kicked sends
	}
	w.mu.Unlock()
}

// flusher sends the batch being filled whenever it is kicked.
func (w *batchWriter) flusher() {
	defer close(w.done)
	for {
		select {
		case <-w.closed:
			return
		case <-w.kick:
		}
		w.mu.Lock()
		bt := w.cur
		w.cur, w.other = w.other, bt // the other is sent and empty: only this goroutine sends it
		w.kicked, w.flushing = false, true
		w.sendMu.Lock() // before mu is let go: no batch filled later leaves first
		w.mu.Unlock()
		bt.send(w.errors)
		w.sendMu.Unlock()
		w.mu.Lock()
		w.flushing = false
		w.mu.Unlock()
	}
}

// send sends the batch with as few sendmmsg as the socket allows; a
// datagram that fails is counted and skipped. It empties the batch.
func (b *batch) send(errs *drops) {
	for b.from = 0; b.from < b.n; {
		b.sent, b.errno = 0, 0
		if err := b.rc.Write(b.writeFn); err != nil {
			errs.Inc(DropSendError) // the socket is closed: the rest goes with it
			break
		}
		b.from += b.sent
		if b.errno != 0 {
			errs.Inc(DropSendError)
			b.from++ // skip the datagram that failed
		}
	}
	b.n = 0
}

// sendmmsg is the RawConn callback: false asks the runtime to wait until
// the socket is writable.
func (b *batch) sendmmsg(fd uintptr) bool {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[b.from])), uintptr(b.n-b.from), unix.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == unix.EAGAIN || errno == unix.EINTR:
		return false
	case errno != 0:
		b.errno = errno
	default:
		b.sent = int(n)
	}
	return true
}

// close stops the flusher and sends what is pending.
func (w *batchWriter) close() {
	select {
	case <-w.closed:
		return
	default:
	}
	close(w.closed)
	<-w.done
	w.mu.Lock()
	w.sendMu.Lock()
	w.cur.send(w.errors)
	w.sendMu.Unlock()
	w.mu.Unlock()
}

// putSockaddr writes to into sa for a socket of family and returns its length.
func putSockaddr(sa *unix.RawSockaddrInet6, to netip.AddrPort, family int) uint32 {
	if family == unix.AF_INET && to.Addr().Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: to.Addr().As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], to.Port())
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: to.Addr().As16()}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], to.Port())
	return unix.SizeofSockaddrInet6
}

// UDP GSO (UDP_SEGMENT, Linux 4.18+): a run of datagrams of one size (the
// last may be shorter) leaves in one sendmsg and crosses the kernel's
// stack as one buffer, cut into datagrams at the device or by it. The
// kernel takes at most gsoMaxSegments per call, in at most gsoMaxBytes.
const (
	gsoMaxSegments = 64
	gsoMaxBytes    = 65000
	solUDP         = 17  // SOL_UDP
	udpSegment     = 103 // UDP_SEGMENT
	udpGRO         = 104 // UDP_GRO
)

// gsoMsg is the sendmsg of a GSO run: its header, buffers and callback are
// made once (nothing allocated per call); used under the writer's sendMu.
type gsoMsg struct {
	msg   unix.Msghdr
	iov   unix.Iovec
	name  unix.RawSockaddrInet6
	oob   [24]byte // one cmsghdr (16 bytes) and its uint16, aligned
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func (g *gsoMsg) sendmsg(fd uintptr) bool {
	_, _, errno := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&g.msg)), unix.MSG_DONTWAIT)
	switch {
	case errno == unix.EAGAIN || errno == unix.EINTR:
		return false
	default:
		g.errno = errno
	}
	return true
}

// sendGSO sends buf, datagrams of seg bytes back to back (the last may be
// shorter), to to: with one sendmsg when the socket takes UDP_SEGMENT,
// else one by one. Datagrams given to send before it leave before it.
// Like send, errors are counted, not returned: the datagrams are lost, as
// on the wire.
func (w *batchWriter) sendGSO(buf []byte, seg int, to netip.AddrPort) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = time.Since(writerEpoch)
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	if w.cur.n > 0 { // queued earlier: leaves first
		w.cur.send(w.errors)
	}
	if !w.noGSO {
		g := &w.gso
		if g.fn == nil {
			g.fn = g.sendmsg
			g.msg.Iov = &g.iov
			g.msg.SetIovlen(1)
			g.msg.Control = &g.oob[0]
			g.msg.SetControllen(len(g.oob))
			h := (*unix.Cmsghdr)(unsafe.Pointer(&g.oob[0]))
			h.Level, h.Type = solUDP, udpSegment
			h.SetLen(unix.CmsgLen(2))
		}
		*(*uint16)(unsafe.Pointer(&g.oob[unix.CmsgLen(0)])) = uint16(seg)
		g.iov.Base = &buf[0]
		g.iov.SetLen(len(buf))
		if w.connected {
			g.msg.Name, g.msg.Namelen = nil, 0
		} else {
			g.msg.Name = (*byte)(unsafe.Pointer(&g.name))
			g.msg.Namelen = putSockaddr(&g.name, to, w.family)
		}
		g.errno = 0
		err := w.rc.Write(g.fn)
		switch {
		case err != nil:
			w.errors.Inc(DropSendError) // the socket is closed
			return
		case g.errno == 0:
			return
		case g.errno == unix.EIO || g.errno == unix.EINVAL || g.errno == unix.ENOPROTOOPT || g.errno == unix.EOPNOTSUPP:
			// No UDP GSO here (kernel, device or a size it refuses):
			// one by one from now on.
			w.noGSO = true
		default:
			w.errors.Inc(DropSendError)
			return
		}
	}
	for len(buf) > 0 {
		d := buf[:min(seg, len(buf))]
		buf = buf[len(d):]
		if err := w.direct(d, to); err != nil {
			w.errors.Inc(DropSendError)
		}
	}
}
