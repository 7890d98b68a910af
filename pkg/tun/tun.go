// Package tun creates and configures the TUN device a daemon reads and writes
// IP packets through. It talks to the kernel with ioctls and netlink, never by
// running ip(8), so it works on minimal images and its errors are readable.
package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Device is an open TUN device. The kernel deletes it when the device is
// closed (it is not persistent), so even a killed daemon leaves none behind.
type Device struct {
	f    *os.File
	name string
}

// ErrBusy means another process holds a TUN device of that name.
var ErrBusy = errors.New("device is in use by another process")

// Create opens (creating if needed) the TUN device name, in IFF_NO_PI mode:
// every read and write is one bare IP packet.
func Create(name string) (*Device, error) {
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tun name %q: must be 1-%d characters", name, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("create tun %s: %w (is another gtun/gtund running with tun = %q?)", name, ErrBusy, name)
		}
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	// A non-blocking fd handed to os.NewFile goes through the runtime poller,
	// so Close unblocks a pending Read instead of leaving a goroutine stuck.
	return &Device{f: os.NewFile(uintptr(fd), "/dev/net/tun"), name: ifr.Name()}, nil
}

// Name is the kernel's name of the device.
func (d *Device) Name() string { return d.name }

// Read reads one IP packet.
func (d *Device) Read(b []byte) (int, error) { return d.f.Read(b) }

// Write writes one IP packet.
func (d *Device) Write(b []byte) (int, error) { return d.f.Write(b) }

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
