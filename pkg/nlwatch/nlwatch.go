// Package nlwatch keeps a netlink subscription alive. The netlink library
// closes a subscription's channel when its socket fails (e.g. on a receive
// buffer overrun); whoever relies on events must resubscribe and assume
// events were lost, which is what Run does.
package nlwatch

import (
	"context"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/gtun/gtun/pkg/pause"
)

// ReceiveBuffer is the kernel receive buffer asked for each subscription: a
// busy node (many pods, CNI route churn) overflows the default quickly.
const ReceiveBuffer = 1 << 20

const retryMin = 100 * time.Millisecond

// Run subscribes with subscribe and calls handle for every update until ctx
// ends. After every (re)subscription it calls resync, since events may have
// been lost. Failures are retried with backoff up to maxBackoff.
func Run[T any](ctx context.Context, log *slog.Logger, maxBackoff time.Duration,
	subscribe func(ch chan T, done chan struct{}, cb func(error)) error, handle func(T), resync func()) {
	backoff := retryMin
	for {
		ch := make(chan T, 256)
		done := make(chan struct{})
		cb := func(err error) {
			if ctx.Err() == nil {
				log.Debug("netlink subscription error", "err", err)
			}
		}
		if err := subscribe(ch, done, cb); err != nil {
			close(done)
			log.Warn("netlink subscribe failed; retrying", "err", err, "in", backoff)
			if !pause.For(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		resync()
	recv:
		for {
			select {
			case u, ok := <-ch:
				if !ok {
					break recv
				}
				backoff = retryMin
				handle(u)
			case <-ctx.Done():
				close(done)
				// The library goroutine may be blocked sending to
				// ch; drain until it notices the closed socket.
				for range ch {
				}
				return
			}
		}
		close(done)
		if ctx.Err() != nil {
			return
		}
		log.Warn("netlink subscription lost; resubscribing")
		if !pause.For(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// Routes, Links and Addrs are the subscribe functions for Run; ns is the
// namespace to watch, nil for the current one.
func Routes(ns *netns.NsHandle) func(chan netlink.RouteUpdate, chan struct{}, func(error)) error {
	return func(ch chan netlink.RouteUpdate, done chan struct{}, cb func(error)) error {
		return netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
			Namespace: ns, ErrorCallback: cb, ReceiveBufferSize: ReceiveBuffer})
	}
}

// Links subscribes to link updates.
func Links(ns *netns.NsHandle) func(chan netlink.LinkUpdate, chan struct{}, func(error)) error {
	return func(ch chan netlink.LinkUpdate, done chan struct{}, cb func(error)) error {
		return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
			Namespace: ns, ErrorCallback: cb, ReceiveBufferSize: ReceiveBuffer})
	}
}

// Addrs subscribes to address updates.
func Addrs(ns *netns.NsHandle) func(chan netlink.AddrUpdate, chan struct{}, func(error)) error {
	return func(ch chan netlink.AddrUpdate, done chan struct{}, cb func(error)) error {
		return netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
			Namespace: ns, ErrorCallback: cb, ReceiveBufferSize: ReceiveBuffer})
	}
}
