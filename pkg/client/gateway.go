package client

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/gtun/gtun/pkg/nat"
	"github.com/gtun/gtun/pkg/nlwatch"
	"github.com/gtun/gtun/pkg/reconcile"
)

// Gateway mode: gtun forwards for the other hosts of its VPC, whose cloud
// route table points the served CIDRs at this VM. The kernel does the
// forwarding; gtun switches it on and owns an nftables table that clamps
// the TCP MSS of forwarded connections to the tunnel's MTU and, with
// masquerade, rewrites their source to the tunnel address of the server
// whose route they take (so gtund's anti-spoofing accepts them and the
// cluster answers to this VM).

// natCheckInterval is how often gateway mode checks that its table is
// still there (someone may run `nft flush ruleset`).
const natCheckInterval = time.Second

func (c *Client) startGateway() error {
	changed, err := nat.EnableIPv4Forwarding()
	if err != nil {
		return fmt.Errorf("gateway mode: %w", err)
	}
	if changed {
		c.log.Info("enabled net.ipv4.ip_forward for gateway mode (left on at exit)")
	}
	c.natMu.Lock()
	c.natSpec = nat.Spec{Table: NATTable(c.cfg.Tun), Tun: c.cfg.Tun, ClampMSS: true}
	spec := c.natSpec
	err = nat.Ensure(spec)
	c.natApplied = err == nil
	c.natMu.Unlock()
	if err != nil {
		return fmt.Errorf("gateway mode: nftables: %w", err)
	}
	c.log.Info("gateway mode on", "nftables_table", spec.Table, "masquerade", c.cfg.Masquerade)
	return nil
}

func (c *Client) stopGateway() {
	table := NATTable(c.cfg.Tun)
	if err := nat.Remove(table); err != nil {
		c.log.Error("remove nftables table", "table", table, "err", err)
		return
	}
	c.log.Info("removed nftables table", "table", table)
}

// applyNAT rebuilds the table when the SNAT rules change: with masquerade,
// one per routed prefix, to the tunnel address of the server that carries it
// (owner: prefix -> index in c.upstreams). Call with c.mu held.
func (c *Client) applyNAT(owner map[netip.Prefix]int) {
	var snat []nat.SNAT
	ipv6 := false
	for _, up := range c.upstreams {
		ipv6 = ipv6 || up.tunnel.Load().address6.IsValid()
	}
	if c.cfg.Masquerade {
		for p, i := range owner {
			t := c.upstreams[i].tunnel.Load()
			a := t.address
			if !p.Addr().Is4() {
				a = t.address6
			}
			if a.IsValid() {
				snat = append(snat, nat.SNAT{Dst: p, To: a.Addr()})
			}
		}
		// Longest prefix first: the first matching rule wins, and the
		// kernel routes by longest match.
		slices.SortFunc(snat, func(a, b nat.SNAT) int {
			if a.Dst.Bits() != b.Dst.Bits() {
				return b.Dst.Bits() - a.Dst.Bits()
			}
			return a.Dst.Addr().Compare(b.Dst.Addr())
		})
	}
	if ipv6 && !c.forward6.Load() {
		// Forwarding for this VPC's IPv6 hosts too, from the first server
		// that gives an IPv6 address on; kept on by keepNAT from then.
		if changed, err := nat.EnableIPv6Forwarding(); err != nil {
			c.log.Error("gateway mode: enable IPv6 forwarding", "err", err)
		} else {
			c.forward6.Store(true)
			if changed {
				c.log.Info("enabled net.ipv6.conf.all.forwarding for gateway mode (left on at exit)")
			}
		}
	}
	c.natMu.Lock()
	defer c.natMu.Unlock()
	if slices.Equal(snat, c.natSpec.SNAT) && c.natSpec.IPv6 == ipv6 && c.natApplied {
		return
	}
	c.natSpec.SNAT, c.natSpec.IPv6 = snat, ipv6
	if err := nat.Ensure(c.natSpec); err != nil {
		c.natApplied = false // keepNAT retries
		c.log.Error("gateway mode: update nftables table", "table", c.natSpec.Table, "err", err)
		return
	}
	c.natApplied = true
	c.log.Info("gateway mode: masquerade rules set", "table", c.natSpec.Table, "rules", len(snat))
}

// Gateway mode's heal kinds.
const (
	HealGatewayTable = "gateway_table"
	HealIPForward    = "ip_forward"
)

// nftSettle is the wait from an nftables deletion to the check of the
// table: a flushed chain is deleted rule by rule, one check is enough.
const nftSettle = 20 * time.Millisecond

// keepNAT puts the table back when it disappears or loses rules (a flushed
// chain), retries a failed update, and turns net.ipv4.ip_forward back on
// when someone turns it off (forwarding would stop silently): a
// reconcile.Loop each.
func (c *Client) keepNAT(ctx context.Context) {
	table := reconcile.New(reconcile.Options{Kind: HealGatewayTable, What: "gateway mode's nftables table " + NATTable(c.cfg.Tun),
		Check: c.checkNAT, Interval: natCheckInterval, Debounce: nftSettle, Book: &c.book, Log: c.log})
	forwarding := reconcile.New(reconcile.Options{Kind: HealIPForward, What: "net.ipv4.ip_forward",
		Check: nat.KeepIPv4Forwarding(c.log, "gateway mode forwards for the hosts of this VPC"), Interval: natCheckInterval, Book: &c.book, Log: c.log})
	keep6 := nat.KeepIPv6Forwarding(c.log, "gateway mode forwards for the IPv6 hosts of this VPC")
	forwarding6 := reconcile.New(reconcile.Options{Kind: HealIPForward, What: "net.ipv6.conf.all.forwarding",
		Check: func() (reconcile.Outcome, error) {
			if !c.forward6.Load() { // no server gave an IPv6 address yet
				return reconcile.Outcome{}, nil
			}
			return keep6()
		}, Interval: natCheckInterval, Book: &c.book, Log: c.log})
	// nftables deletions (by anyone) ask for a check at once; the
	// interval backs the subscription up.
	deletions := nlwatch.NewTopic(nat.Deletions)
	defer deletions.Listen(func(struct{}) { table.Kick() }, table.Kick)()
	var wg sync.WaitGroup
	wg.Go(func() { deletions.Run(ctx, c.log.With("watch", "nftables"), 5*time.Second) })
	wg.Go(func() { table.Run(ctx) })
	wg.Go(func() { forwarding.Run(ctx) })
	wg.Go(func() { forwarding6.Run(ctx) })
	wg.Wait()
}

// checkNAT rebuilds the table when it is not as last asked for, or when
// building it failed. Under natMu, so an update from applyNAT can neither
// be overwritten by an older spec nor land between check and repair.
func (c *Client) checkNAT() (reconcile.Outcome, error) {
	c.natMu.Lock()
	defer c.natMu.Unlock()
	applied, spec := c.natApplied, c.natSpec
	if applied {
		ok, err := nat.Intact(spec)
		if err != nil {
			return reconcile.Outcome{}, fmt.Errorf("gateway mode: check nftables table %s: %w", spec.Table, err)
		}
		if ok {
			return reconcile.Outcome{}, nil
		}
	}
	start := time.Now()
	err := nat.Ensure(spec)
	c.natApplied = err == nil
	if err != nil {
		return reconcile.Outcome{}, fmt.Errorf("gateway mode: restore nftables table %s: %w", spec.Table, err)
	}
	if !applied {
		return reconcile.Outcome{}, nil // a failed update retried, not a repair
	}
	took := time.Since(start)
	c.log.Warn("gateway mode: nftables table was deleted or changed; restored", "table", spec.Table, "took", took)
	return reconcile.Outcome{Heals: 1, Took: took}, nil
}

// natRules lists the SNAT rules in effect, for status.
func (c *Client) natRules() []string {
	c.natMu.Lock()
	defer c.natMu.Unlock()
	var out []string
	for _, sn := range c.natSpec.SNAT {
		out = append(out, sn.Dst.String()+" from "+sn.To.String())
	}
	return out
}
