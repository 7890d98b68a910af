package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gtun/gtun/pkg/nat"
	"github.com/gtun/gtun/pkg/nlwatch"
	"github.com/gtun/gtun/pkg/reconcile"
	"github.com/gtun/gtun/pkg/route"
	"github.com/gtun/gtun/pkg/tun"
)

// systemCheckInterval is how often gtund checks what others may undo on the
// host: its nftables table, net.ipv4.ip_forward, the lease file.
const systemCheckInterval = 2 * time.Second

// nftSettle is the wait from an nftables deletion to the check of the
// table: a flushed chain is deleted rule by rule, one check is enough.
const nftSettle = 20 * time.Millisecond

// Heal kinds, counted in status (the book's kinds).
const (
	HealNFTables  = "nftables_table"
	HealIPForward = "ip_forward"
	HealLeases    = "leases_written"
	HealTun       = tun.HealKind   // the TUN device, its address, MTU or link state
	HealRoute     = route.HealKind // a route to a peer's subnets
)

// shared is what gtund's self-healing parts share: one set of netlink
// subscriptions, one book of heals and fights.
func (s *Server) shared() reconcile.Shared {
	return reconcile.Shared{Events: s.events, Book: &s.book}
}

// watchSystem puts back what an operator or another program undid: the
// nftables table (deleted, a chain flushed), net.ipv4.ip_forward and with
// pool6 net.ipv6.conf.all.forwarding (turned
// off: forwarding stops silently without it), and the lease file (a write
// that failed while state_dir was unwritable). Each is a reconcile.Loop:
// repairs are logged, counted and bounded, failures retried.
func (s *Server) watchSystem(ctx context.Context) {
	loop := func(kind, what string, check reconcile.Check, debounce time.Duration) *reconcile.Loop {
		return reconcile.New(reconcile.Options{Kind: kind, What: what, Check: check, Interval: systemCheckInterval,
			Debounce: debounce, Book: &s.book, Log: s.log})
	}
	table := loop(HealNFTables, "nftables table "+NATTable(s.cfg.Tun), s.checkNAT, nftSettle)
	forwarding := loop(HealIPForward, "net.ipv4.ip_forward", nat.KeepIPv4Forwarding(s.log, "gtund forwards client traffic"), 0)
	leases := loop(HealLeases, "the leases in state_dir", s.retryLeases, 0)
	loops := []*reconcile.Loop{table, forwarding, leases}
	if s.cfg.Pool6.IsValid() {
		loops = append(loops, loop(HealIPForward, "net.ipv6.conf.all.forwarding", nat.KeepIPv6Forwarding(s.log, "gtund forwards client traffic (pool6)"), 0))
	}
	// nftables deletions (by anyone) ask for a check of the table at
	// once; the interval backs the subscription up.
	deletions := nlwatch.NewTopic(nat.Deletions)
	defer deletions.Listen(func(struct{}) { table.Kick() }, table.Kick)()
	var wg sync.WaitGroup
	wg.Go(func() { deletions.Run(ctx, s.log.With("watch", "nftables"), 5*time.Second) })
	for _, l := range loops {
		wg.Go(func() { l.Run(ctx) })
	}
	wg.Wait()
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
func (s *Server) checkNAT() (reconcile.Outcome, error) {
	s.natMu.Lock()
	defer s.natMu.Unlock()
	spec := s.natApplied
	ok, err := nat.Intact(spec)
	if err != nil {
		return reconcile.Outcome{}, fmt.Errorf("check nftables table %s: %w", spec.Table, err)
	}
	if ok {
		return reconcile.Outcome{}, nil
	}
	start := time.Now()
	if err := nat.Ensure(spec); err != nil {
		return reconcile.Outcome{}, fmt.Errorf("nftables table %s was deleted or changed; restore it: %w", spec.Table, err)
	}
	took := time.Since(start)
	s.log.Warn("nftables table was deleted or changed by someone else; restored", "table", spec.Table, "took", took)
	return reconcile.Outcome{Heals: 1, Took: took}, nil
}

// retryLeases writes the leases once state_dir is writable again after a
// write failed (ipam logged the failure).
func (s *Server) retryLeases() (reconcile.Outcome, error) {
	if s.pool.PersistError() == nil || s.pool.Retry() != nil {
		return reconcile.Outcome{}, nil
	}
	s.log.Info("leases written to state_dir again", "state_dir", s.cfg.StateDir)
	return reconcile.Outcome{Heals: 1}, nil
}
