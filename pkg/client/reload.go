package client

import (
	"context"
	"net/netip"
	"slices"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/sdnotify"
	"github.com/gtun/gtun/pkg/splitdns"
)

// reload re-reads the config file. The [[server]] list is live, matched by
// name: a server added starts connecting (its connect loop runs under
// ctx); a server removed is stopped, and its routes, split DNS and gateway
// SNAT rules go with it; a server whose endpoints, transport, key or FEC
// changed reconnects; its routes subset and DNS keys apply in place. The
// other servers' sessions are not touched. Other keys need a restart:
// those that changed are returned, for the answer to `gtun reload`. A bad
// file changes nothing; its error is returned.
func (c *Client) reload(ctx context.Context) (restartOnly []string, err error) {
	_ = sdnotify.Notify("RELOADING=1")
	defer func() { _ = sdnotify.Notify("READY=1", "STATUS="+c.statusLine()) }()
	n, err := config.LoadClient(c.cfg.File)
	if err != nil {
		c.log.Error("reload failed; the running config stays", "err", err)
		return nil, err
	}
	restart := config.RestartOnly(c.cfg, n)
	if len(restart) > 0 {
		c.log.Warn("reload: these changes apply only with a restart; keeping the running values", "changes", restart)
	}
	c.applyServers(ctx, n.Servers)
	c.log.Info("config reloaded")
	return restart, nil
}

// applyServers makes entries the running [[server]] list (see reload).
func (c *Client) applyServers(ctx context.Context, entries []config.ServerEntry) {
	byName := map[string]config.ServerEntry{}
	for _, e := range entries {
		byName[e.Name] = e
	}
	var reconnect, removed, added []*upstream
	c.mu.Lock()
	known := map[string]*upstream{}
	for _, up := range c.upstreams {
		known[up.name] = up
		ne, ok := byName[up.name]
		if !ok {
			removed = append(removed, up)
			continue
		}
		up.mu.Lock()
		old := up.entry
		up.entry = ne
		up.mu.Unlock()
		if !slices.Equal(old.Endpoints, ne.Endpoints) || old.Transport != ne.Transport || old.PublicKey != ne.PublicKey ||
			old.FECData != ne.FECData || old.FECParity != ne.FECParity {
			reconnect = append(reconnect, up)
		}
	}
	// The new list in the file's order: kept servers keep their state,
	// new ones start empty.
	ups := make([]*upstream, 0, len(entries))
	for _, e := range entries {
		up := known[e.Name]
		if up == nil {
			up = newUpstream(e)
			added = append(added, up)
		}
		ups = append(ups, up)
	}
	c.upstreams = ups
	// Routes are chosen again for every server: the endpoints of the
	// others, which a route must not cover, may have changed.
	for _, up := range c.upstreams {
		up.mu.Lock()
		pushed, entry := up.pushed, up.entry
		up.mu.Unlock()
		desired := c.selectRoutes(up.name, entry, pushed)
		up.mu.Lock()
		up.desired = desired
		up.mu.Unlock()
	}
	for _, up := range removed {
		if c.dns != nil {
			c.dns.Set(up.name, splitdns.Route{}, netip.Addr{})
		}
	}
	c.applyLocked()
	c.mu.Unlock()

	for _, up := range removed {
		c.log.Info("reload: server removed; closing its session, its routes and split dns are gone", "server", up.name)
		c.stopUpstream(up)
	}
	for _, up := range added {
		c.log.Info("reload: server added; connecting", "server", up.name)
		c.startUpstream(ctx, up)
	}
	for _, up := range reconnect {
		c.log.Info("reload: server endpoints, transport or key changed; reconnecting", "server", up.name)
		if s := up.sess.Load(); s != nil {
			s.Close()
		}
	}
	if len(added)+len(removed) > 0 {
		_ = sdnotify.Status(c.statusLine())
	}
}
