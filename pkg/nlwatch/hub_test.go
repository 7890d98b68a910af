package nlwatch

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// source stands for a netlink socket: each subscription gets a channel the
// test sends on, and can be broken (the library closes the channel when its
// socket fails).
type source struct {
	mu    sync.Mutex
	subs  int
	ch    chan int
	close func()
}

func (s *source) subscribe(ch chan int, done chan struct{}, _ func(error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs++
	s.ch = ch
	var once sync.Once
	closeCh := func() { once.Do(func() { close(ch) }) }
	s.close = closeCh
	go func() { <-done; closeCh() }()
	return nil
}

func (s *source) send(v int) {
	s.mu.Lock()
	ch := s.ch
	s.mu.Unlock()
	ch <- v
}

func (s *source) brk() {
	s.mu.Lock()
	c := s.close
	s.mu.Unlock()
	c()
}

func (s *source) subscriptions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subs
}

type recorder struct {
	mu      sync.Mutex
	got     []int
	resyncs atomic.Int32
}

func (r *recorder) handle(v int) {
	r.mu.Lock()
	r.got = append(r.got, v)
	r.mu.Unlock()
}

func (r *recorder) events() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.got...)
}

// One subscription serves every listener; each gets every event and a
// resync whenever events may have been lost: after subscribing, on joining
// a live topic, after a resubscription. A listener that stops gets nothing
// more.
func TestTopicFansOutOneSubscription(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &source{}
		topic := NewTopic(src.subscribe)
		var a, b recorder
		topic.Listen(a.handle, func() { a.resyncs.Add(1) })
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { topic.Run(ctx, slog.New(slog.DiscardHandler), time.Second) })
		synctest.Wait()
		if a.resyncs.Load() != 1 {
			t.Fatalf("listener present at subscription: %d resyncs, want 1", a.resyncs.Load())
		}
		stopB := topic.Listen(b.handle, func() { b.resyncs.Add(1) })
		if b.resyncs.Load() != 1 {
			t.Fatalf("listener joining a live topic: %d resyncs, want 1 (it missed what came before)", b.resyncs.Load())
		}
		src.send(1)
		src.send(2)
		synctest.Wait()
		if got := a.events(); len(got) != 2 || got[0] != 1 || got[1] != 2 {
			t.Errorf("a got %v, want [1 2]", got)
		}
		if got := b.events(); len(got) != 2 {
			t.Errorf("b got %v, want [1 2]", got)
		}
		src.brk() // the socket fails: resubscribe, everyone resyncs
		time.Sleep(time.Second)
		synctest.Wait()
		if n := src.subscriptions(); n != 2 {
			t.Fatalf("%d subscriptions after a failure, want 2", n)
		}
		if a.resyncs.Load() != 2 || b.resyncs.Load() != 2 {
			t.Errorf("resyncs after resubscribing: a %d, b %d; want 2 and 2", a.resyncs.Load(), b.resyncs.Load())
		}
		stopB()
		src.send(3)
		synctest.Wait()
		if got := b.events(); len(got) != 2 {
			t.Errorf("b got %v after it stopped listening", got)
		}
		if got := a.events(); len(got) != 3 {
			t.Errorf("a got %v, want [1 2 3]", got)
		}
		cancel()
		wg.Wait()
	})
}

// A subscription that cannot be made is retried with backoff: 100 ms
// doubling up to the cap, and back to 100 ms once one succeeds and
// delivers.
func TestRunRetriesWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var tries []time.Time
		attempts := func() []time.Time {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(tries)
		}
		fails := 6
		var resyncs atomic.Int32
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		src := &source{}
		wg.Go(func() {
			Run(ctx, slog.New(slog.DiscardHandler), time.Second, func(ch chan int, done chan struct{}, cb func(error)) error {
				mu.Lock()
				tries = append(tries, time.Now())
				n := len(tries)
				mu.Unlock()
				if n <= fails {
					return errTest
				}
				return src.subscribe(ch, done, cb)
			}, func(int) {}, func() { resyncs.Add(1) })
		})
		time.Sleep(10 * time.Second)
		synctest.Wait()
		tries = attempts()
		var gaps []time.Duration
		for i := 1; i < len(tries); i++ {
			gaps = append(gaps, tries[i].Sub(tries[i-1]))
		}
		want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
		if !slices.Equal(gaps, want) {
			t.Errorf("gaps between attempts %v, want %v", gaps, want)
		}
		if n := resyncs.Load(); n != 1 {
			t.Errorf("%d resyncs after the subscription was made, want 1", n)
		}
		src.send(1) // an event resets the backoff
		src.brk()
		synctest.Wait()
		before := time.Now()
		time.Sleep(time.Second)
		synctest.Wait()
		tries = attempts()
		if got := tries[len(tries)-1].Sub(before); len(tries) != 8 || got != 100*time.Millisecond {
			t.Errorf("%d attempts; resubscribed %v after the loss, want 8 and 100ms", len(tries), got)
		}
		cancel()
		wg.Wait()
	})
}

type testErr struct{}

func (testErr) Error() string { return "netlink socket: no buffer space" }

var errTest = testErr{}
