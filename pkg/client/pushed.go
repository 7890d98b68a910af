package client

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/dnsname"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/splitdns"
)

func (c *Client) onControl(up *upstream, m *session.Msg) {
	if m.Type != session.TypeConfig {
		c.log.Debug("ignoring control message", "server", up.name, "type", m.Type)
		return
	}
	if err := c.applyConfig(up, m); err != nil {
		c.log.Error("cannot apply updated server config", "server", up.name, "err", err)
	}
}

// applyConfig configures the TUN from the server's config and sets the
// desired routes: what the server pushes, narrowed to the configured subset.
func (c *Client) applyConfig(up *upstream, m *session.Msg) error {
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
	var addr6 netip.Prefix
	var gw6 netip.Addr
	if m.Address6 != "" || m.Gateway6 != "" {
		if addr6, err = netip.ParsePrefix(m.Address6); err != nil || !addr6.Addr().Is6() || addr6.Addr().Is4In6() {
			return fmt.Errorf("server sent a bad IPv6 address %q", m.Address6)
		}
		if gw6, err = netip.ParseAddr(m.Gateway6); err != nil || !gw6.Is6() || gw6.Is4In6() {
			return fmt.Errorf("server sent a bad IPv6 gateway %q", m.Gateway6)
		}
		if m.MTU < 1280 {
			return fmt.Errorf("server sent an IPv6 address with mtu %d (IPv6 needs 1280)", m.MTU)
		}
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
	if c.noIPv6 && (addr6.IsValid() || slices.ContainsFunc(pushed, is6)) {
		c.rate.Log(slog.LevelWarn, "noipv6:"+up.name, "the server gives IPv6 addresses or routes, but IPv6 is off on this host's tun device: IPv4 only",
			"server", up.name, "address6", m.Address6)
		addr6, gw6 = netip.Prefix{}, netip.Addr{}
		pushed = slices.DeleteFunc(pushed, is6)
		subnets = slices.DeleteFunc(subnets, is6)
	}
	if len(subnets) > 0 && !c.cfg.Gateway {
		c.rate.Log(slog.LevelWarn, "subnets:"+up.name, "the server routes subnets to this client, but gateway mode is off: packets to them are dropped (set gateway = true)",
			"server", up.name, "subnets", subnets)
		subnets = nil
	}
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
	desired := c.selectRoutes(up.name, up.getEntry(), pushed) // reads every server's endpoints: under c.mu
	up.mu.Lock()
	up.mtu, up.pushed, up.desired, up.subnetList, up.dns = m.MTU, pushed, desired, subnets, dns
	up.mu.Unlock()
	st := map[netip.Prefix]struct{}{}
	for _, p := range subnets {
		st[p] = struct{}{}
	}
	up.tunnel.Store(&tunnelAddrs{address: addr, gateway: gw, address6: addr6, gateway6: gw6, subnets: packet.NewTable(st)})
	c.applyLocked()
	return nil
}

// selectRoutes picks, from what a server pushes, the routes to install: the
// configured subset (all when none is configured), never one that covers
// the endpoint of this or any other server (that would send a tunnel into
// itself or into another one). Call with c.mu held.
func (c *Client) selectRoutes(name string, entry config.ServerEntry, pushed []netip.Prefix) []netip.Prefix {
	endpoints := slices.Clone(entry.Endpoints)
	for _, up := range c.upstreams {
		if up.name != name {
			endpoints = append(endpoints, up.getEntry().Endpoints...)
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
	cs := make([]claimant, len(c.upstreams))
	mtu := 0
	for i, s := range c.upstreams {
		t := s.tunnel.Load()
		s.mu.Lock()
		cs[i] = claimant{name: s.name, desired: s.desired, address: t.address, gateway: t.gateway, address6: t.address6, gateway6: t.gateway6}
		if t.address.IsValid() && (mtu == 0 || s.mtu < mtu) {
			mtu = s.mtu // one device for all servers: the smallest fits all
		}
		s.mu.Unlock()
	}
	plan := planRoutes(cs, c.owner)
	c.owner = make(map[netip.Prefix]string, len(plan.owner))
	for p, i := range plan.owner {
		c.owner[p] = c.upstreams[i].name
	}
	for i, s := range c.upstreams {
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
	if err := c.dev.Set(mtu, plan.addrs); err != nil {
		c.log.Error("configure tun device; the keeper retries", "tun", c.cfg.Tun, "err", err)
	}
	c.byDst.Store(plan.table(c.upstreams))
	if c.routes != nil { // nil in memory: no kernel to route in, no nftables
		c.routes.SetDesiredRoutes(plan.routes)
		if c.cfg.Gateway {
			c.applyNAT(plan.owner)
		}
	}
	c.applyDNSLocked()
}

func is6(p netip.Prefix) bool { return !p.Addr().Is4() }
