package tun

import (
	"errors"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/gtun/gtun/internal/testnet"
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

func TestCreateAndBusy(t *testing.T) {
	inNewNetns(t, func() {
		d, err := Create("gtuntest0", true)
		if err != nil {
			t.Errorf("create: %v", err)
			return
		}
		defer d.Close()
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
