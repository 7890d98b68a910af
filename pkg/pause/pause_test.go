package pause

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if !For(context.Background(), time.Minute) {
			t.Fatal("a full pause reported as cut short")
		}
		if got := time.Since(start); got != time.Minute {
			t.Fatalf("paused %v, want 1m", got)
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel)
		start = time.Now()
		if For(ctx, time.Hour) {
			t.Fatal("a pause cut short by its context reported as full")
		}
		if got := time.Since(start); got != time.Second {
			t.Fatalf("cut short after %v, want 1s", got)
		}
	})
}
