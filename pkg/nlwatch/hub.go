package nlwatch

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Topic is one kind of kernel event (route, link or address changes,
// nftables deletions) shared by every listener of a daemon: one
// subscription, whatever the number of listeners, each event handed to
// each listener in turn. Listeners may come and go while it runs.
type Topic[T any] struct {
	subscribe func(ch chan T, done chan struct{}, cb func(error)) error

	mu        sync.Mutex // serialises changes to listeners
	listeners atomic.Pointer[[]*listener[T]]
	live      atomic.Bool // subscribed: a new listener may have missed events
}

type listener[T any] struct {
	handle func(T)
	resync func()
}

// NewTopic returns a topic subscribing with subscribe (Routes, Links,
// Addrs, or another function of the same shape).
func NewTopic[T any](subscribe func(ch chan T, done chan struct{}, cb func(error)) error) *Topic[T] {
	t := &Topic[T]{subscribe: subscribe}
	t.listeners.Store(&[]*listener[T]{})
	return t
}

// Listen hands every event to handle and calls resync whenever events may
// have been lost (after each subscription, and now if the topic is
// already subscribed, since the listener missed what came before). Both
// run on the topic's goroutine and must not block. The returned function
// removes the listener.
func (t *Topic[T]) Listen(handle func(T), resync func()) (stop func()) {
	l := &listener[T]{handle: handle, resync: resync}
	t.mu.Lock()
	t.listeners.Store(new(append(slices.Clone(*t.listeners.Load()), l)))
	t.mu.Unlock()
	if t.live.Load() {
		resync()
	}
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.listeners.Store(new(slices.DeleteFunc(slices.Clone(*t.listeners.Load()), func(x *listener[T]) bool { return x == l })))
	}
}

// Run keeps the subscription until ctx ends (see the package's Run).
func (t *Topic[T]) Run(ctx context.Context, log *slog.Logger, maxBackoff time.Duration) {
	defer t.live.Store(false)
	Run(ctx, log, maxBackoff, t.subscribe, func(u T) {
		for _, l := range *t.listeners.Load() {
			l.handle(u)
		}
	}, func() {
		t.live.Store(true)
		for _, l := range *t.listeners.Load() {
			l.resync()
		}
	})
}

// Hub is a daemon's rtnetlink subscriptions: one socket each for route,
// link and address changes, shared by the TUN keeper and the route
// reconcilers instead of a socket per part and kind.
type Hub struct {
	Routes *Topic[netlink.RouteUpdate]
	Links  *Topic[netlink.LinkUpdate]
	Addrs  *Topic[netlink.AddrUpdate]

	log *slog.Logger
}

// hubMaxBackoff caps the wait between attempts to subscribe again.
const hubMaxBackoff = 2 * time.Second

// NewHub returns the subscriptions for the namespace ns (nil: the
// current one); they are made by Run.
func NewHub(log *slog.Logger, ns *netns.NsHandle) *Hub {
	return &Hub{Routes: NewTopic(Routes(ns)), Links: NewTopic(Links(ns)), Addrs: NewTopic(Addrs(ns)), log: log}
}

// Run keeps the three subscriptions until ctx ends.
func (h *Hub) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { h.Routes.Run(ctx, h.log.With("netlink", "routes"), hubMaxBackoff) })
	wg.Go(func() { h.Links.Run(ctx, h.log.With("netlink", "links"), hubMaxBackoff) })
	wg.Go(func() { h.Addrs.Run(ctx, h.log.With("netlink", "addresses"), hubMaxBackoff) })
	wg.Wait()
}
