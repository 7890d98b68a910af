package client

import (
	"net/netip"

	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/route"
)

// claimant is one server as the route plan sees it: what it wants routed
// and the addresses its session uses.
type claimant struct {
	name    string
	desired []netip.Prefix // the server's routes, already narrowed to the configured subset
	address netip.Prefix   // the client's tunnel address from this server (zero before the first session)
	gateway netip.Addr     // the server's own tunnel address
	// address6 and gateway6 are the IPv6 ones, zero when the server has
	// no pool6.
	address6 netip.Prefix
	gateway6 netip.Addr
}

// routePlan is what every server's routes add up to on the one TUN device.
type routePlan struct {
	// owner maps each installed prefix to the index of the server whose
	// session carries it; the TUN read loop's table is built from it.
	owner map[netip.Prefix]int
	// gateways maps a server's gateway address to the server, for the
	// diagnostics path (ping the gateway); a gateway address two servers
	// share goes to the first.
	gateways map[netip.Addr]int
	// conflicts lists, per server index, the prefixes it wanted that
	// another server owns, with that server's name.
	conflicts map[int]map[netip.Prefix]string
	// routes are the kernel routes, with the owner's address of the
	// route's family as preferred source when the TUN carries more than
	// one address of that family.
	routes []route.Route
	// addrs are the TUN's addresses: every server's, each once.
	addrs []netip.Prefix
}

// planRoutes decides which server carries each prefix. A prefix belongs to
// the server that claimed it first: an owner in prev (by name) keeps it as
// long as it still wants it, and otherwise servers claim in config order.
// A second server that wants the same prefix does not get it (gtun does not
// make two sessions fight over a route); the conflict shows in its status.
// Different but overlapping prefixes are no conflict: the longest match wins,
// in the TUN read loop as in the kernel.
//
// Each server gives the client an address from its own pool, and a server's
// anti-spoofing accepts only that address as source. Pools of several
// servers may be the same: the TUN then carries one or several addresses of
// one subnet, and every route names its owner's address as source, so
// locally originated packets leave with the address their server expects.
func planRoutes(cs []claimant, prev map[netip.Prefix]string) routePlan {
	p := routePlan{owner: map[netip.Prefix]int{}, gateways: map[netip.Addr]int{}, conflicts: map[int]map[netip.Prefix]string{}}
	index := map[string]int{}
	for i, c := range cs {
		index[c.name] = i
	}
	for pfx, name := range prev {
		if i, ok := index[name]; ok && wants(cs[i], pfx) {
			p.owner[pfx] = i
		}
	}
	for i, c := range cs {
		for _, pfx := range c.desired {
			o, owned := p.owner[pfx]
			switch {
			case !owned:
				p.owner[pfx] = i
			case o != i:
				if p.conflicts[i] == nil {
					p.conflicts[i] = map[netip.Prefix]string{}
				}
				p.conflicts[i][pfx] = cs[o].name
			}
		}
	}
	seen := map[netip.Addr]bool{}
	var n4, n6 int // addresses of each family on the TUN
	for i, c := range cs {
		for _, a := range []netip.Prefix{c.address, c.address6} {
			if a.IsValid() && !seen[a.Addr()] {
				seen[a.Addr()] = true
				p.addrs = append(p.addrs, a)
				if a.Addr().Is4() {
					n4++
				} else {
					n6++
				}
			}
		}
		for _, gw := range []netip.Addr{c.gateway, c.gateway6} {
			if _, dup := p.gateways[gw]; gw.IsValid() && !dup {
				p.gateways[gw] = i
			}
		}
	}
	for i, c := range cs {
		for _, pfx := range c.desired {
			if p.owner[pfx] != i {
				continue
			}
			r := route.Route{Prefix: pfx}
			switch {
			case pfx.Addr().Is4() && n4 > 1 && c.address.IsValid():
				r.Src = c.address.Addr()
			case !pfx.Addr().Is4() && n6 > 1 && c.address6.IsValid():
				r.Src = c.address6.Addr()
			}
			p.routes = append(p.routes, r)
		}
	}
	return p
}

func wants(c claimant, pfx netip.Prefix) bool {
	for _, d := range c.desired {
		if d == pfx {
			return true
		}
	}
	return false
}

// table builds the TUN read loop's longest-prefix table from the plan.
func (p routePlan) table(ups []*upstream) *packet.Table[*upstream] {
	m := make(map[netip.Prefix]*upstream, len(p.owner)+len(p.gateways))
	for gw, i := range p.gateways {
		m[netip.PrefixFrom(gw, gw.BitLen())] = ups[i]
	}
	for pfx, i := range p.owner {
		m[pfx] = ups[i]
	}
	return packet.NewTable(m)
}
