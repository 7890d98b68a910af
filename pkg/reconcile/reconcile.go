// Package reconcile is the one pattern of the daemons' self-healing parts
// (the TUN device, routes, nftables tables, net.ipv4.ip_forward, the lease
// file): a Loop checks whether the system is as the daemon wants it, on
// kernel events and on a periodic tick, and repairs what differs. Every
// repair is counted in the daemon's Book under the part's kind.
//
// # Fights
//
// Repairs are bounded by a token bucket (golang.org/x/time/rate): a burst
// of them goes through at once (the first repair in a while never waits),
// after which they come at a sustained rate. When another program keeps
// undoing what the Loop repairs (two route managers fighting over a
// prefix, a firewall script flushing the ruleset in a loop), the bucket
// runs dry: the Loop then repairs at that rate rather than at the other
// program's pace, logs "something keeps undoing ..." at most once per
// interval, and counts one fight in the Book. The fight ends with the
// first check that finds nothing to repair.
package reconcile

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/time/rate"

	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/pause"
)

// Defaults of the repair bound: ten repairs back to back, then one a
// second. A person deleting a route or a table by hand, a link flap, a
// device recreated: each costs one or two repairs, well within the burst.
const (
	DefaultBurst = 10
	DefaultRate  = rate.Limit(1)
)

// logInterval bounds the Loop's own log lines (failures, fights): each
// kind at most once per interval, with the count of the suppressed ones.
const logInterval = 10 * time.Second

// retryMin is the first retry delay after a failed check; it doubles up
// to the check interval so a persistent error does not spin.
const retryMin = 100 * time.Millisecond

// Outcome is what one check did.
type Outcome struct {
	// Heals counts what the check found undone (by someone else) and put
	// back. Changes the daemon asked for (a route installed the first
	// time, a table updated by a reload) are not heals.
	Heals int
	// Took is the part's own measure of the last heal (the repair's
	// duration, or the time since the loss was seen), for status.
	Took time.Duration
}

// Check compares the system with what is wanted and repairs what differs.
// It logs what it repaired (the part knows best what that was); an error
// means the check or a repair failed and is retried soon.
type Check func() (Outcome, error)

// Options configure a Loop.
type Options struct {
	// Kind is the heal counter's label ("tun", "route", "nftables_table").
	Kind string
	// What names what is kept in place, for logs: "routes on gtun0".
	What string
	// Check is run at start, after every Kick (once Debounce has passed)
	// and every Interval.
	Check    Check
	Interval time.Duration
	// Debounce is the wait from the first Kick to the check, so that a
	// burst of kernel events (a link flap, a flushed chain deleting rule
	// by rule) costs one check. Zero checks at once.
	Debounce time.Duration
	// Book counts heals and fights; nil: a Book of the Loop's own.
	Book *Book
	// Rate and Burst bound repairs (see the package comment); zero: the
	// defaults.
	Rate  rate.Limit
	Burst int
	Log   *slog.Logger
}

// Loop keeps one part of the system in place. Kick and the Book are safe
// for concurrent use; Run must not be called twice at once.
type Loop struct {
	o       Options
	kick    chan struct{}
	repairs *rate.Limiter
	logs    *lograte.Limiter
}

// New returns a Loop; nothing is checked until Run.
func New(o Options) *Loop {
	if o.Book == nil {
		o.Book = &Book{}
	}
	if o.Rate <= 0 {
		o.Rate = DefaultRate
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Loop{o: o, kick: make(chan struct{}, 1), repairs: rate.NewLimiter(o.Rate, o.Burst), logs: lograte.New(o.Log, logInterval)}
}

// Book is where the Loop counts.
func (l *Loop) Book() *Book { return l.o.Book }

// Kick asks for a check soon, without blocking: one pending request is
// enough, since a check always looks at the whole part.
func (l *Loop) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Run checks and repairs until ctx ends.
func (l *Loop) Run(ctx context.Context) {
	tick := time.NewTicker(l.o.Interval)
	defer tick.Stop()
	soon := time.NewTimer(0) // the first check right away
	defer soon.Stop()
	armed := true
	retry := retryMin
	failing := false
	fighting := false
	var fought int // repairs since the fight began
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
			if !armed {
				soon.Reset(l.o.Debounce)
				armed = true
			}
			continue
		case <-soon.C:
			armed = false
		case <-tick.C:
		}
		if wait := l.untilRepairAllowed(); wait > 0 {
			if !fighting {
				fighting = true
				fought = 0
				l.o.Book.fightBegan(l.o.Kind)
			}
			l.logs.Log(slog.LevelWarn, "fight", "something keeps undoing "+l.o.What+"; repairing at a bounded rate",
				"kind", l.o.Kind, "repairs_in_fight", fought, "next_in", wait.Round(time.Millisecond), "max_per_second", float64(l.o.Rate))
			if !pause.For(ctx, wait) {
				return
			}
		}
		out, err := l.o.Check()
		if out.Heals > 0 {
			l.repairs.Reserve() // takes the token untilRepairAllowed waited for
			l.o.Book.healed(l.o.Kind, out.Heals, out.Took)
			fought += out.Heals
		} else if err == nil && fighting {
			fighting = false
			l.o.Book.fightEnded(l.o.Kind)
			l.o.Log.Info(l.o.What+" stayed in place again; the fight is over", "kind", l.o.Kind, "repairs_in_fight", fought)
		}
		l.logs.Flush()
		if err == nil {
			if failing {
				l.o.Log.Info(l.o.What+": check ok again", "kind", l.o.Kind)
				failing = false
			}
			retry = retryMin
			continue
		}
		failing = true
		l.logs.Log(slog.LevelWarn, "fail", l.o.What+": check or repair failed; retrying", "kind", l.o.Kind, "err", err, "in", retry)
		// A failure is usually transient (a dump interrupted, a device
		// being recreated): retry sooner than the tick would.
		if !armed {
			soon.Reset(retry)
			armed = true
		}
		retry = min(retry*2, l.o.Interval)
	}
}

// untilRepairAllowed is how long until the bucket holds a token for one
// repair; zero when it holds one now. Checks that repair nothing take no
// token, so only repairs are bounded.
func (l *Loop) untilRepairAllowed() time.Duration {
	tokens := l.repairs.Tokens()
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(l.o.Rate) * float64(time.Second))
}
