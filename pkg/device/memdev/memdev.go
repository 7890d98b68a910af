// Package memdev is a TUN device in memory (a device.Device): a test
// injects the frames the host would route into the tunnel and takes the
// frames the daemon writes back, with no kernel device, no netlink and no
// root. The frames are copied both ways, as the kernel does.
package memdev

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/packet"
)

// ErrClosed is what ReadFrame and WriteFrame return after Close.
var ErrClosed = errors.New("memdev: device closed")

// Queue is how many frames wait in each direction: injected and not yet
// read, written and not yet taken.
const Queue = 1024

// Device is a TUN device in memory.
type Device struct {
	name    string
	offload bool
	in      chan []byte // frames from the host, for ReadFrame
	out     chan []byte // frames the daemon wrote, for the test
	closed  chan struct{}
	once    sync.Once
	discard atomic.Bool

	// Writes counts frames the daemon wrote; Overflow those of them that
	// found the out queue full and were dropped (a host whose socket
	// buffers are full drops too).
	Writes, Overflow atomic.Uint64

	mu       sync.Mutex
	mtu      int
	addrs    []netip.Prefix
	writeErr error
}

// New makes a device called name; with offload its frames may carry
// offloaded super-packets.
func New(name string, offload bool) *Device {
	return &Device{name: name, offload: offload, in: make(chan []byte, Queue), out: make(chan []byte, Queue), closed: make(chan struct{})}
}

// Name implements device.Device.
func (d *Device) Name() string { return d.name }

// Offload implements device.Device.
func (d *Device) Offload() bool { return d.offload }

// Inject hands frame (a virtio-net header and an IP packet) to the
// daemon's next ReadFrame, as the host routing a packet into the device.
// It waits while Queue frames are waiting already; false: the device is
// closed.
func (d *Device) Inject(frame []byte) bool {
	if d.isClosed() {
		return false
	}
	select {
	case d.in <- slices.Clone(frame):
		return true
	case <-d.closed:
		return false
	}
}

// InjectIP is Inject for a plain IP packet (a zero virtio-net header).
func (d *Device) InjectIP(pkt []byte) bool {
	return d.Inject(append(make([]byte, packet.VnetHdrLen, packet.VnetHdrLen+len(pkt)), pkt...))
}

// ReadFrame implements device.Device.
func (d *Device) ReadFrame(b *packet.Buf, idle func()) error {
	if d.isClosed() {
		return ErrClosed
	}
	select {
	case f := <-d.in:
		b.N = copy(b.B, f)
		return nil
	default:
	}
	if idle != nil {
		idle()
	}
	select {
	case f := <-d.in:
		b.N = copy(b.B, f)
		return nil
	case <-d.closed:
		return ErrClosed
	}
}

// WriteFrame implements device.Device: the frame is copied for Written,
// dropped (and counted in Overflow) when Queue frames are waiting there.
func (d *Device) WriteFrame(frame []byte) error {
	d.mu.Lock()
	err := d.writeErr
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if d.isClosed() {
		return ErrClosed
	}
	d.Writes.Add(1)
	if d.discard.Load() {
		return nil
	}
	select {
	case d.out <- slices.Clone(frame):
	default:
		d.Overflow.Add(1)
	}
	return nil
}

// Written delivers the frames the daemon wrote, in order.
func (d *Device) Written() <-chan []byte { return d.out }

// Next waits up to timeout for the next frame the daemon writes.
func (d *Device) Next(timeout time.Duration) ([]byte, bool) {
	select { // one waiting already, whatever the timeout
	case f := <-d.out:
		return f, true
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case f := <-d.out:
		return f, true
	case <-t.C:
		return nil, false
	}
}

// Discard makes WriteFrame count frames without keeping them: for
// benchmarks and allocation counts of the path that writes.
func (d *Device) Discard() { d.discard.Store(true) }

// FailWrites makes every WriteFrame fail with err (nil: succeed again),
// as a device the kernel refuses writes to.
func (d *Device) FailWrites(err error) {
	d.mu.Lock()
	d.writeErr = err
	d.mu.Unlock()
}

// Set implements device.Device: it records the MTU and addresses.
func (d *Device) Set(mtu int, addrs []netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mtu, d.addrs = mtu, slices.Clone(addrs)
	return nil
}

// Config is what the last Set gave the device.
func (d *Device) Config() (mtu int, addrs []netip.Prefix) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mtu, slices.Clone(d.addrs)
}

// Run implements device.Device: there is nothing to keep in place.
func (d *Device) Run(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-d.closed:
	}
}

func (d *Device) isClosed() bool {
	select {
	case <-d.closed:
		return true
	default:
		return false
	}
}

// Close implements device.Device.
func (d *Device) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}
