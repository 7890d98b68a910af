package nlwatch

import (
	"context"
	"log/slog"
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
