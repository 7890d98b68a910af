package client

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/device/memdev"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/transport"
)

// The reconnect backoff, on synctest's clock (the waits take no wall time
// and are measured exactly): while the server refuses, each wait is drawn
// between half and all of a backoff that starts at backoffMin and doubles
// up to backoffMax, with jitter (the capped waits differ); the client
// connects at the first attempt after the server is back; a session that
// is lost is redialed at once, and the waits start again from backoffMin.
func TestReconnectBackoff(t *testing.T) { synctest.Test(t, testReconnectBackoff) }

func testReconnectBackoff(t *testing.T) {
	s := newMemServer(t, "gw", "gw.example:9623", pushed("100.64.240.2/24", "100.64.240.1", "10.244.0.0/16"))
	key, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	s.clientKey = key.Public()
	cfg := &config.Client{PrivateKey: key, Tun: "gtun0", Servers: []config.ServerEntry{
		{Name: s.name, Endpoints: []string{s.endpoint}, Transport: transport.TCP, PublicKey: s.key.Public()}}}
	c := New(cfg, testLog())
	dev := memdev.New("gtun0", true)
	c.dev = dev
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var attempts []time.Time
	// net.Pipe, unlike a socketpair, blocks only on channels: the bubble's
	// clock moves while a session is up.
	c.dialTCP = func(_ context.Context, endpoint string) (net.Conn, error) {
		mu.Lock()
		attempts = append(attempts, time.Now())
		mu.Unlock()
		if endpoint != s.endpoint || s.down.Load() {
			return nil, errors.New("connection refused")
		}
		a, b := net.Pipe()
		s.wg.Add(1)
		go s.serve(ctx, b)
		return a, nil
	}
	attemptsSince := func(from time.Time) []time.Time {
		mu.Lock()
		defer mu.Unlock()
		var out []time.Time
		for _, a := range attempts {
			if !a.Before(from) {
				out = append(out, a)
			}
		}
		return out
	}
	// checkWaits checks the waits between attempts, the first of them
	// after a backoff of backoffMin.
	checkWaits := func(phase string, at []time.Time) {
		t.Helper()
		backoff := backoffMin
		var capped []time.Duration
		for i := 1; i < len(at); i++ {
			w := at[i].Sub(at[i-1])
			if w < backoff/2 || w > backoff {
				t.Errorf("%s: wait %d was %v, want between %v and %v", phase, i, w, backoff/2, backoff)
			}
			if backoff == backoffMax {
				capped = append(capped, w)
			}
			backoff = min(backoff*2, backoffMax)
		}
		if len(capped) >= 5 && !slicesDiffer(capped) {
			t.Errorf("%s: every capped wait was %v: no jitter", phase, capped[0])
		}
	}

	s.down.Store(true)
	start := time.Now()
	for _, up := range c.upstreams {
		c.startUpstream(ctx, up)
	}
	t.Cleanup(func() {
		cancel()
		dev.Close()
		c.wg.Wait()
		s.wg.Wait()
	})
	time.Sleep(20 * time.Second)
	refused := attemptsSince(start)
	// 0.1+0.2+0.4+0.75 s at least before the cap, then at least one
	// attempt every 1.5 s and at most one every 0.75 s.
	if n := len(refused); n < 14 || n > 30 {
		t.Fatalf("%d attempts in 20 s of refusals", n)
	}
	if refused[0] != start {
		t.Errorf("the first attempt %v after start, want at once", refused[0].Sub(start))
	}
	checkWaits("refused", refused)

	// The server is back: the next attempt connects.
	s.down.Store(false)
	back := time.Now()
	synctest.Wait()
	for c.Status().Servers[0].State != "connected" {
		if time.Since(back) > backoffMax {
			t.Fatalf("not connected %v after the server is back: %s", time.Since(back), c.Status().Servers[0].State)
		}
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
	}
	all := attemptsSince(start)
	if n := len(all); n != len(refused)+1 {
		t.Errorf("%d attempts to connect once the server was back, want 1", n-len(refused))
	}
	checkWaits("until back", all)

	// Connected for a while, then the session is lost and the server
	// refuses again: redialed at once, then waits from backoffMin again.
	time.Sleep(10 * time.Second)
	lost := time.Now()
	s.stop()
	time.Sleep(5 * time.Second)
	again := attemptsSince(lost)
	if len(again) < 5 {
		t.Fatalf("%d attempts in 5 s after the session was lost", len(again))
	}
	if again[0] != lost {
		t.Errorf("redialed %v after the session was lost, want at once", again[0].Sub(lost))
	}
	checkWaits("after a session", again)
}

// slicesDiffer reports whether the waits are not all the same.
func slicesDiffer(ws []time.Duration) bool {
	for _, w := range ws[1:] {
		if w != ws[0] {
			return true
		}
	}
	return false
}
