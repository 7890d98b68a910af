// Package client is gtun's logic: it owns the TUN device, keeps one session
// per configured server (reconnecting with backoff), installs the routes each
// server pushes and keeps them installed, and moves packets between the TUN
// and the session whose routes match the destination.
//
// client.go is gtun's lifecycle, upstream.go one server's connection,
// pushed.go what a server pushes and the routes it becomes, reload.go a
// reload, and dataplane.go where every packet goes.
package client

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/control"
	"github.com/gtun/gtun/pkg/device"
	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/metrics"
	"github.com/gtun/gtun/pkg/nat"
	"github.com/gtun/gtun/pkg/nlwatch"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/pause"
	"github.com/gtun/gtun/pkg/reconcile"
	"github.com/gtun/gtun/pkg/route"
	"github.com/gtun/gtun/pkg/sdnotify"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/splitdns"
	"github.com/gtun/gtun/pkg/transport"
	"github.com/gtun/gtun/pkg/tun"
)

// Client is a running gtun.
type Client struct {
	cfg    *config.Client
	log    *slog.Logger
	rate   *lograte.Limiter
	dev    device.Device     // the TUN device: a tun.Keeper, or in tests a memdev
	routes *route.Reconciler // nil in memory (the data plane's tests): no kernel routes
	// dialTCP connects to a server's endpoint: transport.DialTCP, or in
	// the data plane's tests a socketpair to a server in memory.
	dialTCP func(ctx context.Context, endpoint string) (net.Conn, error)
	events  *nlwatch.Hub   // netlink subscriptions of the TUN keeper and the route reconciler
	book    reconcile.Book // heals and fights of every part kept in place

	// upstreams are the [[server]]s, in config order; guarded by mu, and
	// replaced (never changed in place) when a reload adds or removes one,
	// so that servers() hands out a snapshot.
	upstreams []*upstream
	// byDst picks the server for a packet read from the TUN (longest prefix).
	byDst atomic.Pointer[packet.Table[*upstream]]
	mu    sync.Mutex // serialises applying config from the servers
	// owner is the server (by name) each routed prefix belongs to, so the
	// first claimant keeps a prefix another server pushes too; guarded by mu.
	owner map[netip.Prefix]string

	// gateway mode: the nftables table (MSS clamp, and with masquerade one
	// SNAT rule per route)
	natMu      sync.Mutex
	natSpec    nat.Spec
	natApplied bool // natSpec is in the kernel
	// noIPv6: the TUN device has IPv6 off (a kernel without IPv6, or
	// disable_ipv6 set): servers' IPv6 addresses and routes are left out.
	noIPv6   bool
	forward6 atomic.Bool // gateway mode turned net.ipv6.conf.all.forwarding on (a server gave an IPv6 address)

	dns *splitdns.Manager // split DNS pushed by the servers

	drops drops // by the data plane: every server's, and what readDevice dropped
	wg    sync.WaitGroup
}

// NATTable is the nftables table gtun owns in gateway mode.
func NATTable(tun string) string { return "gtun-" + tun }

// New prepares a client; Run does the work.
func New(cfg *config.Client, log *slog.Logger) *Client {
	c := &Client{cfg: cfg, log: log, rate: lograte.New(log, 10*time.Second), owner: map[netip.Prefix]string{}, dialTCP: transport.DialTCP}
	for _, e := range cfg.Servers {
		c.upstreams = append(c.upstreams, newUpstream(e))
	}
	c.byDst.Store(packet.NewTable(map[netip.Prefix]*upstream{}))
	return c
}

// Run creates the TUN, connects to every server and serves until ctx ends;
// then it removes its routes and the TUN device.
func (c *Client) Run(ctx context.Context, reload <-chan struct{}) error {
	var err error
	c.events = nlwatch.NewHub(c.log, nil)
	shared := reconcile.Shared{Events: c.events, Book: &c.book}
	// Up from the start, so the reconciler sees a live link once routes arrive.
	keeper, err := tun.NewKeeper(c.cfg.Tun, c.cfg.Offload, c.log, shared)
	if err != nil {
		return err
	}
	c.dev = keeper
	defer func() {
		c.dev.Close()
		c.log.Info("removed tun device", "tun", c.cfg.Tun)
	}()
	if !tun.IPv6Enabled(c.cfg.Tun) {
		c.noIPv6 = true
		c.log.Info("IPv6 is off on the tun device; servers' IPv6 addresses and routes are not used", "tun", c.cfg.Tun)
	}
	c.routes = route.NewReconciler(route.Options{Link: c.cfg.Tun, Logger: c.log, Shared: shared})
	// Routes of ours left by a killed predecessor on a device of this name.
	if err := c.routes.RemoveAll(); err != nil {
		c.log.Warn("cleaning leftover routes", "err", err)
	}
	defer func() {
		c.routes.SetDesired(nil)
		if err := c.routes.RemoveAll(); err != nil {
			c.log.Error("remove routes", "err", err)
		} else {
			c.log.Info("removed routes")
		}
	}()
	if c.cfg.Gateway {
		if err := c.startGateway(); err != nil {
			return err
		}
		defer c.stopGateway()
	}
	c.dns = splitdns.New(splitdns.Options{Link: c.cfg.Tun, Logger: c.log})
	defer func() {
		if err := c.dns.Close(); err != nil {
			c.log.Error("remove split dns", "err", err)
		}
	}()
	ctl, err := control.Listen(c.cfg.ControlSocket, func() any { return c.Status() }, c.log)
	if err != nil {
		return err
	}
	defer ctl.Close()
	// `gtun reload`: the same reload as SIGHUP, run by the loop below,
	// its error the answer.
	type reloadResult struct {
		restartOnly []string
		err         error
	}
	reloadReq := make(chan chan reloadResult)
	ctl.HandleReload(func() ([]string, error) {
		res := make(chan reloadResult, 1)
		select {
		case reloadReq <- res:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case r := <-res:
			return r.restartOnly, r.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	if c.cfg.MetricsListen != "" {
		m, err := metrics.Listen(c.cfg.MetricsListen, c.log, NewCollector(c.Status))
		if err != nil {
			return err
		}
		defer m.Close()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.cfg.Gateway {
		c.goRun(func() { c.keepNAT(ctx) })
	}
	c.goRun(func() { c.events.Run(ctx) })
	c.goRun(func() { c.dev.Run(ctx) })
	c.goRun(func() { c.keepDNS(ctx) })
	c.goRun(func() {
		if err := c.routes.Run(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("route reconciler stopped", "err", err)
		}
	})
	for _, up := range c.servers() {
		c.startUpstream(ctx, up)
	}
	c.goRun(func() { c.readDevice(ctx) })
	c.goRun(func() { c.readyLoop(ctx) })
	c.goRun(func() { // counts of a stopped flood reach the log
		for pause.For(ctx, 2*time.Second) {
			c.rate.Flush()
			c.flushDropLogs()
		}
	})
	c.log.Info("gtun started", "tun", c.cfg.Tun, "servers", len(c.upstreams), "aes", secure.AESImplementation())

	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-reload:
			_, _ = c.reload(ctx) // logged
		case res := <-reloadReq:
			keys, err := c.reload(ctx)
			res <- reloadResult{keys, err}
		}
	}
	c.log.Info("shutting down")
	_ = sdnotify.Stopping()
	// Each connect loop says goodbye on its session and closes it (ctx
	// ended); closing the sessions here first would cut the goodbye off.
	// The device stays until they are done: their last packets still go
	// to it.
	for _, up := range c.servers() {
		<-up.done
	}
	c.dev.Close() // unblocks the TUN reader
	c.wg.Wait()
	return nil
}

// servers returns the [[server]]s as they are now (a snapshot: the slice
// is replaced, not changed, when servers come or go).
func (c *Client) servers() []*upstream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.upstreams
}

// startUpstream runs up's connect loop until ctx ends or up is removed
// (stopUpstream).
func (c *Client) startUpstream(ctx context.Context, up *upstream) {
	upCtx, stop := context.WithCancel(ctx)
	up.stop, up.done = stop, make(chan struct{})
	c.goRun(func() {
		defer close(up.done)
		c.connectLoop(upCtx, up)
	})
}

// stopUpstream ends a removed server's connect loop and its session, and
// waits for the loop to return: what it carried is then gone from the
// data plane, and the server sees the session end.
func (c *Client) stopUpstream(up *upstream) {
	up.stop()
	if s := up.sess.Load(); s != nil {
		s.Close()
	}
	<-up.done
}

func (c *Client) goRun(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// readyTimeout bounds how long gtun waits before telling systemd it is
// ready when a server stays unreachable: boot must not hang on a remote
// cluster, and gtun keeps retrying anyway. STATUS= then says what is missing.
const readyTimeout = 30 * time.Second

// readyLoop sends READY=1 once every server is connected and all its routes
// are installed on the TUN (or readyTimeout passed).
func (c *Client) readyLoop(ctx context.Context) {
	deadline := time.Now().Add(readyTimeout)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		inPlace := c.inPlace()
		if inPlace || time.Now().After(deadline) {
			line := c.statusLine()
			if err := sdnotify.Ready(line); err != nil {
				c.log.Warn("cannot notify systemd", "err", err)
			}
			c.log.Info("ready", "routes_in_place", inPlace, "status", line)
			return
		}
	}
}

// inPlace reports whether every server has a session and all its routes.
func (c *Client) inPlace() bool {
	for _, s := range c.Status().Servers {
		if s.State != "connected" {
			return false
		}
		for _, r := range s.Routes {
			if !r.Installed {
				return false
			}
		}
	}
	return true
}

// statusLine is the one-line state systemd shows.
func (c *Client) statusLine() string {
	var parts []string
	for _, s := range c.Status().Servers {
		switch s.State {
		case "connected":
			n := 0
			for _, r := range s.Routes {
				if r.Installed {
					n++
				}
			}
			as := s.Address
			if s.Address6 != "" {
				as += " and " + s.Address6
			}
			parts = append(parts, fmt.Sprintf("%s: connected as %s via %s, %d/%d routes installed", s.Name, as, s.Endpoint, n, len(s.Routes)))
		default:
			p := fmt.Sprintf("%s: %s since %s", s.Name, s.State, s.Since.Format(time.TimeOnly))
			if s.LastError != "" {
				p += " (" + s.LastError + ")"
			}
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "; ")
}
