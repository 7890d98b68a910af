//go:build !race

// Not built with -race: the race runtime allocates on its own (1
// allocation a frame showed up now and then while earlier tests' sessions
// wound down), and AllocsPerRun counts the whole process. make test runs
// this in its pass without -race.

package transport

import (
	"bytes"
	"testing"

	"github.com/gtun/gtun/pkg/packet"
)

// Sending a TSO frame (segmenting, sealing, one GSO send) allocates
// nothing once the session's buffers exist. The sessions run without kcp
// here: AllocsPerRun counts the whole process's allocations, and kcp-go's
// timers would count too.
func TestSendFrameDoesNotAllocate(t *testing.T) {
	cli := NewDatagrams(loopbackSession(t))
	frame := tsoFrame(make([]byte, 60_000), 1360, 1)
	f := bytes.Clone(frame)
	if err := cli.SendFrame(f); err != nil {
		t.Fatal(err)
	}
	hdrs := [packet.VnetHdrLen + 40]byte(frame)
	allocs := testing.AllocsPerRun(50, func() {
		// SendFrame cuts the frame in place: its headers are the first
		// segment's now (the payload it overwrote does not matter here).
		*(*[packet.VnetHdrLen + 40]byte)(f) = hdrs
		if err := cli.SendFrame(f); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per 60 KB frame", allocs)
	}
}

// Nor do small packets that need no offload work, joined into GSO sends
// (the run's buffer grows once, as it fills).
func TestSendPlainFramesDoesNotAllocate(t *testing.T) {
	cli := NewDatagrams(loopbackSession(t))
	frame := plainUDPFrame(64)
	burst := func() {
		for range 100 {
			if err := cli.SendFrameMore(frame); err != nil {
				t.Fatal(err)
			}
		}
		if err := cli.SendHeld(); err != nil {
			t.Fatal(err)
		}
	}
	burst()
	if allocs := testing.AllocsPerRun(20, burst); allocs != 0 {
		t.Fatalf("%.1f allocations per 100 packets", allocs)
	}
}
