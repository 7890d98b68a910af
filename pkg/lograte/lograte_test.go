package lograte

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Time is the bubble's (testing/synctest): the sleeps take no wall time and
// land exactly where they say, so the interval's edges are tested exactly.

func TestLimiter(t *testing.T) { synctest.Test(t, testLimiter) }

func testLimiter(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 50*time.Millisecond)
	for i := 0; i < 100; i++ {
		l.Log(slog.LevelWarn, "k", "bad packet")
	}
	if n := strings.Count(buf.String(), "bad packet"); n != 1 {
		t.Fatalf("logged %d lines, want 1", n)
	}
	time.Sleep(50*time.Millisecond - 1)
	l.Log(slog.LevelWarn, "k", "bad packet") // still within the interval
	if n := strings.Count(buf.String(), "bad packet"); n != 1 {
		t.Fatalf("logged %d lines a moment before the interval passed, want 1", n)
	}
	time.Sleep(1)
	l.Log(slog.LevelWarn, "k", "bad packet")
	if !strings.Contains(buf.String(), "suppressed=100") {
		t.Fatalf("missing suppressed count: %s", buf.String())
	}
	l.Log(slog.LevelWarn, "other", "other event")
	if !strings.Contains(buf.String(), "other event") {
		t.Fatal("independent key was suppressed")
	}
}

// A flood that stops still gets its count logged, by Flush, once the
// interval has passed; nothing is logged twice.
func TestFlushReportsSuppressedAfterTheFlood(t *testing.T) {
	synctest.Test(t, testFlushReportsSuppressedAfterTheFlood)
}

func testFlushReportsSuppressedAfterTheFlood(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 50*time.Millisecond)
	for i := range 1000 {
		l.Log(slog.LevelWarn, "k", "handshake refused", "n", i)
	}
	l.Flush() // within the interval: nothing yet
	if n := strings.Count(buf.String(), "handshake refused"); n != 1 {
		t.Fatalf("%d lines before the interval passed", n)
	}
	time.Sleep(50 * time.Millisecond)
	l.Flush()
	l.Flush()
	out := buf.String()
	if n := strings.Count(out, "handshake refused"); n != 2 {
		t.Fatalf("%d lines, want the first and one summary:\n%s", n, out)
	}
	if !strings.Contains(out, "n=999 suppressed=999") {
		t.Fatalf("summary lacks the last event and the count:\n%s", out)
	}
}
