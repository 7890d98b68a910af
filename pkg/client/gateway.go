package client

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/gtun/gtun/pkg/nat"
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
// (owner: prefix -> index in c.servers). Call with c.mu held.
func (c *Client) applyNAT(owner map[netip.Prefix]int) {
	var snat []nat.SNAT
	if c.cfg.Masquerade {
		for p, i := range owner {
			s := c.servers[i]
			s.mu.Lock()
			if s.address.IsValid() {
				snat = append(snat, nat.SNAT{Dst: p, To: s.address.Addr()})
			}
			s.mu.Unlock()
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
	c.natMu.Lock()
	defer c.natMu.Unlock()
	if slices.Equal(snat, c.natSpec.SNAT) && c.natApplied {
		return
	}
	c.natSpec.SNAT = snat
	if err := nat.Ensure(c.natSpec); err != nil {
		c.natApplied = false // keepNAT retries
		c.log.Error("gateway mode: update nftables table", "table", c.natSpec.Table, "err", err)
		return
	}
	c.natApplied = true
	c.log.Info("gateway mode: masquerade rules set", "table", c.natSpec.Table, "rules", len(snat))
}

// keepNAT puts the table back when it disappears or loses rules (a flushed
// chain), retries a failed update, and turns net.ipv4.ip_forward back on
// when someone turns it off (forwarding would stop silently).
func (c *Client) keepNAT(ctx context.Context) {
	// nftables deletions (by anyone) trigger a check at once; the ticker
	// backs the subscription up and watches ip_forward.
	deleted := make(chan struct{}, 1)
	c.goRun(func() {
		nat.WatchKicks(ctx, deleted, 20*time.Millisecond, 5*time.Second, func(err error) {
			c.rate.Log(slog.LevelWarn, "nat-watch", "gateway mode: nftables event subscription failed; checking the table every second only", "err", err)
		})
	})
	t := time.NewTicker(natCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-deleted:
		case <-t.C:
		}
		if changed, err := nat.EnableIPv4Forwarding(); err != nil {
			c.rate.Log(slog.LevelWarn, "forward-heal", "gateway mode: cannot turn net.ipv4.ip_forward back on", "err", err)
		} else if changed {
			c.forwardHeals.Add(1)
			c.log.Warn("gateway mode: net.ipv4.ip_forward was turned off by someone else; turned it back on")
		}
		c.natMu.Lock()
		applied, spec := c.natApplied, c.natSpec
		c.natMu.Unlock()
		table := spec.Table
		if applied {
			ok, err := nat.Intact(spec)
			if err != nil {
				c.rate.Log(slog.LevelWarn, "nat-check", "gateway mode: cannot list nftables tables", "err", err)
				continue
			}
			if ok {
				continue
			}
		}
		// Under natMu, so an update from applyNAT cannot be overwritten by
		// an older spec.
		c.natMu.Lock()
		start := time.Now()
		err := nat.Ensure(c.natSpec)
		c.natApplied = err == nil
		c.natMu.Unlock()
		if err != nil {
			c.rate.Log(slog.LevelWarn, "nat-heal", "gateway mode: cannot restore nftables table", "table", table, "err", err)
			continue
		}
		if applied {
			c.natHeals.Add(1)
			c.log.Warn("gateway mode: nftables table was deleted or changed; restored", "table", table, "took", time.Since(start))
		}
	}
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
