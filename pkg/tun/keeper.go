package tun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/gtun/gtun/pkg/device"
	"github.com/gtun/gtun/pkg/nlwatch"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/reconcile"
)

// Keeper keeps a TUN device in the state the daemon wants: existing, up,
// with its MTU and addresses. Someone may set it down, delete an address or
// delete the device; the Keeper notices (netlink events, backed by a
// periodic check: a reconcile.Loop of kind "tun") and repairs it,
// recreating the device if it is gone. Readers and writers go through the
// Keeper so they follow a recreated device.
type Keeper struct {
	name    string
	offload bool
	log     *slog.Logger
	dev     atomic.Pointer[Device]
	lock    *deviceLock // this process's claim on the name, for the Keeper's life
	loop    *reconcile.Loop
	events  *nlwatch.Hub // nil: Run makes its own

	mu    sync.Mutex
	mtu   int
	addrs []netip.Prefix

	lifeMu sync.Mutex // a repair and Close never overlap
	closed bool
}

// The daemons read and write through the Keeper (it follows a recreated
// device) as their device.Device.
var _ device.Device = (*Keeper)(nil)

// KeeperCheckInterval is the period of the check that backs up the netlink events.
const KeeperCheckInterval = time.Second

// HealKind is the Keeper's kind in the daemon's reconcile.Book.
const HealKind = "tun"

// NewKeeper creates the device (with offloads if asked and the kernel has
// them) and brings it up. Its repairs count in sh.Book under HealKind; it
// learns of changes from sh.Events, which must watch the current network
// namespace (zero fields: its own).
func NewKeeper(name string, offload bool, log *slog.Logger, sh reconcile.Shared) (*Keeper, error) {
	lock, err := lockDevice(name)
	if err != nil {
		return nil, err
	}
	d, err := Create(name, offload)
	if err != nil {
		lock.release()
		return nil, err
	}
	if offload && !d.Offload() {
		log.Warn("tun offloads unavailable; using the plain path (one packet per read)", "tun", name, "err", d.OffloadError())
	}
	k := &Keeper{name: name, offload: d.Offload(), log: log, events: sh.Events}
	k.loop = reconcile.New(reconcile.Options{Kind: HealKind, What: "tun device " + name, Check: k.check,
		Interval: KeeperCheckInterval, Book: sh.Book, Log: log})
	k.dev.Store(d)
	k.lock = lock
	if err := Configure(d.Name(), 0, netip.Prefix{}); err != nil {
		d.Close()
		lock.release()
		return nil, err
	}
	return k, nil
}

// Name is the device name.
func (k *Keeper) Name() string { return k.name }

// Set records the wanted MTU and addresses and applies them now. It holds
// off the Keeper's check meanwhile: a check between the new wish and its
// application would find the device "wrong", repair it and count a heal
// that no one caused (the netlink events of Set's own changes ask for
// such a check).
func (k *Keeper) Set(mtu int, addrs []netip.Prefix) error {
	k.lifeMu.Lock()
	defer k.lifeMu.Unlock()
	k.mu.Lock()
	k.mtu, k.addrs = mtu, slices.Clone(addrs)
	k.mu.Unlock()
	return k.apply()
}

func (k *Keeper) apply() error {
	k.mu.Lock()
	mtu, addrs := k.mtu, k.addrs
	k.mu.Unlock()
	if len(addrs) == 0 {
		return Configure(k.name, mtu, netip.Prefix{})
	}
	for _, a := range addrs {
		if err := Configure(k.name, mtu, a); err != nil {
			return err
		}
	}
	return RemoveAddrs(k.name, addrs...)
}

// Offload reports whether the device runs with offloads (see Device.Offload).
func (k *Keeper) Offload() bool { return k.offload }

// ReadFrame reads one frame from the current device. After an error it
// tells the Keeper to check the device; the caller retries.
func (k *Keeper) ReadFrame(b *packet.Buf, idle func()) error {
	d := k.dev.Load()
	err := d.ReadFrame(b, idle)
	if err != nil && d == k.dev.Load() {
		k.Kick()
	}
	return err
}

// WriteFrame writes one frame to the current device.
func (k *Keeper) WriteFrame(frame []byte) error { return k.dev.Load().WriteFrame(frame) }

// Kick asks for a check soon.
func (k *Keeper) Kick() { k.loop.Kick() }

// Close deletes the device; the Keeper repairs nothing after it.
func (k *Keeper) Close() error {
	k.lifeMu.Lock()
	defer k.lifeMu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	err := k.dev.Load().Close()
	k.lock.release()
	return err
}

// Run watches and repairs the device until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := k.events
	if events == nil {
		events = nlwatch.NewHub(k.log, nil)
		wg.Go(func() { events.Run(ctx) })
	}
	defer events.Links.Listen(func(u netlink.LinkUpdate) {
		if u.Attrs() != nil && u.Attrs().Name == k.name {
			k.Kick()
		}
	}, k.Kick)()
	defer events.Addrs.Listen(func(u netlink.AddrUpdate) {
		if !u.NewAddr {
			k.Kick()
		}
	}, k.Kick)()
	k.loop.Run(ctx)
}

// check compares the device with what is wanted and repairs what differs.
func (k *Keeper) check() (reconcile.Outcome, error) {
	k.lifeMu.Lock()
	defer k.lifeMu.Unlock()
	if k.closed {
		return reconcile.Outcome{}, nil
	}
	start := time.Now()
	problem, err := k.inspect()
	if err != nil {
		return reconcile.Outcome{}, fmt.Errorf("inspect tun device %s: %w", k.name, err)
	}
	if problem == "" {
		return reconcile.Outcome{}, nil
	}
	if problem == "deleted" {
		d, err := Create(k.name, k.offload)
		if err != nil {
			return reconcile.Outcome{}, fmt.Errorf("tun device %s was deleted and cannot be recreated: %w", k.name, err)
		}
		if old := k.dev.Swap(d); old != nil {
			old.Close() // wakes readers blocked on the dead device
		}
	}
	if err := k.apply(); err != nil {
		return reconcile.Outcome{}, fmt.Errorf("repair tun device %s (%s): %w", k.name, problem, err)
	}
	took := time.Since(start)
	k.log.Info("tun device healed", "tun", k.name, "problem", problem, "took", took)
	return reconcile.Outcome{Heals: 1, Took: took}, nil
}

// inspect says what is wrong with the device: "deleted", "down",
// "address missing", "mtu", or "" when it is as wanted.
func (k *Keeper) inspect() (string, error) {
	link, err := netlink.LinkByName(k.name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, os.ErrNotExist) {
			return "deleted", nil
		}
		return "", fmt.Errorf("find link: %w", err)
	}
	if link.Type() != "tuntap" {
		return "", fmt.Errorf("%s exists but is a %s device, not our tun", k.name, link.Type())
	}
	k.mu.Lock()
	mtu, want := k.mtu, k.addrs
	k.mu.Unlock()
	if link.Attrs().Flags&unix.IFF_UP == 0 {
		return "down", nil
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		return "mtu", nil
	}
	if len(want) == 0 {
		return "", nil
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return "", fmt.Errorf("list addresses: %w", err)
	}
	for _, w := range want {
		found := false
		for _, a := range have {
			p, ok := netip.AddrFromSlice(a.IP)
			ones, _ := a.Mask.Size()
			if ok && netip.PrefixFrom(p.Unmap(), ones) == w {
				found = true
				break
			}
		}
		if !found {
			return "address missing", nil
		}
	}
	return "", nil
}
