package client

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/gtun/gtun/pkg/nlwatch"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/splitdns"
)

// applyDNSLocked hands every server's split DNS to the manager: only the
// DNS servers this client routes into the tunnel toward that server (a
// query to one outside would leave by the default route, in clear). The
// forwarder listens on the first server's tunnel address. Call with c.mu
// held.
func (c *Client) applyDNSLocked() {
	if c.dns == nil {
		return
	}
	var listen netip.Addr
	for _, s := range c.servers {
		s.mu.Lock()
		if !listen.IsValid() && s.address.IsValid() {
			listen = s.address.Addr()
		}
		s.mu.Unlock()
	}
	for _, s := range c.servers {
		s.mu.Lock()
		r := splitdns.Route{Domains: s.dns.Domains}
		for _, a := range s.dns.Servers {
			if packet.Within(netip.PrefixFrom(a, 32), s.desired) {
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

// keepDNS re-applies the split DNS when the TUN device was recreated
// (systemd-resolved forgets a deleted link's settings).
func (c *Client) keepDNS(ctx context.Context) {
	last, _ := c.tun.Heals()
	for nlwatch.Sleep(ctx, time.Second) {
		if n, _ := c.tun.Heals(); n != last {
			last = n
			c.dns.Reapply()
		}
	}
}
