package client

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/route"
)

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// lookup returns the name of the server the TUN read loop picks for dst.
func lookup(t *testing.T, p routePlan, servers []*upstream, dst string) string {
	t.Helper()
	up, ok := p.table(servers).Lookup(addr(dst))
	if !ok {
		return ""
	}
	return up.name
}

func servers(names ...string) []*upstream {
	var out []*upstream
	for _, n := range names {
		out = append(out, newUpstream(config.ServerEntry{Name: n}))
	}
	return out
}

// Two clusters with overlapping real CIDRs, mapped to distinct virtual
// prefixes by their gtunds: every packet goes to the session whose routes
// match, by longest prefix, including nested prefixes of two servers.
func TestPlanRoutesPicksSessionByLongestPrefix(t *testing.T) {
	cs := []claimant{
		{name: "c1", desired: pfx("100.100.0.0/16", "100.110.0.0/16", "10.0.0.0/8"),
			address: netip.MustParsePrefix("100.64.240.2/24"), gateway: addr("100.64.240.1")},
		{name: "c2", desired: pfx("100.101.0.0/16", "100.111.0.0/16", "10.20.0.0/16"),
			address: netip.MustParsePrefix("100.64.241.2/24"), gateway: addr("100.64.241.1")},
	}
	p := planRoutes(cs, nil)
	sv := servers("c1", "c2")
	for dst, want := range map[string]string{
		"100.100.1.20":  "c1",
		"100.110.0.10":  "c1",
		"100.101.1.20":  "c2",
		"100.111.0.10":  "c2",
		"10.1.2.3":      "c1",
		"10.20.1.1":     "c2", // more specific than c1's 10.0.0.0/8
		"100.64.240.1":  "c1", // gateways
		"100.64.241.1":  "c2",
		"100.102.1.20":  "", // nobody's
		"192.168.1.1":   "",
		"100.64.241.77": "", // another client of c2: not ours to send
	} {
		if got := lookup(t, p, sv, dst); got != want {
			t.Errorf("%s -> %q, want %q", dst, got, want)
		}
	}
	if len(p.conflicts) != 0 {
		t.Errorf("conflicts %v, want none", p.conflicts)
	}
	// Two addresses on the TUN: each route names its server's address.
	wantRoutes := map[netip.Prefix]netip.Addr{}
	for _, r := range p.routes {
		wantRoutes[r.Prefix] = r.Src
	}
	for _, c := range cs {
		for _, d := range c.desired {
			if wantRoutes[d] != c.address.Addr() {
				t.Errorf("route %s src %v, want %s", d, wantRoutes[d], c.address.Addr())
			}
		}
	}
	if !slices.Equal(p.addrs, pfx("100.64.240.2/24", "100.64.241.2/24")) {
		t.Errorf("addrs %v", p.addrs)
	}
}

// A prefix two servers push stays with the one that had it; the other
// shows a conflict. The owner keeps it across re-plans (reconnects, pushes
// of the other), and hands it over only when it no longer wants it.
func TestPlanRoutesConflictFirstOwnerKeeps(t *testing.T) {
	c1 := claimant{name: "c1", desired: pfx("10.244.0.0/16"), address: netip.MustParsePrefix("100.64.240.2/24"), gateway: addr("100.64.240.1")}
	c2 := claimant{name: "c2", address: netip.MustParsePrefix("100.64.240.3/24"), gateway: addr("100.64.240.1")}
	sv := servers("c1", "c2")

	// c2 connected first and owns the prefix; c1 (first in config order)
	// pushes it later: c2 keeps it.
	c2.desired = pfx("10.244.0.0/16", "10.96.0.0/12")
	c1prev := claimant{name: "c1", address: c1.address, gateway: c1.gateway}
	p := planRoutes([]claimant{c1prev, c2}, nil)
	owner := map[netip.Prefix]string{}
	for pf, i := range p.owner {
		owner[pf] = sv[i].name
	}
	p = planRoutes([]claimant{c1, c2}, owner)
	if got := lookup(t, p, sv, "10.244.1.20"); got != "c2" {
		t.Errorf("10.244.1.20 -> %q, want the first owner c2", got)
	}
	if got := p.conflicts[0][netip.MustParsePrefix("10.244.0.0/16")]; got != "c2" {
		t.Errorf("conflicts of c1 = %v, want 10.244.0.0/16 owned by c2", p.conflicts)
	}
	if len(p.conflicts[1]) != 0 {
		t.Errorf("the owner has conflicts: %v", p.conflicts[1])
	}
	n := 0
	for _, r := range p.routes {
		if r.Prefix == netip.MustParsePrefix("10.244.0.0/16") {
			n++
			if r.Src != addr("100.64.240.3") {
				t.Errorf("shared route src %v, want the owner's 100.64.240.3", r.Src)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d kernel routes for the shared prefix, want 1: %v", n, p.routes)
	}
	// The gateway address both share goes to the first in config order.
	if got := lookup(t, p, sv, "100.64.240.1"); got != "c1" {
		t.Errorf("shared gateway -> %q, want c1", got)
	}

	// Without history, config order decides.
	if q := planRoutes([]claimant{c1, c2}, nil); lookup(t, q, sv, "10.244.1.20") != "c1" {
		t.Errorf("without an owner the first server in config order should get it")
	}

	// c2 stops pushing it: c1 takes over, its conflict is gone.
	c2.desired = pfx("10.96.0.0/12")
	p = planRoutes([]claimant{c1, c2}, owner)
	if got := lookup(t, p, sv, "10.244.1.20"); got != "c1" {
		t.Errorf("after c2 dropped it: -> %q, want c1", got)
	}
	if len(p.conflicts) != 0 {
		t.Errorf("conflicts %v after the owner let go", p.conflicts)
	}
}

// One server, or servers that hand out the same address: one address on
// the TUN and routes without a source, exactly as with a single server.
func TestPlanRoutesOneAddressNoSource(t *testing.T) {
	a := netip.MustParsePrefix("100.64.240.2/24")
	for _, cs := range [][]claimant{
		{{name: "c1", desired: pfx("10.244.0.0/16"), address: a}},
		{{name: "c1", desired: pfx("100.100.0.0/16"), address: a}, {name: "c2", desired: pfx("100.101.0.0/16"), address: a}},
	} {
		p := planRoutes(cs, nil)
		if !slices.Equal(p.addrs, []netip.Prefix{a}) {
			t.Errorf("addrs %v, want [%s]", p.addrs, a)
		}
		for _, r := range p.routes {
			if r.Src.IsValid() {
				t.Errorf("route %v has a source; with one address the kernel's choice is right", r)
			}
		}
		if len(p.routes) != len(cs) {
			t.Errorf("routes %v", p.routes)
		}
	}
	// A server never connected yet: no address, its routes (none) absent.
	p := planRoutes([]claimant{{name: "c1", desired: pfx("10.244.0.0/16"), address: a}, {name: "c2"}}, nil)
	if len(p.addrs) != 1 || len(p.routes) != 1 || p.routes[0] != (route.Route{Prefix: pfx("10.244.0.0/16")[0]}) {
		t.Errorf("plan %+v", p)
	}
}

func BenchmarkLookupTwoServers(b *testing.B) {
	p := planRoutes([]claimant{
		{name: "c1", desired: pfx("100.100.0.0/16", "100.110.0.0/16"), address: netip.MustParsePrefix("100.64.240.2/24"), gateway: addr("100.64.240.1")},
		{name: "c2", desired: pfx("100.101.0.0/16", "100.111.0.0/16"), address: netip.MustParsePrefix("100.64.241.2/24"), gateway: addr("100.64.241.1")},
	}, nil)
	tab := p.table(servers("c1", "c2"))
	dst := addr("100.101.1.20")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := tab.Lookup(dst); !ok {
			b.Fatal("no match")
		}
	}
}

// A route one server pushes that covers another server's endpoint is not
// installed: it would send the other tunnel into this one.
func TestSelectRoutesSkipsOtherServersEndpoints(t *testing.T) {
	cfg := &config.Client{Servers: []config.ServerEntry{
		{Name: "c1", Endpoints: []string{"203.0.113.10:9623"}},
		{Name: "c2", Endpoints: []string{"198.51.100.3:9623"}},
	}}
	c := New(cfg, slog.New(slog.DiscardHandler))
	got := c.selectRoutes("c1", cfg.Servers[0], pfx("10.244.0.0/16", "198.51.100.0/24", "203.0.113.0/24"))
	if !slices.Equal(got, pfx("10.244.0.0/16")) {
		t.Errorf("installed %v, want only 10.244.0.0/16 (the others cover an endpoint of c2 or c1)", got)
	}
}

// Two dual-stack servers: the TUN carries both addresses of each, the
// IPv6 gateways lead to their servers, and each route names its owner's
// address of the route's own family as source.
func TestPlanRoutesDualStack(t *testing.T) {
	cs := []claimant{
		{name: "c1", desired: pfx("10.244.0.0/16", "fd00:10:244::/56"),
			address: netip.MustParsePrefix("100.64.240.2/24"), gateway: addr("100.64.240.1"),
			address6: netip.MustParsePrefix("fd64:240::2/64"), gateway6: addr("fd64:240::1")},
		{name: "c2", desired: pfx("10.20.0.0/16", "fd00:20::/48"),
			address: netip.MustParsePrefix("100.64.241.2/24"), gateway: addr("100.64.241.1"),
			address6: netip.MustParsePrefix("fd64:241::2/64"), gateway6: addr("fd64:241::1")},
	}
	p := planRoutes(cs, nil)
	if want := pfx("100.64.240.2/24", "fd64:240::2/64", "100.64.241.2/24", "fd64:241::2/64"); !slices.Equal(p.addrs, want) {
		t.Errorf("addrs %v, want %v", p.addrs, want)
	}
	sv := servers("c1", "c2")
	for dst, want := range map[string]string{
		"fd00:10:244:1::20": "c1", "fd00:20::5": "c2", "fd64:240::1": "c1", "fd64:241::1": "c2", "fd00:30::1": "",
	} {
		if got := lookup(t, p, sv, dst); got != want {
			t.Errorf("%s goes to %q, want %q", dst, got, want)
		}
	}
	src := map[netip.Prefix]netip.Addr{}
	for _, r := range p.routes {
		src[r.Prefix] = r.Src
	}
	for r, want := range map[string]string{
		"10.244.0.0/16": "100.64.240.2", "fd00:10:244::/56": "fd64:240::2", "10.20.0.0/16": "100.64.241.2", "fd00:20::/48": "fd64:241::2",
	} {
		if got := src[netip.MustParsePrefix(r)]; got.String() != want {
			t.Errorf("route %s source %s, want %s", r, got, want)
		}
	}
	// One server with both families: one address of each, so no source
	// is needed for either.
	p = planRoutes(cs[:1], nil)
	for _, r := range p.routes {
		if r.Src.IsValid() {
			t.Errorf("route %s has source %s with one address per family", r.Prefix, r.Src)
		}
	}
}

// dns_suffix renames the cluster domain and the pushed domains under it,
// and leaves the others (a reverse zone); without the cluster domain among
// the applied ones it renames nothing and says why.
func TestRenamedDomains(t *testing.T) {
	applied := []string{"cluster.local", "svc.cluster.local", "244.10.in-addr.arpa"}
	d, r, note := renamed(applied, "hk", "cluster.local")
	if !slices.Equal(d, []string{"hk", "svc.hk", "244.10.in-addr.arpa"}) || len(r) != 1 || r[0].Local != "hk" || r[0].Cluster != "cluster.local" || note != "" {
		t.Errorf("renamed: %v %v %q", d, r, note)
	}
	d, r, note = renamed(applied, "", "")
	if !slices.Equal(d, applied) || r != nil || note != "" {
		t.Errorf("no suffix: %v %v %q", d, r, note)
	}
	d, r, note = renamed([]string{"corp.example"}, "hk", "cluster.local")
	if !slices.Equal(d, []string{"corp.example"}) || r != nil || !strings.Contains(note, "no domain cluster.local") {
		t.Errorf("cluster domain not pushed: %v %v %q", d, r, note)
	}
}
