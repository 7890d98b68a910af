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
		l.mu.Unlock()
		return
	}
	suppressed := e.suppressed
	e.last, e.suppressed = now, 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
}
