package server

import (
	"context"
	"fmt"
	"slices"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/sdnotify"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
)

// reload re-reads the config file. Routes, peers, keepalive and the rekey
// interval apply live; other keys need a restart and keep their running
// values: those that changed are returned. A bad file changes nothing.
func (s *Server) reload() (restartOnly []string, err error) {
	_ = sdnotify.Notify("RELOADING=1")
	defer func() { _ = sdnotify.Notify("READY=1", "STATUS="+s.statusLine()) }()
	n, err := config.LoadServer(s.cfg.File)
	if err != nil {
		s.log.Error("reload failed; the running config stays", "err", err)
		return nil, err
	}
	restartOnly = config.RestartOnly(s.cfg, n)
	if len(restartOnly) > 0 {
		s.log.Warn("reload: these keys change only with a restart; keeping the running values", "keys", restartOnly)
	}
	s.mu.Lock()
	mapChanged := !slices.Equal(s.maps, n.Map)
	s.mu.Unlock()
	if mapChanged {
		// The table first: if the kernel refuses it, nothing else changes.
		if err := s.ensureNAT(s.natSpec(n.Map)); err != nil {
			s.log.Error("reload failed: cannot apply the new map; the running config stays", "err", err)
			return nil, fmt.Errorf("apply map: %w", err)
		}
		s.log.Info("reload: map changed; connections through a changed mapping break", "map", n.Map)
	}
	newKeys := map[secure.PublicKey]bool{}
	for _, p := range n.Peers {
		newKeys[p.PublicKey] = true
	}
	var drop, push []*peerSession
	var added, removed, changed int
	s.mu.Lock()
	s.routes, s.maps, s.dns, s.keepalive, s.deadAfter, s.rekey = n.Routes, n.Map, n.DNS, n.Keepalive, n.DeadAfter, n.RekeyInterval
	s.syncDNSProxyLocked()
	s.guard.SetLimits(n.Handshake)
	s.hsTimeout.Store(int64(handshakeTimeout(n)))
	peers := make(map[secure.PublicKey]*peer, len(n.Peers))
	for _, p := range n.Peers {
		pi, ok := s.peers[p.PublicKey]
		if !ok {
			peers[p.PublicKey] = newPeerInfo(p, n.Map)
			added++
			continue
		}
		addrChanged := pi.cfg.Address != p.Address
		if !slices.Equal(pi.cfg.Allowed, p.Allowed) || !slices.Equal(pi.cfg.Subnets, p.Subnets) || addrChanged || pi.cfg.Name != p.Name {
			changed++
		}
		pi.cfg = p
		pi.allowed.Store(aclTable(virtual(n.Map, p.Allowed)))
		pi.subnets.Store(aclTable(p.Subnets))
		peers[p.PublicKey] = pi
		if ps := s.sessions[p.PublicKey]; ps != nil {
			if addrChanged {
				drop = append(drop, ps) // it reconnects and gets its new address
			} else {
				push = append(push, ps)
			}
		}
	}
	for k := range s.peers {
		if !newKeys[k] {
			removed++
		}
	}
	for k, ps := range s.sessions {
		if !newKeys[k] {
			drop = append(drop, ps)
			// Its access ends now, not when its session has closed
			// (which waits for the notice to a client that may not read).
			ps.peer.allowed.Store(aclTable(nil))
			ps.peer.subnets.Store(aclTable(nil))
		}
	}
	for _, ps := range drop {
		s.slot(ps.addr).CompareAndSwap(ps, nil) // nothing more is routed to it
	}
	s.peers = peers
	s.syncSubnetsLocked()
	msgs := make([]*session.Msg, len(push))
	for i, ps := range push {
		msgs[i] = s.configForLocked(ps.peer, ps.addr)
	}
	s.mu.Unlock()
	s.syncPoolPeers()
	// Neither waits for a client: one whose writes stall (blackholed)
	// must not hold up the reload, nor the config of everyone after it.
	for _, ps := range drop {
		s.disconnect(ps, "peer removed or its address changed by a config reload")
	}
	for i, ps := range push {
		ps.sess.SetRekeyInterval(n.RekeyInterval) // gtund's side; the config carries it to the client's
		ps.push.push(msgs[i])
	}
	s.log.Info("config reloaded", "routes", n.Routes, "peers", len(n.Peers), "added", added, "removed", removed,
		"changed", changed, "pushed", len(push), "disconnected", len(drop), "rekey_interval", n.RekeyInterval)
	return restartOnly, nil
}

// reloadResult is a reload's outcome, as the control socket answers it.
type reloadResult struct {
	restartOnly []string
	err         error
}

// requestReload runs a reload in Run's loop, like SIGHUP, and waits for
// its outcome (for the control socket's POST /reload).
func (s *Server) requestReload(ctx context.Context) ([]string, error) {
	res := make(chan reloadResult, 1)
	select {
	case s.reloadReq <- res:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-res:
		return r.restartOnly, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
