package client

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/gtun/gtun/pkg/dnsname"
	"github.com/gtun/gtun/pkg/dnsrewrite"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/pause"
	"github.com/gtun/gtun/pkg/splitdns"
	"github.com/gtun/gtun/pkg/tun"
)

// RefusedDomain is a pushed DNS domain the client did not apply, and why.
type RefusedDomain struct {
	Domain string `json:"domain"`
	Reason string `json:"reason"`
}

// applyDNSLocked hands every server's split DNS to the manager, within
// what this client accepts from that server: the domains its dns_domains
// (or the default policy, see dnsname.Policy) allows, so that no server
// captures public names; and only the DNS servers this client routes into
// the tunnel toward that server (a query to one outside would leave by the
// default route, in clear), or the server's own tunnel address (gtund's
// DNS proxy, which a mapped cluster pushes). A dns_suffix renames the
// server's cluster domain (see renamed). The forwarder listens on the
// first server's tunnel address. Call with c.mu held.
func (c *Client) applyDNSLocked() {
	if c.dns == nil {
		return
	}
	var listen netip.Addr
	for _, s := range c.upstreams {
		if a := s.tunnel.Load().address; !listen.IsValid() && a.IsValid() {
			listen = a.Addr()
		}
	}
	for _, s := range c.upstreams {
		s.mu.Lock()
		var r splitdns.Route
		policy := dnsname.Policy{Accept: s.entry.DNSDomains, Routes: s.desired}
		s.dnsApplied, s.dnsRefused = nil, nil
		for _, d := range s.dns.Domains {
			if err := policy.Check(d); err != nil {
				s.dnsRefused = append(s.dnsRefused, RefusedDomain{Domain: d, Reason: err.Error()})
				c.rate.Log(slog.LevelWarn, "dns-refused:"+s.name+":"+d, "pushed dns domain refused; names under it stay with this host's resolver",
					"server", s.name, "domain", d, "why", err)
				continue
			}
			s.dnsApplied = append(s.dnsApplied, d)
		}
		r.Domains, r.Renames, s.dnsSuffixNote = renamed(s.dnsApplied, s.entry.DNSSuffix, s.entry.DNSClusterDomain)
		if s.dnsSuffixNote != "" {
			c.rate.Log(slog.LevelWarn, "dns-suffix:"+s.name, "dns_suffix not applied", "server", s.name, "why", s.dnsSuffixNote)
		}
		gw := s.tunnel.Load().gateway
		for _, a := range s.dns.Servers {
			if a == gw || packet.Within(netip.PrefixFrom(a, a.BitLen()), s.desired) {
				r.Servers = append(r.Servers, a)
			} else {
				c.rate.Log(slog.LevelWarn, "dns-unrouted:"+s.name+a.String(), "pushed dns server is not within this server's installed routes; not used",
					"server", s.name, "dns_server", a)
			}
		}
		s.mu.Unlock()
		c.dns.Set(s.name, r, listen)
	}
}

// renamed gives the applied domains at or under cluster under suffix
// instead (dns_suffix): svc.cluster.local becomes svc.hk, and names under
// the new domains are asked under the old ones. Without a suffix the
// domains stay. When the server pushes no domain at or under cluster (or
// the client did not take it), nothing is renamed and note says why.
func renamed(applied []string, suffix, cluster string) (domains []string, renames []dnsrewrite.Rename, note string) {
	if suffix == "" {
		return applied, nil, ""
	}
	for _, d := range applied {
		if !dnsname.Under(d, cluster) {
			domains = append(domains, d)
			continue
		}
		domains = append(domains, strings.TrimSuffix(d, cluster)+suffix)
		renames = []dnsrewrite.Rename{{Local: suffix, Cluster: cluster}}
	}
	if renames == nil {
		note = fmt.Sprintf("the server's split dns has no domain %s (or under it) taken by this client; nothing is renamed %s", cluster, suffix)
	}
	return domains, renames, note
}

// keepDNS re-applies the split DNS when the TUN device was recreated
// (systemd-resolved forgets a deleted link's settings).
func (c *Client) keepDNS(ctx context.Context) {
	last, _ := c.book.Heal(tun.HealKind)
	for pause.For(ctx, time.Second) {
		if n, _ := c.book.Heal(tun.HealKind); n != last {
			last = n
			c.dns.Reapply()
		}
	}
}
