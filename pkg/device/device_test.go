package device_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gtun/gtun/pkg/device"
	"github.com/gtun/gtun/pkg/device/memdev"
	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/packet"
)

func ipv4(dst string) []byte {
	p := make([]byte, 20)
	p[0] = 0x45
	a := netip.MustParseAddr(dst).As4()
	copy(p[16:], a[:])
	return p
}

func ipv6(dst string) []byte {
	p := make([]byte, 40)
	p[0] = 0x60
	a := netip.MustParseAddr(dst).As16()
	copy(p[24:], a[:])
	return p
}

type seen struct {
	dst   netip.Addr
	frame []byte
}

// Frames hands every frame, in order, with its packet's destination to the
// handler, and a frame without a readable destination to malformed.
func TestFramesDestinations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := memdev.New("gtun0", false)
		var got []seen
		var malformed atomic.Int64
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			device.Frames(ctx, d, lograte.New(slog.New(slog.DiscardHandler), time.Second), func(b *packet.Buf, dst netip.Addr) {
				got = append(got, seen{dst, bytes.Clone(b.Bytes())})
				packet.Put(b)
			}, func() { malformed.Add(1) }, nil)
		}()
		d.InjectIP(ipv4("10.244.1.20"))
		d.InjectIP([]byte{0x10, 0, 0}) // not IP
		d.InjectIP(ipv6("fd00::5"))
		d.InjectIP(ipv4("10.96.0.10")[:19]) // too short
		synctest.Wait()
		cancel()
		d.Close()
		<-done
		want := []string{"10.244.1.20", "fd00::5"}
		if len(got) != len(want) {
			t.Fatalf("handled %d frames, want %d", len(got), len(want))
		}
		for i, w := range want {
			if got[i].dst != netip.MustParseAddr(w) {
				t.Errorf("frame %d: destination %v, want %s", i, got[i].dst, w)
			}
			if len(got[i].frame) < packet.VnetHdrLen || !bytes.Equal(got[i].frame[:packet.VnetHdrLen], make([]byte, packet.VnetHdrLen)) {
				t.Errorf("frame %d: no zero virtio-net header in front: % x", i, got[i].frame)
			}
		}
		if malformed.Load() != 2 {
			t.Errorf("%d malformed, want 2", malformed.Load())
		}
	})
}

// idle runs when no frame is ready, before Frames waits: after a burst
// (so that what a handler held back for the next frame goes), not between
// the frames of one.
func TestFramesIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := memdev.New("gtun0", false)
		for range 3 {
			d.InjectIP(ipv4("10.244.1.20"))
		}
		var events []string // appended on Frames' goroutine only
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			device.Frames(ctx, d, lograte.New(slog.New(slog.DiscardHandler), time.Second), func(b *packet.Buf, dst netip.Addr) {
				events = append(events, "frame")
				packet.Put(b)
			}, func() {}, func() { events = append(events, "idle") })
		}()
		synctest.Wait()
		if got, want := strings.Join(events, " "), "frame frame frame idle"; got != want {
			t.Errorf("a burst of three: %s, want %s", got, want)
		}
		events = nil
		d.InjectIP(ipv4("10.244.1.20"))
		synctest.Wait()
		if got, want := strings.Join(events, " "), "frame idle"; got != want {
			t.Errorf("one more: %s, want %s", got, want)
		}
		cancel()
		d.Close()
		<-done
	})
}

// flaky fails its first reads as a deleted TUN device does until the
// keeper has recreated it.
type flaky struct {
	*memdev.Device
	failures atomic.Int64
}

func (f *flaky) ReadFrame(b *packet.Buf, idle func()) error {
	if f.failures.Add(-1) >= 0 {
		return errors.New("read /dev/net/tun: file already closed")
	}
	return f.Device.ReadFrame(b, idle)
}

// A read error is logged at a bounded rate and the read retried: frames
// flow again once the device is back, and the errors of a burst make one
// log line.
func TestFramesRetriesAfterReadErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{Device: memdev.New("gtund0", true)}
		f.failures.Store(50)
		var logged bytes.Buffer
		ctx, cancel := context.WithCancel(t.Context())
		got := make(chan netip.Addr, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			device.Frames(ctx, f, lograte.New(slog.New(slog.NewTextHandler(&logged, nil)), time.Minute), func(b *packet.Buf, dst netip.Addr) {
				packet.Put(b)
				got <- dst
			}, func() { t.Error("malformed") }, nil)
		}()
		f.InjectIP(ipv4("10.244.1.20"))
		start := time.Now()
		if dst := <-got; dst != netip.MustParseAddr("10.244.1.20") {
			t.Errorf("destination %v", dst)
		}
		if took := time.Since(start); took < 50*10*time.Millisecond || took > 60*10*time.Millisecond {
			t.Errorf("50 failed reads took %v, want one retry every 10ms", took)
		}
		if n := strings.Count(logged.String(), "tun read failed"); n != 1 {
			t.Errorf("%d log lines for 50 failed reads within a minute, want 1:\n%s", n, logged.String())
		}
		cancel()
		f.Close()
		<-done
	})
}

// Frames ends with its context, also while the device keeps failing.
func TestFramesEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{Device: memdev.New("gtun0", false)}
		f.failures.Store(1 << 40)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			device.Frames(ctx, f, lograte.New(slog.New(slog.DiscardHandler), time.Minute), func(b *packet.Buf, _ netip.Addr) { packet.Put(b) }, func() {}, nil)
		}()
		time.Sleep(time.Second)
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("Frames still running after its context ended")
		}
	})
}
