package secure

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tryState is what TryWritePackets keeps in a Conn, under its write lock.
type tryState struct {
	raw        syscall.RawConn // the socket; nil: not a syscall.Conn
	rawChecked bool
	write      func(fd uintptr) bool // writevOnce, made once
	iov        []unix.Iovec          // the records of the write in progress
	n          int                   // what writevOnce wrote,
	err        error                 // or why it failed
	// tail holds the bytes of sealed records the socket did not take; every
	// write sends them first.
	tail []byte
}

// TryResult is what TryWritePackets did with its records.
type TryResult uint8

const (
	// TryBusy: nothing; the records are neither sealed nor written (the
	// connection is in another write, holds an unsent tail, or is not a
	// socket gtun can write without waiting). Send them another way.
	TryBusy TryResult = iota
	// TrySent: sealed and written whole.
	TrySent
	// TryTail: sealed, and the socket took only part of them (maybe none):
	// the rest waits in the connection, and Flush, or any later write,
	// sends it before anything else. Until then TryWritePackets is busy.
	TryTail
)

// TryWritePackets is WritePackets for a caller that must never wait on the
// connection (gtun's TUN reader serves every server: one whose path is
// down must not stall the others). It seals the records and writes them
// with one writev that does not wait for the socket; what the kernel does
// not take is copied into a buffer the connection owns (the records'
// buffers go back to their owner either way) and goes out first with the
// next write, which may wait: the caller hands that to a goroutine of its
// own (Flush). Record order is kept. Only a connection over a socket
// (syscall.Conn, e.g. TCP) can do this; others are always TryBusy.
// The error is that of WritePackets, for records it sealed or refused.
func (c *Conn) TryWritePackets(recs ...[]byte) (TryResult, error) {
	if !c.wmu.TryLock() {
		return TryBusy, nil
	}
	defer c.wmu.Unlock()
	if c.werr != nil {
		return TryBusy, c.werr
	}
	if len(c.try.tail) > 0 || !c.trySyscallConnLocked() {
		return TryBusy, nil
	}
	if err := c.sealPacketsLocked(recs); err != nil {
		return TryBusy, err
	}
	if len(c.wvec) > cap(c.try.iov) {
		c.try.iov = make([]unix.Iovec, len(c.wvec))
	}
	c.try.iov = c.try.iov[:len(c.wvec)]
	total := 0
	for i, b := range c.wvec {
		c.try.iov[i].Base = &b[0]
		c.try.iov[i].SetLen(len(b))
		total += len(b)
	}
	c.try.n, c.try.err = 0, nil
	err := c.try.raw.Write(c.try.write)
	clear(c.try.iov) // the records' buffers are not ours to keep
	if err == nil {
		err = c.try.err
	}
	if err != nil {
		c.werr = err
		return TryTail, err // sealed: the peer waits for records that never come, the session ends
	}
	if c.try.n == total {
		return TrySent, nil
	}
	skip := c.try.n
	for _, b := range c.wvec {
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		c.try.tail = append(c.try.tail, b[skip:]...)
		skip = 0
	}
	return TryTail, nil
}

// trySyscallConnLocked finds, once, the socket under the connection.
func (c *Conn) trySyscallConnLocked() bool {
	if !c.try.rawChecked {
		c.try.rawChecked = true
		if sc, ok := c.conn.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				c.try.raw = rc
				c.try.write = c.writevOnce // one closure for the connection's life, not one per write
			}
		}
	}
	return c.try.raw != nil
}

// writevOnce is the RawConn callback: one writev of c.try.iov, and done
// whatever the socket took; it never asks the poller to wait.
func (c *Conn) writevOnce(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&c.try.iov[0])), uintptr(len(c.try.iov)))
		switch {
		case errno == 0:
			c.try.n = int(n)
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
		default:
			c.try.err = errno
		}
		return true
	}
}

// Flush writes what TryWritePackets left unsent, waiting for the socket as
// long as it takes (until the connection is closed).
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	return c.flushTailLocked()
}

// flushTailLocked sends the tail TryWritePackets left, ahead of the bytes
// of the write that calls it: every write does, so records go out in the
// order they were sealed.
func (c *Conn) flushTailLocked() error {
	if len(c.try.tail) == 0 {
		return nil
	}
	_, err := c.conn.Write(c.try.tail)
	c.try.tail = c.try.tail[:0]
	if err != nil {
		c.werr = err
	}
	return err
}
