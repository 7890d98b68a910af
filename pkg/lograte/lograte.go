// Package lograte keeps hostile or broken input from flooding the logs: each
// kind of event is logged at most once per interval, and the line says how
// many were suppressed since the last one.
package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter logs each key at most once per interval.
type Limiter struct {
	log      *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	keys     map[string]*entry
}

type entry struct {
	last       time.Time
	suppressed uint64
	// The last suppressed event, for Flush.
	level slog.Level
	msg   string
	args  []any
}

// New returns a limiter that logs to log.
func New(log *slog.Logger, interval time.Duration) *Limiter {
	return &Limiter{log: log, interval: interval, keys: map[string]*entry{}}
}

// Log logs msg under key unless the key was logged less than an interval ago.
func (l *Limiter) Log(level slog.Level, key, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	e, ok := l.keys[key]
	if !ok {
		if len(l.keys) > 1024 { // keys can come from the network: bound the map
			l.keys = map[string]*entry{}
		}
		e = &entry{}
		l.keys[key] = e
	}
	if ok && now.Sub(e.last) < l.interval {
		e.suppressed++
		e.level, e.msg, e.args = level, msg, args
		l.mu.Unlock()
		return
	}
	suppressed := e.suppressed
	e.last, e.suppressed, e.args = now, 0, nil
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// Flush logs, for every key whose events were suppressed and whose
// interval has passed, its last event with the count, so that a flood that
// stops still gets its total into the log instead of waiting for an event
// that may never come. Owners call it periodically.
func (l *Limiter) Flush() {
	now := time.Now()
	type line struct {
		level slog.Level
		msg   string
		args  []any
	}
	var out []line
	l.mu.Lock()
	for _, e := range l.keys {
		if e.suppressed == 0 || now.Sub(e.last) < l.interval {
			continue
		}
		out = append(out, line{e.level, e.msg, append(e.args[:len(e.args):len(e.args)], "suppressed", e.suppressed)})
		e.last, e.suppressed, e.args = now, 0, nil
	}
	l.mu.Unlock()
	for _, o := range out {
		l.log.Log(context.Background(), o.level, o.msg, o.args...)
	}
}

// FlushEvery calls Flush every interval until ctx ends, for owners without
// a periodic loop of their own.
func (l *Limiter) FlushEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.Flush()
		}
	}
}
