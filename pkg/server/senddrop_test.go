package server

import (
	"errors"
	"fmt"
	"testing"

	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/session"
)

func TestSendDrops(t *testing.T) {
	for _, c := range []struct {
		err  error
		want DropReason
	}{
		{session.ErrQueueFull, DropQueueFull},
		{fmt.Errorf("segment: %w", packet.ErrBadVnetHdr), DropBadOffload},
		{packet.ErrMalformed, DropMalformed},
		{errors.New("packet larger than a datagram carries"), DropSendError},
	} {
		if got := sendDrops.For(c.err); got != c.want {
			t.Errorf("sendDrops.For(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}
