package server

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/gtun/gtun/pkg/nat"
)

// systemCheckInterval is how often gtund checks what others may undo on the
// host: its nftables table, net.ipv4.ip_forward, the lease file.
const systemCheckInterval = 2 * time.Second

// Heal kinds, counted in status.
const (
	HealNFTables  = "nftables_table"
	HealIPForward = "ip_forward"
	HealLeases    = "leases_written"
)

// watchSystem puts back what an operator or another program undid: the
// nftables table (deleted, a chain flushed), net.ipv4.ip_forward (turned
// off: forwarding stops silently without it), and the lease file (a write
// that failed while state_dir was unwritable). Each repair is logged and
// counted; a repair that fails is logged at a bounded rate and retried.
func (s *Server) watchSystem(ctx context.Context) {
	t := time.NewTicker(systemCheckInterval)
	defer t.Stop()
	// nftables deletions (by anyone) trigger a check of the table at once;
	// the ticker backs the subscription up.
	deleted := make(chan struct{}, 1)
	s.goRun(func() {
		nat.WatchKicks(ctx, deleted, 20*time.Millisecond, 5*time.Second, func(err error) {
			s.rate.Log(slog.LevelWarn, "heal:nft-watch", "nftables event subscription failed; checking the table every 2 s only", "err", err)
		})
	})
	for {
		select {
		case <-ctx.Done():
			return
		case <-deleted:
			s.checkNAT()
			continue
		case <-t.C:
		}
		s.rate.Flush() // a flood that stopped gets its count logged
		s.checkNAT()
		s.checkForwarding()
		if s.pool.PersistError() != nil {
			if err := s.pool.Retry(); err == nil {
				s.heals.Inc(HealLeases)
				s.log.Info("leases written to state_dir again", "state_dir", s.cfg.StateDir)
			}
		}
	}
}

// ensureNAT builds the table as spec says and remembers it as the one to
// keep in place.
func (s *Server) ensureNAT(spec nat.Spec) error {
	s.natMu.Lock()
	defer s.natMu.Unlock()
	if err := nat.Ensure(spec); err != nil {
		return err
	}
	s.natApplied = spec
	return nil
}

// checkNAT rebuilds the table when it is not what was last built. Holding
// natMu keeps a reload from changing the table between check and repair,
// which would make the repair undo the reload.
func (s *Server) checkNAT() {
	s.natMu.Lock()
	defer s.natMu.Unlock()
	spec := s.natApplied
	ok, err := nat.Intact(spec)
	if err != nil {
		s.rate.Log(slog.LevelWarn, "heal:nft-check", "cannot check the nftables table", "table", spec.Table, "err", err)
		return
	}
	if ok {
		return
	}
	start := time.Now()
	if err := nat.Ensure(spec); err != nil {
		s.rate.Log(slog.LevelWarn, "heal:nft", "nftables table was deleted or changed; restoring it failed", "table", spec.Table, "err", err)
		return
	}
	s.heals.Inc(HealNFTables)
	s.log.Warn("nftables table was deleted or changed by someone else; restored", "table", spec.Table, "took", time.Since(start))
}

func (s *Server) checkForwarding() {
	cur, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil || strings.TrimSpace(string(cur)) == "1" {
		return
	}
	if _, err := nat.EnableIPv4Forwarding(); err != nil {
		s.rate.Log(slog.LevelWarn, "heal:forward", "net.ipv4.ip_forward was turned off; turning it back on failed", "err", err)
		return
	}
	s.heals.Inc(HealIPForward)
	s.log.Warn("net.ipv4.ip_forward was turned off by someone else; turned it back on (gtund forwards client traffic)")
}
