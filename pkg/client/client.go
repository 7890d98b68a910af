// Package client is gtun's logic: it owns the TUN device, keeps one session
// per configured server (reconnecting with backoff), installs the routes each
// server pushes and keeps them installed, and moves packets between the TUN
// and the session whose routes match the destination.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/control"
	"github.com/gtun/gtun/pkg/dnsname"
	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/metrics"
	"github.com/gtun/gtun/pkg/nat"
	"github.com/gtun/gtun/pkg/nlwatch"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/reconcile"
	"github.com/gtun/gtun/pkg/route"
	"github.com/gtun/gtun/pkg/sdnotify"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/splitdns"
	"github.com/gtun/gtun/pkg/stats"
	"github.com/gtun/gtun/pkg/transport"
	"github.com/gtun/gtun/pkg/tun"
)

// Reconnect backoff: starts small so a blip heals fast, capped low so a
// restarted gtund is back in use within a few seconds.
const (
	backoffMin = 200 * time.Millisecond
	backoffMax = 1500 * time.Millisecond
)

// Client is a running gtun.
type Client struct {
	cfg    *config.Client
	log    *slog.Logger
	rate   *lograte.Limiter
	tun    *tun.Keeper
	routes *route.Reconciler
	events *nlwatch.Hub   // netlink subscriptions of the TUN keeper and the route reconciler
	book   reconcile.Book // heals and fights of every part kept in place

	servers []*serverConn
	// byDst picks the server for a packet read from the TUN (longest prefix).
	byDst atomic.Pointer[packet.Table[*serverConn]]
	mu    sync.Mutex // serialises applying config from the servers
	// owner is the server (by name) each routed prefix belongs to, so the
	// first claimant keeps a prefix another server pushes too; guarded by mu.
	owner map[netip.Prefix]string

	// gateway mode: the nftables table (MSS clamp, and with masquerade one
	// SNAT rule per route)
	natMu      sync.Mutex
	natSpec    nat.Spec
	natApplied bool // natSpec is in the kernel

	dns *splitdns.Manager // split DNS pushed by the servers

	drops stats.Reasons
	wg    sync.WaitGroup
}

// NATTable is the nftables table gtun owns in gateway mode.
func NATTable(tun string) string { return "gtun-" + tun }

// serverConn is the client's side of one [[server]].
type serverConn struct {
	name string // never changes: reloads match servers by name
	sess atomic.Pointer[session.Session]

	mu         sync.Mutex
	entry      config.ServerEntry // replaced by a reload
	state      string             // connecting, connected, reconnecting
	since      time.Time
	endpoint   string
	transport  string // of the running session
	address    netip.Prefix
	gateway    netip.Addr
	mtu        int
	pushed     []netip.Prefix
	desired    []netip.Prefix
	conflicts  map[netip.Prefix]string // desired prefixes another server owns -> its name
	subnetList []netip.Prefix          // this client's networks as the server routes them here
	// subnets: destinations besides its address that a gateway client
	// accepts from this server (its [[peer]] subnets); empty otherwise.
	subnets atomic.Pointer[packet.Table[struct{}]]
	dns     splitdns.Route // split DNS as pushed (not yet checked against the routes)
	// dnsApplied and dnsRefused are the pushed domains the DNS policy
	// took and refused, with why (for status).
	dnsApplied    []string
	dnsRefused    []RefusedDomain
	drops         stats.Reasons // of what the server sent, across sessions
	reconnects    uint64
	lastHandshake time.Time
	lastError     string
	// totals of sessions that ended, so counters survive reconnects
	closedRx, closedTx, closedRxPkts, closedTxPkts uint64
	closedRekeys                                   session.Rekeys
}

// New prepares a client; Run does the work.
func New(cfg *config.Client, log *slog.Logger) *Client {
	c := &Client{cfg: cfg, log: log, rate: lograte.New(log, 10*time.Second), owner: map[netip.Prefix]string{}}
	for _, e := range cfg.Servers {
		sc := &serverConn{name: e.Name, entry: e, state: "connecting", since: time.Now()}
		sc.subnets.Store(packet.NewTable(map[netip.Prefix]struct{}{}))
		c.servers = append(c.servers, sc)
	}
	c.byDst.Store(packet.NewTable(map[netip.Prefix]*serverConn{}))
	return c
}

// Run creates the TUN, connects to every server and serves until ctx ends;
// then it removes its routes and the TUN device.
func (c *Client) Run(ctx context.Context, reload <-chan struct{}) error {
	var err error
	c.events = nlwatch.NewHub(c.log, nil)
	shared := reconcile.Shared{Events: c.events, Book: &c.book}
	// Up from the start, so the reconciler sees a live link once routes arrive.
	if c.tun, err = tun.NewKeeper(c.cfg.Tun, c.cfg.Offload, c.log, shared); err != nil {
		return err
	}
	defer func() {
		c.tun.Close()
		c.log.Info("removed tun device", "tun", c.cfg.Tun)
	}()
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
	c.goRun(func() { c.tun.Run(ctx) })
	c.goRun(func() { c.keepDNS(ctx) })
	c.goRun(func() {
		if err := c.routes.Run(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("route reconciler stopped", "err", err)
		}
	})
	for _, sc := range c.servers {
		c.goRun(func() { c.connectLoop(ctx, sc) })
	}
	c.goRun(func() { c.tunReadLoop(ctx) })
	c.goRun(func() { c.readyLoop(ctx) })
	c.goRun(func() { c.rate.FlushEvery(ctx, 2*time.Second) }) // counts of a stopped flood reach the log
	c.log.Info("gtun started", "tun", c.cfg.Tun, "servers", len(c.servers), "aes", secure.AESImplementation())

	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-reload:
			c.reload()
		}
	}
	c.log.Info("shutting down")
	_ = sdnotify.Stopping()
	for _, sc := range c.servers {
		if s := sc.sess.Load(); s != nil {
			s.Close()
		}
	}
	c.tun.Close() // unblocks the TUN reader
	c.wg.Wait()
	return nil
}

func (c *Client) goRun(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// connectLoop keeps one server connected. The TUN address and routes stay in
// place while it reconnects, so flows resume as soon as the session is back.
func (c *Client) connectLoop(ctx context.Context, sc *serverConn) {
	backoff := backoffMin
	var next *dialed // a session the failback prober set up, to switch to
	for ctx.Err() == nil {
		d := next
		next = nil
		if d == nil {
			var err error
			d, err = c.dial(ctx, sc, c.plan(sc.getEntry()))
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				sc.mu.Lock()
				changed := sc.lastError != err.Error()
				sc.lastError = err.Error()
				sc.mu.Unlock()
				level := slog.LevelDebug
				if changed {
					level = slog.LevelWarn
				}
				c.log.Log(ctx, level, "connect failed", "server", sc.name, "err", err, "retry_in", backoff)
				// Jitter keeps many clients from reconnecting in lockstep after an outage.
				wait := backoff/2 + rand.N(backoff/2+1)
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return
				}
				backoff = min(backoff*2, backoffMax)
				continue
			}
		}
		backoff = backoffMin
		if err := c.applyConfig(sc, d.cfg); err != nil {
			c.log.Error("cannot apply server config", "server", sc.name, "err", err)
			d.sess.Close()
			sc.mu.Lock()
			sc.lastError = err.Error()
			sc.mu.Unlock()
			select {
			case <-time.After(backoffMax):
			case <-ctx.Done():
			}
			continue
		}
		sc.mu.Lock()
		if !sc.lastHandshake.IsZero() {
			sc.reconnects++
		}
		sc.state, sc.since, sc.endpoint, sc.transport, sc.lastHandshake, sc.lastError = "connected", time.Now(), d.at.endpoint, d.at.transport, time.Now(), ""
		sc.mu.Unlock()
		sc.sess.Store(d.sess)
		c.log.Info("connected", "server", sc.name, "endpoint", d.at.endpoint, "transport", d.at.transport,
			"address", d.cfg.Address, "routes", d.cfg.Routes)
		_ = sdnotify.Status(c.statusLine())

		// Not on the preferred endpoint and transport: keep trying those in
		// the background and move over when one answers.
		runCtx, stopRun := context.WithCancel(ctx)
		probed := make(chan *dialed, 1)
		entry := sc.getEntry()
		if d.at.index > 0 && entry.Failback {
			go func() { probed <- c.failback(runCtx, sc, c.plan(entry)[:d.at.index], stopRun) }()
		} else {
			probed <- nil
		}
		err := d.sess.Run(runCtx, session.Handlers{
			Packet:  func(pkt []byte) { c.fromServer(sc, pkt) },
			Control: func(m *session.Msg) { c.onControl(sc, m) },
		})
		stopRun()
		next = <-probed
		sc.sess.Store(nil)
		sc.addClosed(d.sess)
		d.sess.Close()
		if ctx.Err() != nil {
			if next != nil {
				next.sess.Close()
			}
			return
		}
		if next != nil {
			c.log.Info("moving to the preferred endpoint/transport", "server", sc.name,
				"from", d.at.String(), "to", next.at.String())
			continue
		}
		c.log.Warn("session lost; reconnecting with routes kept", "server", sc.name, "err", err)
		sc.mu.Lock()
		sc.state, sc.since = "reconnecting", time.Now()
		if err != nil {
			sc.lastError = err.Error()
		}
		sc.mu.Unlock()
		_ = sdnotify.Status(c.statusLine())
	}
}

// attempt is one way to reach a server: an endpoint over a transport, at
// its place in the order of preference.
type attempt struct {
	index     int
	endpoint  string
	transport string
}

func (a attempt) String() string { return a.transport + "://" + a.endpoint }

// dialed is a session set up and its config, not yet running.
type dialed struct {
	sess *session.Session
	cfg  *session.Msg
	at   attempt
}

// plan lists the attempts in order of preference: endpoints in the order
// configured, and with transport auto kcp before tcp on each.
func (c *Client) plan(e config.ServerEntry) []attempt {
	var out []attempt
	for _, ep := range e.Endpoints {
		if e.Transport == transport.Auto {
			out = append(out, attempt{len(out), ep, transport.KCP}, attempt{len(out) + 1, ep, transport.TCP})
		} else {
			out = append(out, attempt{len(out), ep, e.Transport})
		}
	}
	return out
}

// failback tries the attempts preferred over the running one every
// FailbackInterval; when one answers it stops the running session (stop)
// and returns the new one. It returns nil when ctx ends first.
func (c *Client) failback(ctx context.Context, sc *serverConn, preferred []attempt, stop func()) *dialed {
	interval := sc.getEntry().FailbackInterval
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
		d, err := c.dial(ctx, sc, preferred)
		if err != nil {
			c.log.Debug("failback: preferred endpoint/transport still unavailable", "server", sc.name, "err", err)
			continue
		}
		stop()
		return d
	}
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
			parts = append(parts, fmt.Sprintf("%s: connected as %s via %s, %d/%d routes installed", s.Name, s.Address, s.Endpoint, n, len(s.Routes)))
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

// dial tries the attempts in order and returns the first session up.
func (c *Client) dial(ctx context.Context, sc *serverConn, plan []attempt) (*dialed, error) {
	var errs []error
	entry := sc.getEntry()
	for _, at := range plan {
		sess, cfg, err := c.dialOne(ctx, entry, at)
		if err == nil {
			return &dialed{sess: sess, cfg: cfg, at: at}, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s: %w", at, err))
	}
	return nil, errors.Join(errs...)
}

// kcpHandshakeTimeout bounds the wait for a server over UDP, which is
// silence, not an error, when UDP is blocked: auto then falls back to tcp
// within a few seconds.
const kcpHandshakeTimeout = 3 * time.Second

func (c *Client) dialOne(ctx context.Context, entry config.ServerEntry, at attempt) (*session.Session, *session.Msg, error) {
	hcfg := secure.ClientConfig{Private: c.cfg.PrivateKey, ServerKey: entry.PublicKey}
	var sconn *secure.Conn
	if at.transport == transport.KCP {
		// The handshake is the datagram layer's; kcp runs inside its session.
		sc, _, err := transport.DialKCP(ctx, at.endpoint, transport.Options{FECData: entry.FECData, FECParity: entry.FECParity}, hcfg, kcpHandshakeTimeout)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, nil, fmt.Errorf("no answer over kcp (UDP blocked, kcp not in the server's transports, or the server does not know this key): %w", err)
			}
			return nil, nil, err
		}
		sconn = sc
	} else {
		raw, err := transport.DialTCP(ctx, at.endpoint)
		if err != nil {
			return nil, nil, err
		}
		// The handshake has its own deadline; a shutdown must not wait for it.
		stop := context.AfterFunc(ctx, func() { raw.Close() })
		sconn, err = secure.Client(raw, hcfg)
		stop()
		if err != nil {
			raw.Close()
			return nil, nil, err
		}
	}
	hostname, _ := os.Hostname()
	hello := &session.Msg{Type: session.TypeHello, Version: secure.ProtocolVersion, Name: hostname, Transport: at.transport}
	if at.transport == transport.KCP {
		hello.FECData, hello.FECParity = entry.FECData, entry.FECParity
	}
	sess, cfg, err := session.Dial(ctx, sconn, hello, 0, c.log)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Version != secure.ProtocolVersion {
		sess.Close()
		return nil, nil, &secure.VersionError{Local: secure.ProtocolVersion, Remote: cfg.Version}
	}
	return sess, cfg, nil
}

func (c *Client) onControl(sc *serverConn, m *session.Msg) {
	if m.Type != session.TypeConfig {
		c.log.Debug("ignoring control message", "server", sc.name, "type", m.Type)
		return
	}
	if err := c.applyConfig(sc, m); err != nil {
		c.log.Error("cannot apply updated server config", "server", sc.name, "err", err)
	}
}

// applyConfig configures the TUN from the server's config and sets the
// desired routes: what the server pushes, narrowed to the configured subset.
func (c *Client) applyConfig(sc *serverConn, m *session.Msg) error {
	addr, err := netip.ParsePrefix(m.Address)
	if err != nil || !addr.Addr().Is4() {
		return fmt.Errorf("server sent a bad address %q", m.Address)
	}
	gw, err := netip.ParseAddr(m.Gateway)
	if err != nil {
		return fmt.Errorf("server sent a bad gateway %q", m.Gateway)
	}
	if m.MTU < 576 || m.MTU > packet.MaxIP {
		return fmt.Errorf("server sent a bad mtu %d", m.MTU)
	}
	var pushed, subnets []netip.Prefix
	for _, r := range m.Routes {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			return fmt.Errorf("server pushed a bad route %q", r)
		}
		pushed = append(pushed, p.Masked())
	}
	for _, r := range m.Subnets {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			return fmt.Errorf("server sent a bad subnet %q", r)
		}
		subnets = append(subnets, p.Masked())
	}
	if len(subnets) > 0 && !c.cfg.Gateway {
		c.rate.Log(slog.LevelWarn, "subnets:"+sc.name, "the server routes subnets to this client, but gateway mode is off: packets to them are dropped (set gateway = true)",
			"server", sc.name, "subnets", subnets)
		subnets = nil
	}
	desired := c.selectRoutes(sc.name, sc.getEntry(), pushed)
	var dns splitdns.Route
	if m.DNS != nil {
		for _, s := range m.DNS.Servers {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("server sent a bad dns server %q", s)
			}
			dns.Servers = append(dns.Servers, a)
		}
		for _, d := range m.DNS.Domains {
			dns.Domains = append(dns.Domains, dnsname.Normalize(d)) // checked by the DNS policy when applied
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	sc.mu.Lock()
	sc.address, sc.gateway, sc.mtu, sc.pushed, sc.desired, sc.subnetList, sc.dns = addr, gw, m.MTU, pushed, desired, subnets, dns
	sc.mu.Unlock()
	st := map[netip.Prefix]struct{}{}
	for _, p := range subnets {
		st[p] = struct{}{}
	}
	sc.subnets.Store(packet.NewTable(st))
	c.applyLocked()
	return nil
}

// selectRoutes picks, from what a server pushes, the routes to install: the
// configured subset (all when none is configured), never one that covers
// the endpoint of this or any other server (that would send a tunnel into
// itself or into another one).
func (c *Client) selectRoutes(name string, entry config.ServerEntry, pushed []netip.Prefix) []netip.Prefix {
	endpoints := slices.Clone(entry.Endpoints)
	for _, sc := range c.servers {
		if sc.name != name {
			endpoints = append(endpoints, sc.getEntry().Endpoints...)
		}
	}
	usable := slices.DeleteFunc(slices.Clone(pushed), func(p netip.Prefix) bool {
		for _, ep := range endpoints {
			if ap, err := netip.ParseAddrPort(ep); err == nil && p.Contains(ap.Addr()) {
				c.rate.Log(slog.LevelWarn, "loop:"+p.String(), "pushed route covers a server endpoint; not installed", "server", name, "route", p, "endpoint", ep)
				return true
			}
		}
		return false
	})
	if len(entry.Routes) == 0 {
		return usable
	}
	var desired []netip.Prefix
	for _, want := range entry.Routes {
		if packet.Within(want, usable) {
			desired = append(desired, want)
		} else {
			c.rate.Log(slog.LevelWarn, "notpushed:"+want.String(), "configured route is not served by the server; not installed", "server", name, "route", want)
		}
	}
	return desired
}

// applyLocked sets the TUN's addresses and MTU, the routes and the packet
// table from what every server gave (see planRoutes for who gets a prefix
// two servers want). Call with c.mu held.
func (c *Client) applyLocked() {
	cs := make([]claimant, len(c.servers))
	mtu := 0
	for i, s := range c.servers {
		s.mu.Lock()
		cs[i] = claimant{name: s.name, desired: s.desired, address: s.address, gateway: s.gateway}
		if s.address.IsValid() && (mtu == 0 || s.mtu < mtu) {
			mtu = s.mtu // one device for all servers: the smallest fits all
		}
		s.mu.Unlock()
	}
	plan := planRoutes(cs, c.owner)
	c.owner = make(map[netip.Prefix]string, len(plan.owner))
	for p, i := range plan.owner {
		c.owner[p] = c.servers[i].name
	}
	for i, s := range c.servers {
		s.mu.Lock()
		for p, other := range plan.conflicts[i] {
			if _, known := s.conflicts[p]; !known {
				c.log.Warn("route pushed by two servers; it stays with the first", "route", p, "server", s.name, "owner", other)
			}
		}
		s.conflicts = plan.conflicts[i]
		s.mu.Unlock()
	}
	// An address an earlier session was given goes; the Keeper restores the
	// current ones if anyone removes them.
	if err := c.tun.Set(mtu, plan.addrs); err != nil {
		c.log.Error("configure tun device; the keeper retries", "tun", c.cfg.Tun, "err", err)
	}
	c.byDst.Store(plan.table(c.servers))
	c.routes.SetDesiredRoutes(plan.routes)
	if c.cfg.Gateway {
		c.applyNAT(plan.owner)
	}
	c.applyDNSLocked()
}

func (sc *serverConn) getEntry() config.ServerEntry {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.entry
}

// fromServer writes a frame from a server to the TUN if checkFromServer
// lets it through.
func (c *Client) fromServer(sc *serverConn, frame []byte) {
	if reason, detail := c.checkFromServer(sc, frame); reason != "" {
		c.serverDrop(sc, reason, fromServerDrops[reason], detail...)
		return
	}
	if err := c.tun.WriteFrame(frame); err != nil {
		c.serverDrop(sc, "tun_write", "tun write failed", "err", err)
	}
}

// fromServerDrops are the log lines of checkFromServer's drop reasons.
var fromServerDrops = map[string]string{
	"malformed":         "malformed packet from server",
	"bad_offload":       "bad offload header from server",
	"wrong_destination": "packet from server not addressed to this client or its subnets",
	"spoofed_source":    "packet from server with a source outside its routes (and not its own tunnel address)",
}

// checkFromServer decides whether a frame from a server may go into the
// TUN: "" if so, else the drop reason and what to log with it. A server is
// trusted for what its routes cover and no more: the packet must be
// addressed to this client's tunnel address from that server (or, in
// gateway mode, to the subnets it routes here), and its source must be one
// this client routes to that server (the server's routes as this client
// accepted and owns them, so a reply goes back the way the packet came) or
// the server's own tunnel address (its pings' answers, its ICMP errors).
// Sources of a cluster's connections to this client's subnets
// (site-to-site) are inside its routes too; with a map they are the
// virtual ones. ICMP errors are judged by the packet they quote.
func (c *Client) checkFromServer(sc *serverConn, frame []byte) (reason string, detail []any) {
	if len(frame) <= packet.VnetHdrLen {
		return "malformed", []any{"server", sc.name, "err", "short frame"}
	}
	pkt := frame[packet.VnetHdrLen:]
	if h := packet.DecodeVnetHdr(frame); !h.Plain() {
		if err := h.Validate(pkt); err != nil {
			return "bad_offload", []any{"server", sc.name, "err", err}
		}
	}
	src, dst, err := packet.Addrs(pkt)
	if err != nil {
		return "malformed", []any{"server", sc.name, "err", err}
	}
	sc.mu.Lock()
	ours, gateway := dst == sc.address.Addr(), src == sc.gateway
	sc.mu.Unlock()
	if !ours {
		// Gateway mode: the server routes this client's subnets here.
		if _, ok := sc.subnets.Load().Lookup(dst); !ok {
			return "wrong_destination", []any{"server", sc.name, "dst", dst}
		}
	}
	if !gateway && !c.routesTo(src, sc) {
		// An ICMP error from a router on the cluster's side (fragmentation
		// needed, unreachable) has that router's source, often outside
		// the routes; it is about a packet this client sent to the
		// server, and trusted as far as that packet's destination is.
		if about, ok := packet.ErrorAbout(pkt); !ok || !c.routesTo(about, sc) {
			return "spoofed_source", []any{"server", sc.name, "src", src}
		}
	}
	return "", nil
}

// routesTo reports whether this client sends packets for a to sc.
func (c *Client) routesTo(a netip.Addr, sc *serverConn) bool {
	owner, ok := c.byDst.Load().Lookup(a)
	return ok && owner == sc
}

// serverDrop counts a drop of what a server sent, in total and for the
// server, and logs it at a bounded rate per server and reason.
func (c *Client) serverDrop(sc *serverConn, reason, msg string, args ...any) {
	c.drops.Inc(reason)
	sc.drops.Inc(reason)
	c.rate.Log(slog.LevelWarn, "drop:"+reason+":"+sc.name, msg, args...)
}

func (c *Client) drop(reason, msg string, args ...any) {
	c.drops.Inc(reason)
	c.rate.Log(slog.LevelWarn, "drop:"+reason, msg, args...)
}

func (c *Client) tunReadLoop(ctx context.Context) {
	c.tun.Frames(ctx, func(b *packet.Buf, dst netip.Addr) {
		sc, ok := c.byDst.Load().Lookup(dst)
		if !ok {
			packet.Put(b)
			c.drops.Inc("no_route")
			return
		}
		sess := sc.sess.Load()
		if sess == nil {
			packet.Put(b)
			c.drops.Inc("no_session") // reconnecting: the route stays, the packet cannot
			return
		}
		if !sess.Send(b) {
			c.drops.Inc("queue_full")
		}
	}, func() { c.drops.Inc("malformed") })
}

// reload re-reads the config file. A server's route subset applies live; a
// change of its endpoints, transport or key makes it reconnect. Other keys
// need a restart. A bad file changes nothing.
func (c *Client) reload() {
	_ = sdnotify.Notify("RELOADING=1")
	defer func() { _ = sdnotify.Notify("READY=1", "STATUS="+c.statusLine()) }()
	n, err := config.LoadClient(c.cfg.File)
	if err != nil {
		c.log.Error("reload failed; the running config stays", "err", err)
		return
	}
	restart := config.RestartOnly(c.cfg, n)
	byName := map[string]config.ServerEntry{}
	for _, e := range n.Servers {
		byName[e.Name] = e
	}
	known := map[string]bool{}
	var reconnect []*serverConn
	c.mu.Lock()
	for _, sc := range c.servers {
		known[sc.name] = true
		ne, ok := byName[sc.name]
		if !ok {
			restart = append(restart, "server "+sc.name+" removed")
			continue
		}
		sc.mu.Lock()
		old := sc.entry
		sc.entry = ne
		pushed := sc.pushed
		sc.mu.Unlock()
		if !slices.Equal(old.Endpoints, ne.Endpoints) || old.Transport != ne.Transport || old.PublicKey != ne.PublicKey ||
			old.FECData != ne.FECData || old.FECParity != ne.FECParity {
			reconnect = append(reconnect, sc)
		}
		desired := c.selectRoutes(sc.name, ne, pushed)
		sc.mu.Lock()
		sc.desired = desired
		sc.mu.Unlock()
	}
	c.applyLocked()
	c.mu.Unlock()
	for _, e := range n.Servers {
		if !known[e.Name] {
			restart = append(restart, "server "+e.Name+" added")
		}
	}
	if len(restart) > 0 {
		c.log.Warn("reload: these changes apply only with a restart; keeping the running values", "changes", restart)
	}
	for _, sc := range reconnect {
		c.log.Info("reload: server endpoints, transport or key changed; reconnecting", "server", sc.name)
		if s := sc.sess.Load(); s != nil {
			s.Close()
		}
	}
	c.log.Info("config reloaded")
}
