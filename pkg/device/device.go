// Package device is what gtun's and gtund's data planes need of their TUN
// device, so that they run over the kernel's (tun.Keeper) or over memory
// (memdev, for tests that need no root).
package device

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/packet"
)

// Device carries frames between a daemon and the host's network stack. A
// frame is a virtio-net header and an IP packet (packet.Buf); without
// offloads the header is all zeros.
type Device interface {
	// Name is the device's name on the host (gtun0, gtund0).
	Name() string
	// ReadFrame reads the next frame the host routes into the device,
	// waiting for one. When none is ready it calls idle (if not nil)
	// before it waits: the caller's chance to send what it held back for
	// the frames that might have followed. An error means the device was
	// closed, or deleted and replaced (the keeper recreates it; the caller
	// retries).
	ReadFrame(b *packet.Buf, idle func()) error
	// WriteFrame hands a frame to the host. It does not keep frame.
	WriteFrame(frame []byte) error
	// Set gives the device its MTU and addresses, replacing earlier ones.
	Set(mtu int, addrs []netip.Prefix) error
	// Offload reports whether frames may be offloaded super-packets (up to
	// 64 KiB, see packet.VnetHdr) or are always plain packets.
	Offload() bool
	// Run keeps the device as Set wants it until ctx ends.
	Run(ctx context.Context)
	// Close removes the device; ReadFrame fails from then on.
	Close() error
}

// Frames reads frames from d until ctx ends and hands each, with its
// packet's destination, to handle, which then owns the buffer. A frame
// whose packet has no readable destination goes to malformed (counted by
// the caller, not logged: IPv6 router solicitations and the like). A read
// error means the device was deleted or replaced: Frames logs it (at a
// bounded rate) and reads again once the keeper has repaired it. idle (may
// be nil) runs whenever no frame is ready, before Frames waits for one: a
// handler that holds the end of a frame back to send it with the next
// (the udp transport fills its GSO sends that way) sends it then, so
// nothing is held while the reader sleeps.
func Frames(ctx context.Context, d Device, rate *lograte.Limiter, handle func(b *packet.Buf, dst netip.Addr), malformed, idle func()) {
	for {
		b := packet.Get()
		if err := d.ReadFrame(b, idle); err != nil {
			packet.Put(b)
			if idle != nil {
				idle()
			}
			if ctx.Err() != nil {
				return
			}
			rate.Log(slog.LevelWarn, "tunread", "tun read failed; waiting for the device to be repaired", "tun", d.Name(), "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		dst, err := packet.Dst(b.IP())
		if err != nil {
			packet.Put(b)
			malformed()
			continue
		}
		handle(b, dst)
	}
}
