// Package tun creates and configures the TUN device a daemon reads and writes
// IP packets through. It talks to the kernel with ioctls and netlink, never by
// running ip(8), so it works on minimal images and its errors are readable.
package tun

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/gtun/gtun/pkg/packet"
)

// Device is an open TUN device. The kernel deletes it when the device is
// closed (it is not persistent), so even a killed daemon leaves none behind.
type Device struct {
	f          *os.File
	rc         syscall.RawConn // f's, for reads that run idle before they wait
	rd         idleRead
	name       string
	offload    bool  // IFF_VNET_HDR with checksum and TSO offloads
	offloadErr error // why offloads were refused, when they were asked for
}

// scratchPool holds the buffers the plain path builds segments in; writers
// run concurrently (one per session on gtund).
var scratchPool = sync.Pool{New: func() any { b := make([]byte, packet.MaxIP); return &b }}

// ErrBusy means another process holds a TUN device of that name.
var ErrBusy = errors.New("device is in use by another process")

// offloads are what gtun asks the kernel to hand over unfinished: packets
// with a partial checksum, and TCP super-packets up to 64 KiB (TSO).
const offloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// Create opens (creating if needed) the TUN device name in IFF_NO_PI mode.
// With offload, it also asks for IFF_VNET_HDR and TSO: every read then
// returns a virtio-net header and a packet of up to 64 KiB, which crosses
// the tunnel as one frame. When the kernel refuses offloads, Create falls
// back to the plain mode (one MTU-sized packet per read); Offload tells
// which mode is in use.
func Create(name string, offload bool) (*Device, error) {
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tun name %q: must be 1-%d characters", name, unix.IFNAMSIZ-1)
	}
	if offload {
		d, err := open(name, true)
		if err == nil || errors.Is(err, ErrBusy) {
			return d, err
		}
		d, perr := open(name, false)
		if perr != nil {
			return nil, perr
		}
		d.offloadErr = err
		return d, nil
	}
	return open(name, false)
}

// OffloadError is why offloads were asked for but are not in use.
func (d *Device) OffloadError() error { return d.offloadErr }

func open(name string, offload bool) (*Device, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if offload {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("create tun %s: %w (is another gtun/gtund running with tun = %q?)", name, ErrBusy, name)
		}
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	if offload {
		// TUNSETVNETHDRSZ reads an int through a pointer; TUNSETOFFLOAD takes the value.
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, packet.VnetHdrLen); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tun %s: set virtio-net header size: %w", name, err)
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloads); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tun %s: enable offloads: %w", name, err)
		}
	}
	// A non-blocking fd handed to os.NewFile goes through the runtime poller,
	// so Close unblocks a pending Read instead of leaving a goroutine stuck.
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	d := &Device{f: f, rc: rc, name: ifr.Name(), offload: offload}
	d.rd.fn = d.rd.attempt
	return d, nil
}

// Offload reports whether the device hands over and takes offloaded
// super-packets (IFF_VNET_HDR with TSO) or plain packets.
func (d *Device) Offload() bool { return d.offload }

// ReadFrame reads one packet into b as a frame: virtio-net header and IP
// packet. In plain mode the header is all zeros (a complete packet). idle
// (if not nil) runs when no packet is ready, before it waits for one.
func (d *Device) ReadFrame(b *packet.Buf, idle func()) error {
	if d.offload {
		n, err := d.read(b.B[:], idle)
		if err != nil {
			return err
		}
		if n < packet.VnetHdrLen {
			return fmt.Errorf("tun %s: short read of %d bytes", d.name, n)
		}
		b.N = n
		return nil
	}
	n, err := d.read(b.B[packet.VnetHdrLen:], idle)
	if err != nil {
		return err
	}
	clear(b.B[:packet.VnetHdrLen])
	b.N = packet.VnetHdrLen + n
	return nil
}

// read is f.Read, calling idle once when the device has nothing to read,
// before the runtime poller parks the goroutine. A frame that comes while
// idle runs is not missed: the poller's readiness is armed before the
// first attempt, so the wait that follows returns at once.
func (d *Device) read(p []byte, idle func()) (int, error) {
	if idle == nil {
		return d.f.Read(p)
	}
	r := &d.rd
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p, r.idle, r.n, r.err, r.idled = p, idle, 0, nil, false
	rerr := d.rc.Read(r.fn)
	n, err := r.n, r.err
	r.p, r.idle, r.err = nil, nil, nil
	if rerr != nil {
		return 0, fmt.Errorf("read %s: %w", d.name, rerr)
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", d.name, err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// idleRead is the state of one read with an idle call, kept in the device
// with its attempt bound once: a closure per read would be four
// allocations per frame.
type idleRead struct {
	mu    sync.Mutex // one read at a time
	fn    func(fd uintptr) bool
	p     []byte
	idle  func()
	n     int
	err   error
	idled bool
}

// attempt is one read attempt for RawConn.Read: done unless the device
// had nothing (EAGAIN), in which case idle runs (once per read) and the
// poller waits.
func (r *idleRead) attempt(fd uintptr) bool {
	for {
		r.n, r.err = unix.Read(int(fd), r.p)
		if r.err != unix.EINTR {
			break
		}
	}
	if r.err == unix.EAGAIN {
		if !r.idled {
			r.idled = true
			r.idle()
		}
		return false
	}
	return true
}

// WriteFrame writes a frame (virtio-net header and IP packet, as ReadFrame
// returns them, possibly from the peer's device). In plain mode, offloaded
// frames are finished here: checksums completed and super-packets split.
func (d *Device) WriteFrame(frame []byte) error {
	if d.offload {
		_, err := d.f.Write(frame)
		return err
	}
	h := packet.DecodeVnetHdr(frame)
	if h.Plain() {
		_, err := d.f.Write(frame[packet.VnetHdrLen:])
		return err
	}
	sp := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(sp)
	return packet.Segment(h, frame[packet.VnetHdrLen:], *sp, func(p []byte) error {
		_, err := d.f.Write(p)
		return err
	})
}

// Name is the kernel's name of the device.
func (d *Device) Name() string { return d.name }

// Close closes the device, which deletes it along with its addresses and routes.
func (d *Device) Close() error { return d.f.Close() }

// Configure sets the MTU and the address and brings the link up. It is
// idempotent, so it also serves to repair a link someone flapped.
func Configure(name string, mtu int, addr netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set mtu %d on %s: %w", mtu, name, err)
		}
	}
	if addr.IsValid() {
		nlAddr := &netlink.Addr{IPNet: prefixToIPNet(addr)}
		if err := netlink.AddrReplace(link, nlAddr); err != nil {
			return fmt.Errorf("add address %s to %s: %w", addr, name, err)
		}
	}
	if link.Attrs().Flags&unix.IFF_UP == 0 || link.Attrs().OperState != netlink.OperUp {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return nil
}

// RemoveAddrs deletes every address on the link except keep, so a client
// that gets a new tunnel address does not keep answering on the old one.
func RemoveAddrs(name string, keep ...netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		p, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.IP.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		if slices.Contains(keep, netip.PrefixFrom(p.Unmap(), ones)) {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("delete address %s from %s: %w", a.IPNet, name, err)
		}
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	a := p.Addr()
	bits := 32
	if !a.Is4() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// IPv6Enabled reports whether the device can carry IPv6: the kernel has
// IPv6 and the device's disable_ipv6 is not set.
func IPv6Enabled(name string) bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6")
	return err == nil && strings.TrimSpace(string(b)) == "0"
}
