package tun

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/reconcile"
)

// inNewNetns runs f on a thread inside a fresh network namespace.
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	testnet.Require(t, "/dev/net/tun")
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		ns, err := netns.New() // also switches this thread into it
		if err != nil {
			runtime.UnlockOSThread()
			t.Error(err)
			return
		}
		defer ns.Close()
		f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}

// withDevice runs f with an offloading device gtuntest0, made in a fresh
// network namespace and closed after f.
func withDevice(t *testing.T, f func(d *Device)) {
	t.Helper()
	inNewNetns(t, func() {
		d, err := Create("gtuntest0", true)
		if err != nil {
			t.Errorf("create: %v", err)
			return
		}
		defer d.Close()
		f(d)
	})
}

func TestCreateAndBusy(t *testing.T) {
	withDevice(t, func(d *Device) {
		if d.Name() != "gtuntest0" {
			t.Errorf("name %q", d.Name())
		}
		// A second daemon with the same tun name must refuse, not share it.
		if d2, err := Create("gtuntest0", true); !errors.Is(err, ErrBusy) {
			if d2 != nil {
				d2.Close()
			}
			t.Errorf("second create: %v, want ErrBusy", err)
		}
	})
}

func TestCreateBadName(t *testing.T) {
	for _, n := range []string{"", "a-name-that-is-too-long"} {
		if _, err := Create(n, false); err == nil {
			t.Errorf("Create(%q) succeeded", n)
		}
	}
}

// A second Keeper for the same name in the same namespace refuses with the
// holder's PID and leaves the first one's device alone; once the first is
// closed the name is free again. Another namespace has names of its own.
func TestKeeperRefusesSameNameTwice(t *testing.T) {
	testnet.Require(t, "/dev/net/tun")
	LockDir = t.TempDir()
	log := slog.New(slog.DiscardHandler)
	inNewNetns(t, func() {
		k, err := NewKeeper("gtunlock0", false, log, reconcile.Shared{})
		if err != nil {
			t.Errorf("first keeper: %v", err)
			return
		}
		k2, err := NewKeeper("gtunlock0", false, log, reconcile.Shared{})
		if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
			if k2 != nil {
				k2.Close()
			}
			t.Errorf("second keeper: %v, want ErrBusy naming pid %d", err, os.Getpid())
		}
		if _, err := netlink.LinkByName("gtunlock0"); err != nil {
			t.Errorf("the first keeper's device is gone after the refusal: %v", err)
		}
		inNewNetns(t, func() {
			other, err := NewKeeper("gtunlock0", false, log, reconcile.Shared{})
			if err != nil {
				t.Errorf("same name in another namespace: %v", err)
				return
			}
			other.Close()
		})
		k.Close()
		k3, err := NewKeeper("gtunlock0", false, log, reconcile.Shared{})
		if err != nil {
			t.Errorf("after the first closed: %v", err)
			return
		}
		k3.Close()
	})
}

// Set and the Keeper's check run at the same time (the check is what the
// netlink events of Set's own changes ask for): no heal may be counted, as
// nothing but the daemon changed the device.
func TestKeeperSetIsNotAHeal(t *testing.T) {
	testnet.Require(t, "/dev/net/tun")
	LockDir = t.TempDir()
	log := slog.New(slog.DiscardHandler)
	inNewNetns(t, func() {
		ns, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer ns.Close()
		k, err := NewKeeper("gtunset0", false, log, reconcile.Shared{})
		if err != nil {
			t.Errorf("keeper: %v", err)
			return
		}
		defer k.Close()
		stop := make(chan struct{})
		checked := make(chan int)
		var healed atomic.Int64 // heals the checks reported
		go func() {             // the check, on another thread in the same namespace
			runtime.LockOSThread() // left locked: the thread ends with the goroutine
			if err := netns.Set(ns); err != nil {
				t.Error(err)
				checked <- 0
				return
			}
			n := 0
			for {
				select {
				case <-stop:
					checked <- n
					return
				default:
				}
				out, _ := k.check()
				healed.Add(int64(out.Heals))
				n++
			}
		}()
		for i := range 200 {
			addr := netip.MustParsePrefix("100.64.0." + strconv.Itoa(2+i%2) + "/32")
			if err := k.Set(1300+i%2*100, []netip.Prefix{addr}); err != nil {
				t.Errorf("set %d: %v", i, err)
				break
			}
		}
		close(stop)
		if n := <-checked; n == 0 {
			t.Error("the check never ran")
		}
		if n := healed.Load(); n != 0 {
			t.Errorf("%d heals reported for the daemon's own changes", n)
		}
	})
}

// ReadFrame with an idle func reads what is ready without calling it, calls
// it once when the device runs dry, before it waits, and returns the next
// frame that comes; it allocates nothing per frame.
func TestReadFrameIdle(t *testing.T) {
	withDevice(t, func(d *Device) {
		// No IPv6 on it: no router solicitations among the frames.
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/gtuntest0/disable_ipv6", []byte("1"), 0); err != nil {
			t.Logf("disable IPv6 on the test device: %v", err)
		}
		link, err := netlink.LinkByName("gtuntest0")
		if err == nil {
			err = netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 77, 0, 1).To4(), Mask: net.CIDRMask(24, 32)}})
		}
		if err == nil {
			err = netlink.LinkSetUp(link)
		}
		if err != nil {
			t.Errorf("set up the device: %v", err)
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(fd)
		send := func(n int) {
			for range n {
				// Its own sockaddr each time: Sendto writes into it.
				if err := unix.Sendto(fd, []byte("ping"), 0, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{10, 77, 0, 2}}); err != nil {
					t.Error(err)
					return
				}
			}
		}

		var idles int
		waiting := make(chan struct{}, 1)
		idle := func() {
			idles++
			select {
			case waiting <- struct{}{}:
			default:
			}
		}
		b := packet.Get()
		defer packet.Put(b)
		send(3)
		for i := range 3 {
			if err := d.ReadFrame(b, idle); err != nil {
				t.Fatal(err)
			}
			if dst, _ := packet.Dst(b.IP()); dst != netip.MustParseAddr("10.77.0.2") {
				t.Fatalf("frame %d to %v", i, dst)
			}
		}
		if idles != 0 {
			t.Errorf("idle ran %d times with frames ready", idles)
		}
		go func() {
			<-waiting // ReadFrame found nothing and is about to wait
			send(1)
		}()
		if err := d.ReadFrame(b, idle); err != nil {
			t.Fatal(err)
		}
		if idles != 1 {
			t.Errorf("idle ran %d times for one wait, want 1", idles)
		}

		send(101)
		if a := testing.AllocsPerRun(100, func() {
			if err := d.ReadFrame(b, idle); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("%.1f allocations per frame read", a)
		}
	})
}
