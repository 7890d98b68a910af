package lograte

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 50*time.Millisecond)
	for i := 0; i < 100; i++ {
		l.Log(slog.LevelWarn, "k", "bad packet")
	}
	if n := strings.Count(buf.String(), "bad packet"); n != 1 {
		t.Fatalf("logged %d lines, want 1", n)
	}
	time.Sleep(60 * time.Millisecond)
	l.Log(slog.LevelWarn, "k", "bad packet")
	if !strings.Contains(buf.String(), "suppressed=99") {
		t.Fatalf("missing suppressed count: %s", buf.String())
	}
	l.Log(slog.LevelWarn, "other", "other event")
	if !strings.Contains(buf.String(), "other event") {
		t.Fatal("independent key was suppressed")
	}
}
