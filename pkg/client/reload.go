package client

import (
	"slices"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/sdnotify"
)

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
