// Package pause is the one wait every periodic loop of the daemons makes:
// a timer that a context cuts short, so that a stopping daemon never waits
// out a check interval or a backoff.
package pause

import (
	"context"
	"time"
)

// For waits d or until ctx ends; it reports whether the full time passed,
// so that a loop reads `for pause.For(ctx, interval) { ... }`.
func For(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
