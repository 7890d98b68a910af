package nat

import (
	"fmt"
	"log/slog"

	"github.com/gtun/gtun/pkg/reconcile"
)

// KeepIPv4Forwarding is the check (for a reconcile.Loop) that turns
// net.ipv4.ip_forward back on when someone turned it off: forwarding
// stops silently without it. why says what the daemon forwards, for the
// log line.
func KeepIPv4Forwarding(log *slog.Logger, why string) reconcile.Check {
	return func() (reconcile.Outcome, error) {
		changed, err := EnableIPv4Forwarding()
		if err != nil {
			return reconcile.Outcome{}, fmt.Errorf("turn net.ipv4.ip_forward back on: %w", err)
		}
		if !changed {
			return reconcile.Outcome{}, nil
		}
		log.Warn("net.ipv4.ip_forward was turned off by someone else; turned it back on", "why", why)
		return reconcile.Outcome{Heals: 1}, nil
	}
}

// KeepIPv6Forwarding is KeepIPv4Forwarding for
// net.ipv6.conf.all.forwarding.
func KeepIPv6Forwarding(log *slog.Logger, why string) reconcile.Check {
	return func() (reconcile.Outcome, error) {
		changed, err := EnableIPv6Forwarding()
		if err != nil {
			return reconcile.Outcome{}, fmt.Errorf("turn net.ipv6.conf.all.forwarding back on: %w", err)
		}
		if !changed {
			return reconcile.Outcome{}, nil
		}
		log.Warn("net.ipv6.conf.all.forwarding was turned off by someone else; turned it back on", "why", why)
		return reconcile.Outcome{Heals: 1}, nil
	}
}
