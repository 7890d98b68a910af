package client

import (
	"slices"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/sdnotify"
)

// reload re-reads the config file. A server's route subset applies live; a
// change of its endpoints, transport or key makes it reconnect. Other keys
// need a restart: those that changed are returned, for the answer to
// `gtun reload`. A bad file changes nothing; its error is returned.
func (c *Client) reload() (restartOnly []string, err error) {
	_ = sdnotify.Notify("RELOADING=1")
	defer func() { _ = sdnotify.Notify("READY=1", "STATUS="+c.statusLine()) }()
	n, err := config.LoadClient(c.cfg.File)
	if err != nil {
		c.log.Error("reload failed; the running config stays", "err", err)
		return nil, err
	}
	restart := config.RestartOnly(c.cfg, n)
	byName := map[string]config.ServerEntry{}
	for _, e := range n.Servers {
		byName[e.Name] = e
	}
	known := map[string]bool{}
	var reconnect []*upstream
	c.mu.Lock()
	for _, up := range c.upstreams {
		known[up.name] = true
		ne, ok := byName[up.name]
		if !ok {
			restart = append(restart, "server "+up.name+" removed")
			continue
		}
		up.mu.Lock()
		old := up.entry
		up.entry = ne
		pushed := up.pushed
		up.mu.Unlock()
		if !slices.Equal(old.Endpoints, ne.Endpoints) || old.Transport != ne.Transport || old.PublicKey != ne.PublicKey ||
			old.FECData != ne.FECData || old.FECParity != ne.FECParity {
			reconnect = append(reconnect, up)
		}
		desired := c.selectRoutes(up.name, ne, pushed)
		up.mu.Lock()
		up.desired = desired
		up.mu.Unlock()
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
	for _, up := range reconnect {
		c.log.Info("reload: server endpoints, transport or key changed; reconnecting", "server", up.name)
		if s := up.sess.Load(); s != nil {
			s.Close()
		}
	}
	c.log.Info("config reloaded")
	return restart, nil
}
