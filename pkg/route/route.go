// Package route keeps a desired set of IPv4/IPv6 prefixes routed onto one
// link (the gtun TUN device) and keeps them there: after the link flaps, is
// recreated with a new index, or someone deletes a route by hand.
//
// # Ownership
//
// Every route the Reconciler installs carries the rtnetlink protocol
// [Protocol] (0x67, 'g'). The protocol field is how the kernel records who
// owns a route (kernel, boot, static, dhcp, bird, ...); using our own value
// lets a pass find exactly the routes gtun made, delete the ones no longer
// wanted, and clean leftovers after a kill -9, without ever touching routes an
// operator or another daemon added. `ip route show proto 0x67` lists them.
//
// # Conflicts: do not fight the operator
//
// If a route for a desired prefix already exists in the table and is not ours
// (another protocol, or another device), the Reconciler leaves it alone: it
// does not replace it, and if it had installed its own route for that prefix
// (say, at a different metric) it withdraws it so the operator's route is the
// one in effect. [Reconciler.Status] reports such a prefix as not installed
// with Conflict describing the other route, and the conflict is logged at
// warn once each time it changes. When the other route goes away, the next
// pass installs ours.
//
// # Source address
//
// A desired route may name a preferred source address (`ip route ... src
// A`): gtun uses it when its TUN carries the addresses of several servers,
// so that a packet to a server's routes leaves with the address that server
// gave (which is what its anti-spoofing accepts). The address must be on the
// host, or the kernel refuses the route; the pass then reports the error and
// retries, which heals once the TUN's address is back. A route of ours with
// another source is replaced in place.
//
// Routes are only added while the link exists and is administratively up (the
// kernel refuses them on a down link); otherwise the prefix is reported as not
// installed and the next event or tick retries. Link state changes are logged
// once, not every pass.
package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"golang.org/x/sys/unix"

	"github.com/gtun/gtun/pkg/nlwatch"
	"github.com/gtun/gtun/pkg/reconcile"
)

// Protocol is the rtnetlink protocol value marking routes gtun owns ('g').
// A custom value (rather than "static" or "boot") is what lets us find and
// clean up only our own routes; see the package comment.
const Protocol = 0x67

const (
	defaultResync = 2 * time.Second
	// debounce coalesces bursts of netlink events (a link flap produces
	// several) into one pass while keeping heal time in milliseconds.
	debounce = 5 * time.Millisecond
	// nlTimeout bounds every netlink request so a wedged socket cannot hang
	// a pass forever.
	nlTimeout = 5 * time.Second
)

// HealKind is the Reconciler's kind in the daemon's reconcile.Book.
const HealKind = "route"

// Options configure a Reconciler.
type Options struct {
	// Link is the device name, e.g. "gtun0". It is resolved by name on every
	// pass because the device may be deleted and recreated with a new index.
	Link string
	// ResyncInterval is the period of the full pass that backs up the
	// netlink subscriptions. Default 2s.
	ResyncInterval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Table is the routing table; 0 means main.
	Table int
	// NetNS is an open file descriptor of the network namespace to work in;
	// 0 means the caller's current namespace. The descriptor must stay open
	// while the Reconciler is used.
	NetNS int
	// Shared: a route that had been installed and went missing counts, when
	// reinstalled by Run, as a heal of HealKind in Shared.Book (with the
	// time since the loss was seen); Run learns of changes from
	// Shared.Events, which must watch the namespace of NetNS. Zero fields:
	// the Reconciler's own.
	Shared reconcile.Shared
}

// Route is one desired route: a prefix on the link, and optionally the
// source address the kernel should prefer for it (zero: the kernel picks).
type Route struct {
	Prefix netip.Prefix
	Src    netip.Addr
}

// RouteStatus is the state of one desired prefix as of the last pass.
type RouteStatus struct {
	Prefix    netip.Prefix
	Installed bool
	// Conflict describes a route for Prefix that gtun does not own and
	// therefore left in place; empty if there is none.
	Conflict string
	// Reason says why the route is not installed when that is not a
	// conflict (link missing or down, kernel error); empty when installed.
	Reason string
}

// Reconciler keeps the desired prefixes routed onto Options.Link. Its methods
// are safe for concurrent use; Run must not be called twice at once.
type Reconciler struct {
	o     Options
	log   *slog.Logger
	loop  *reconcile.Loop
	table int // effective table id (main when Options.Table is 0)

	// linkIndex is the last index seen for the link; the event goroutines
	// use it to tell which notifications concern us.
	linkIndex atomic.Int32

	dmu     sync.Mutex
	desired map[netip.Prefix]netip.Addr // prefix -> preferred source (may be zero)
	// missingSince records when an installed route was seen to vanish
	// (delete event or pass), so the heal time can be measured.
	missingSince map[netip.Prefix]time.Time

	// passMu serialises passes and guards the fields below.
	passMu    sync.Mutex
	h         *netlink.Handle // Run's handle; nil when Run is not active
	prev      map[netip.Prefix]RouteStatus
	linkState string

	stMu   sync.Mutex
	status []RouteStatus
}

// NewReconciler returns a Reconciler with an empty desired set. Nothing is
// touched until Sync, Run or RemoveAll is called.
func NewReconciler(o Options) *Reconciler {
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = defaultResync
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	table := o.Table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	r := &Reconciler{
		o:            o,
		log:          o.Logger.With("link", o.Link),
		table:        table,
		desired:      map[netip.Prefix]netip.Addr{},
		missingSince: map[netip.Prefix]time.Time{},
		prev:         map[netip.Prefix]RouteStatus{},
	}
	r.loop = reconcile.New(reconcile.Options{Kind: HealKind, What: "the routes on " + o.Link, Check: r.check,
		Interval: o.ResyncInterval, Debounce: debounce, Book: o.Shared.Book, Log: r.log})
	return r
}

// Book is where Run counts the heals.
func (r *Reconciler) Book() *reconcile.Book { return r.loop.Book() }

// SetDesired replaces the desired set. Prefixes are normalised (host bits
// cleared); invalid ones are ignored. Routes of ours that are no longer
// desired are removed on the next pass, which is triggered promptly when Run
// is active. It never blocks.
func (r *Reconciler) SetDesired(prefixes []netip.Prefix) {
	routes := make([]Route, 0, len(prefixes))
	for _, p := range prefixes {
		routes = append(routes, Route{Prefix: p})
	}
	r.SetDesiredRoutes(routes)
}

// SetDesiredRoutes is SetDesired with a preferred source address per route.
// A later duplicate of a prefix replaces an earlier one.
func (r *Reconciler) SetDesiredRoutes(routes []Route) {
	d := make(map[netip.Prefix]netip.Addr, len(routes))
	for _, rt := range routes {
		if !rt.Prefix.IsValid() {
			continue
		}
		d[normalize(rt.Prefix)] = rt.Src.Unmap()
	}
	r.dmu.Lock()
	r.desired = d
	for p := range r.missingSince {
		if _, ok := d[p]; !ok {
			delete(r.missingSince, p)
		}
	}
	r.dmu.Unlock()
	r.trigger()
}

// Sync runs one reconcile pass now: it adds missing desired routes and
// deletes routes of ours on the link that are not desired.
func (r *Reconciler) Sync() error {
	r.passMu.Lock()
	defer r.passMu.Unlock()
	h, done, err := r.handle()
	if err != nil {
		return err
	}
	defer done()
	_, err = r.pass(h)
	return err
}

// Status returns the state of each desired prefix from the last pass, sorted
// by prefix string.
func (r *Reconciler) Status() []RouteStatus {
	r.stMu.Lock()
	defer r.stMu.Unlock()
	return slices.Clone(r.status)
}

// RemoveAll deletes every route with our Protocol on the link, whether
// desired or not. A missing link is not an error (the kernel dropped its
// routes with it). Use it at start to clean leftovers of a killed process and
// at stop; at stop, cancel Run first or the next pass reinstalls the routes.
func (r *Reconciler) RemoveAll() error {
	r.passMu.Lock()
	defer r.passMu.Unlock()
	h, done, err := r.handle()
	if err != nil {
		return err
	}
	defer done()

	link, err := h.LinkByName(r.o.Link)
	if err != nil {
		if isNotFound(err) {
			r.setStatusAll("link " + r.o.Link + " not found")
			return nil
		}
		return fmt.Errorf("look up link %s: %w", r.o.Link, err)
	}
	routes, err := r.list(h)
	if err != nil {
		return err
	}
	var errs []error
	for _, rt := range routes {
		if rt.Protocol != Protocol || rt.LinkIndex != link.Attrs().Index {
			continue
		}
		if err := r.del(h, rt); err != nil {
			errs = append(errs, err)
			continue
		}
		r.log.Info("route removed", "prefix", dstPrefix(rt))
	}
	r.setStatusAll("removed")
	return errors.Join(errs...)
}

// Run reconciles until ctx is done: netlink route, link and address
// notifications trigger a pass (debounced by a few milliseconds), and a full
// pass runs every ResyncInterval regardless, in case a notification was lost;
// a failed pass is retried sooner. Reinstalling routes someone deleted is
// bounded and a fight over them is counted (see package reconcile). It
// returns nil when ctx is done and an error only if it cannot start.
func (r *Reconciler) Run(ctx context.Context) error {
	h, err := r.newHandle()
	if err != nil {
		return err
	}
	r.passMu.Lock()
	r.h = h
	r.passMu.Unlock()
	defer func() {
		r.passMu.Lock()
		r.h = nil
		r.passMu.Unlock()
		h.Close()
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := r.o.Shared.Events
	if events == nil {
		var nsp *netns.NsHandle
		if r.o.NetNS > 0 {
			ns := netns.NsHandle(r.o.NetNS)
			nsp = &ns
		}
		events = nlwatch.NewHub(r.log, nsp)
		wg.Go(func() { events.Run(ctx) })
	}
	defer events.Routes.Listen(r.onRoute, r.loop.Kick)()
	defer events.Links.Listen(r.onLink, r.loop.Kick)()
	defer events.Addrs.Listen(r.onAddr, r.loop.Kick)()
	r.loop.Run(ctx)
	return nil
}

// check is Run's pass.
func (r *Reconciler) check() (reconcile.Outcome, error) {
	r.passMu.Lock()
	defer r.passMu.Unlock()
	return r.pass(r.h)
}

// trigger asks Run for a pass without blocking.
func (r *Reconciler) trigger() { r.loop.Kick() }

// handle returns Run's handle if Run is active, else a fresh one and a
// function closing it. Callers hold passMu.
func (r *Reconciler) handle() (*netlink.Handle, func(), error) {
	if r.h != nil {
		return r.h, func() {}, nil
	}
	h, err := r.newHandle()
	if err != nil {
		return nil, nil, err
	}
	return h, h.Close, nil
}

func (r *Reconciler) newHandle() (*netlink.Handle, error) {
	var (
		h   *netlink.Handle
		err error
	)
	if r.o.NetNS > 0 {
		h, err = netlink.NewHandleAt(netns.NsHandle(r.o.NetNS), unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	if err := h.SetSocketTimeout(nlTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("set netlink timeout: %w", err)
	}
	return h, nil
}

func (r *Reconciler) desiredSnapshot() []Route {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	out := make([]Route, 0, len(r.desired))
	for p, src := range r.desired {
		out = append(out, Route{Prefix: p, Src: src})
	}
	slices.SortFunc(out, func(a, b Route) int { return strings.Compare(a.Prefix.String(), b.Prefix.String()) })
	return out
}

func (r *Reconciler) isDesired(p netip.Prefix) bool {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	_, ok := r.desired[p]
	return ok
}

// pass is one reconcile pass; its outcome counts the routes someone else
// deleted that it put back. Callers hold passMu.
func (r *Reconciler) pass(h *netlink.Handle) (reconcile.Outcome, error) {
	var out reconcile.Outcome
	desired := r.desiredSnapshot()
	want := make(map[netip.Prefix]bool, len(desired))
	for _, d := range desired {
		want[d.Prefix] = true
	}

	var (
		idx      int
		up       bool
		linkNote string
	)
	link, err := h.LinkByName(r.o.Link)
	switch {
	case err == nil:
		idx = link.Attrs().Index
		up = link.Attrs().Flags&net.FlagUp != 0
		if !up {
			linkNote = "link " + r.o.Link + " down"
		}
	case isNotFound(err):
		linkNote = "link " + r.o.Link + " not found"
	default:
		return out, fmt.Errorf("look up link %s: %w", r.o.Link, err)
	}
	r.linkIndex.Store(int32(idx))
	r.noteLink(linkNote)

	routes, err := r.list(h)
	if err != nil {
		return out, err
	}
	mine := func(rt netlink.Route) bool {
		return idx != 0 && rt.Protocol == Protocol && rt.LinkIndex == idx
	}

	var errs []error
	byDst := map[netip.Prefix][]netlink.Route{}
	for _, rt := range routes {
		dst := dstPrefix(rt)
		if mine(rt) && !want[dst] {
			if err := r.del(h, rt); err != nil {
				errs = append(errs, err)
			} else {
				r.log.Info("route removed", "prefix", dst)
			}
			continue
		}
		if want[dst] {
			byDst[dst] = append(byDst[dst], rt)
		}
	}

	status := make([]RouteStatus, 0, len(desired))
	now := time.Now()
	for _, d := range desired {
		p := d.Prefix
		prev, seen := r.prev[p]
		st := RouteStatus{Prefix: p}
		var ours *netlink.Route
		var foreign []netlink.Route
		for i, rt := range byDst[p] {
			if mine(rt) {
				ours = &byDst[p][i]
			} else {
				foreign = append(foreign, rt)
			}
		}

		switch {
		case len(foreign) > 0:
			st.Conflict = r.describe(h, foreign)
			r.clearMissing(p)
			if ours != nil {
				// Ours may win on metric; yield so the operator's
				// route is the one in effect.
				if err := r.del(h, *ours); err != nil {
					errs = append(errs, err)
				}
			}
			if st.Conflict != prev.Conflict {
				r.log.Warn("route conflict: a route not owned by gtun exists; leaving it alone",
					"prefix", p, "existing", st.Conflict)
			}
		case linkNote != "":
			// Covers IPv6 routes the kernel keeps on a down link:
			// they carry no traffic, so they don't count.
			st.Reason = linkNote
			if prev.Installed {
				r.markMissing(p, now)
			}
		case ours != nil && routeSrc(*ours) != d.Src:
			// Ours, but with another source (the server's address
			// changed, or more servers share the TUN now): replace it
			// in place, so the prefix never goes unrouted.
			if err := r.replace(h, d, idx); err != nil {
				st.Reason = err.Error()
				errs = append(errs, err)
				if prev.Reason != st.Reason {
					r.log.Warn("route source change failed", "prefix", p, "src", d.Src, "err", err)
				}
				break
			}
			st.Installed = true
			r.clearMissing(p)
			r.log.Info("route source changed", "prefix", p, "src", d.Src, "was", routeSrc(*ours))
		case ours != nil:
			st.Installed = true
			r.clearMissing(p)
		default:
			if prev.Installed {
				r.markMissing(p, now)
			}
			if err := r.add(h, d, idx); err != nil {
				st.Reason = err.Error()
				errs = append(errs, err)
				if prev.Reason != st.Reason {
					r.log.Warn("route add failed", "prefix", p, "err", err)
				}
				break
			}
			st.Installed = true
			if since, ok := r.takeMissing(p); ok && prev.Conflict == "" {
				took := time.Since(since)
				r.log.Info("route healed", "prefix", p, "took", took)
				out.Heals++
				out.Took = took
			} else if !seen || !prev.Installed {
				r.log.Info("route installed", "prefix", p)
			}
		}
		if seen && prev.Conflict != "" && st.Conflict == "" {
			r.log.Info("route conflict cleared", "prefix", p)
		}
		status = append(status, st)
	}

	r.prev = make(map[netip.Prefix]RouteStatus, len(status))
	for _, st := range status {
		r.prev[st.Prefix] = st
	}
	r.stMu.Lock()
	r.status = status
	r.stMu.Unlock()
	return out, errors.Join(errs...)
}

// noteLink logs link state changes once. Callers hold passMu.
func (r *Reconciler) noteLink(note string) {
	if note == r.linkState {
		return
	}
	if note == "" {
		r.log.Info("link present and up; installing routes")
	} else {
		r.log.Warn("routes not installed until link is back", "state", note)
	}
	r.linkState = note
}

func (r *Reconciler) markMissing(p netip.Prefix, t time.Time) {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	if _, ok := r.missingSince[p]; !ok {
		r.missingSince[p] = t
	}
}

func (r *Reconciler) takeMissing(p netip.Prefix) (time.Time, bool) {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	t, ok := r.missingSince[p]
	delete(r.missingSince, p)
	return t, ok
}

func (r *Reconciler) clearMissing(p netip.Prefix) {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	delete(r.missingSince, p)
}

// setStatusAll marks every desired prefix not installed, after RemoveAll.
// Callers hold passMu.
func (r *Reconciler) setStatusAll(reason string) {
	desired := r.desiredSnapshot()
	status := make([]RouteStatus, 0, len(desired))
	r.prev = map[netip.Prefix]RouteStatus{}
	for _, d := range desired {
		st := RouteStatus{Prefix: d.Prefix, Reason: reason}
		status = append(status, st)
		r.prev[d.Prefix] = st
	}
	r.stMu.Lock()
	r.status = status
	r.stMu.Unlock()
}

// list dumps the routing table (both families). An interrupted dump (the
// table changed during it) is retried a few times since its result may be
// incomplete.
func (r *Reconciler) list(h *netlink.Handle) ([]netlink.Route, error) {
	filter := &netlink.Route{Table: r.table}
	var err error
	for range 3 {
		var routes []netlink.Route
		routes, err = h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE)
		if err == nil {
			return routes, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list routes in table %d: %w", r.table, err)
}

// add installs p on the link. It uses an exclusive add rather than a replace
// so that a foreign route appearing between our dump and this call is never
// overwritten; EEXIST just fails the pass, and the retry sees the conflict.
func (r *Reconciler) add(h *netlink.Handle, d Route, idx int) error {
	if err := h.RouteAdd(r.netlinkRoute(d, idx)); err != nil {
		return fmt.Errorf("add route %s dev %s%s: %w", d.Prefix, r.o.Link, srcNote(d.Src), err)
	}
	return nil
}

// replace overwrites our route for d.Prefix (same table, metric and
// device) with one carrying d's source, atomically.
func (r *Reconciler) replace(h *netlink.Handle, d Route, idx int) error {
	if err := h.RouteReplace(r.netlinkRoute(d, idx)); err != nil {
		return fmt.Errorf("replace route %s dev %s%s: %w", d.Prefix, r.o.Link, srcNote(d.Src), err)
	}
	return nil
}

func (r *Reconciler) netlinkRoute(d Route, idx int) *netlink.Route {
	rt := &netlink.Route{
		LinkIndex: idx,
		Dst:       ipNet(d.Prefix),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  Protocol,
	}
	if d.Src.IsValid() {
		rt.Src = net.IP(d.Src.AsSlice())
	}
	if r.o.Table != 0 {
		rt.Table = r.o.Table
	}
	return rt
}

func srcNote(src netip.Addr) string {
	if !src.IsValid() {
		return ""
	}
	return " src " + src.String()
}

// routeSrc is a route's preferred source; zero when it has none.
func routeSrc(rt netlink.Route) netip.Addr {
	a, ok := netip.AddrFromSlice(rt.Src)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

func (r *Reconciler) del(h *netlink.Handle, rt netlink.Route) error {
	if err := h.RouteDel(&rt); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("delete route %s: %w", dstPrefix(rt), err)
	}
	return nil
}

// describe renders routes like `ip route` does, for conflict reports.
func (r *Reconciler) describe(h *netlink.Handle, routes []netlink.Route) string {
	parts := make([]string, 0, len(routes))
	for _, rt := range routes {
		var b strings.Builder
		if rt.Type != 0 && rt.Type != unix.RTN_UNICAST {
			b.WriteString(routeType(rt.Type) + " ")
		}
		b.WriteString(dstPrefix(rt).String())
		if rt.Gw != nil {
			fmt.Fprintf(&b, " via %s", rt.Gw)
		}
		if rt.LinkIndex != 0 {
			name := fmt.Sprintf("if%d", rt.LinkIndex)
			if l, err := h.LinkByIndex(rt.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			fmt.Fprintf(&b, " dev %s", name)
		}
		if len(rt.MultiPath) > 0 {
			fmt.Fprintf(&b, " multipath(%d)", len(rt.MultiPath))
		}
		proto := rt.Protocol.String()
		if rt.Protocol == Protocol {
			proto = "gtun"
		}
		fmt.Fprintf(&b, " proto %s metric %d", proto, rt.Priority)
		parts = append(parts, b.String())
	}
	return strings.Join(parts, "; ")
}

func routeType(t int) string {
	switch t {
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	case unix.RTN_LOCAL:
		return "local"
	default:
		return fmt.Sprintf("type%d", t)
	}
}

// Event handlers: they only decide whether a notification can concern us
// and, if so, ask for a pass. The pass itself always re-reads the kernel.

func (r *Reconciler) onRoute(u netlink.RouteUpdate) {
	if u.Table != r.table {
		return
	}
	idx := int(r.linkIndex.Load())
	dst := dstPrefix(u.Route)
	mine := idx != 0 && u.Protocol == Protocol && u.LinkIndex == idx
	desired := r.isDesired(dst)
	if !mine && !desired {
		return
	}
	switch {
	case u.Type == unix.RTM_NEWROUTE && mine && desired:
		return // our own add echoing back
	case u.Type == unix.RTM_DELROUTE && mine && desired:
		r.markMissing(dst, time.Now())
	}
	r.trigger()
}

func (r *Reconciler) onLink(u netlink.LinkUpdate) {
	a := u.Attrs()
	if a.Name != r.o.Link && a.Index != int(r.linkIndex.Load()) {
		return
	}
	r.trigger()
}

func (r *Reconciler) onAddr(u netlink.AddrUpdate) {
	// Adding an address makes the kernel add a prefix route, which may
	// collide with a desired prefix.
	if u.LinkIndex != int(r.linkIndex.Load()) {
		return
	}
	r.trigger()
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

func normalize(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked()
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

// dstPrefix converts a route's destination; a nil Dst is the default route
// of the route's family.
func dstPrefix(rt netlink.Route) netip.Prefix {
	if rt.Dst == nil {
		if rt.Family == netlink.FAMILY_V6 {
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	ones, bits := rt.Dst.Mask.Size()
	ip := rt.Dst.IP
	if bits == 32 {
		ip = ip.To4()
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, ones).Masked()
}
