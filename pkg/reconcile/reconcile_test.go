package reconcile

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// part is a thing kept in place: another program may undo it (undone), and
// a check puts it back. Each check is recorded with its (fake) time.
type part struct {
	mu     sync.Mutex
	undone bool
	fail   int // checks left that fail
	checks []time.Time
}

func (p *part) check() (Outcome, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.checks = append(p.checks, time.Now())
	if p.fail > 0 {
		p.fail--
		return Outcome{}, errTest
	}
	if !p.undone {
		return Outcome{}, nil
	}
	p.undone = false
	return Outcome{Heals: 1, Took: time.Millisecond}, nil
}

func (p *part) undo() {
	p.mu.Lock()
	p.undone = true
	p.mu.Unlock()
}

func (p *part) checked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.checks)
}

type testErr struct{}

func (testErr) Error() string { return "netlink dump interrupted" }

var errTest = testErr{}

// logBuf is a concurrency-safe log destination.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs a Loop over p until the test's bubble ends.
func start(t *testing.T, p *part, o Options) (*Loop, *logBuf) {
	t.Helper()
	logs := &logBuf{}
	o.Kind, o.What, o.Check = "route", "routes on gtun0", p.check
	if o.Interval == 0 {
		o.Interval = 2 * time.Second
	}
	o.Log = slog.New(slog.NewTextHandler(logs, nil))
	l := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { l.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	synctest.Wait() // the first check, at start
	return l, logs
}

// A repair after a quiet while does not wait: the check runs once the
// debounce has passed, and the heal is counted with its time.
func TestFirstRepairDoesNotWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &part{}
		l, _ := start(t, p, Options{Debounce: 5 * time.Millisecond})
		if n := p.checked(); n != 1 {
			t.Fatalf("%d checks at start, want 1", n)
		}
		p.undo()
		kicked := time.Now()
		l.Kick()
		l.Kick() // a burst of events: one check
		time.Sleep(5 * time.Millisecond)
		synctest.Wait()
		if n := p.checked(); n != 2 {
			t.Fatalf("%d checks, want 2", n)
		}
		if d := p.checks[1].Sub(kicked); d != 5*time.Millisecond {
			t.Errorf("repaired %v after the kick, want the 5ms debounce", d)
		}
		if n, took := l.Book().Heal("route"); n != 1 || took != time.Millisecond {
			t.Errorf("book: %d heals, last took %v; want 1, 1ms", n, took)
		}
		if f := l.Book().Fights(); f != nil {
			t.Errorf("fights %v after one repair", f)
		}
	})
}

// Someone undoes the part the moment it is repaired, and every undo is a
// kernel event: repairs stop following at the other program's pace once
// the burst is spent, one fight is counted and logged (once per log
// interval, not per repair), and the fight ends when the part stays put.
func TestFightIsBoundedCountedAndLogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &part{}
		l, logs := start(t, p, Options{Debounce: 5 * time.Millisecond})
		ctx, stopFight := context.WithCancel(context.Background())
		var fighter sync.WaitGroup
		fighter.Go(func() { // undoes every 5 ms and tells the Loop, as netlink would
			for ctx.Err() == nil {
				p.undo()
				l.Kick()
				time.Sleep(5 * time.Millisecond)
			}
		})
		const fight = 30 * time.Second
		time.Sleep(fight)
		heals, _ := l.Book().Heal("route")
		// The burst, then one a second; unbounded it would be ~6,000.
		if max := uint64(DefaultBurst) + uint64(fight/time.Second) + 1; heals > max || heals < max-2 {
			t.Errorf("%d repairs in %v of fighting, want about %d", heals, fight, max)
		}
		if f := l.Book().Fights()["route"]; f != 1 {
			t.Errorf("%d fights counted, want 1", f)
		}
		if k := l.Book().Fighting(); len(k) != 1 || k[0] != "route" {
			t.Errorf("fighting %v, want [route]", k)
		}
		lines := strings.Count(logs.String(), "something keeps undoing routes on gtun0")
		if want := int(fight / logInterval); lines < want || lines > want+1 {
			t.Errorf("%d fight log lines in %v, want %d (once per %v):\n%s", lines, fight, want, logInterval, logs)
		}
		stopFight()
		fighter.Wait()
		// The last undo is repaired within a second; the check after it
		// finds nothing to do and ends the fight.
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if k := l.Book().Fighting(); len(k) != 0 {
			t.Errorf("still fighting %v after the other program stopped", k)
		}
		if !strings.Contains(logs.String(), "the fight is over") {
			t.Errorf("end of the fight not logged:\n%s", logs)
		}
		// A later repair is the first in a while again: at once.
		time.Sleep(20 * time.Second)
		p.undo()
		l.Kick()
		kicked := time.Now()
		time.Sleep(5 * time.Millisecond)
		synctest.Wait()
		if last := p.checks[len(p.checks)-1]; last.Sub(kicked) != 5*time.Millisecond || p.undone {
			t.Errorf("repair after the fight: check %v after the kick, still undone %v", last.Sub(kicked), p.undone)
		}
		if f := l.Book().Fights()["route"]; f != 1 {
			t.Errorf("%d fights counted after one fight, want 1", f)
		}
	})
}

// Checks that repair nothing (events of the daemon's own changes, events
// about other devices) take no token: they are never held back.
func TestChecksWithoutRepairAreNotBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &part{}
		l, _ := start(t, p, Options{})
		for range 1000 {
			l.Kick()
			time.Sleep(time.Millisecond)
		}
		synctest.Wait()
		if n := p.checked(); n != 1001 {
			t.Errorf("%d checks for 1000 kicks a millisecond apart, want 1001", n)
		}
		if f := l.Book().Fights(); f != nil {
			t.Errorf("fights %v without a repair", f)
		}
	})
}

// Without events the check runs every interval.
func TestPeriodicCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &part{}
		l, _ := start(t, p, Options{Interval: time.Second})
		p.undo() // no event: only the tick notices
		time.Sleep(10*time.Second + time.Millisecond)
		if n := p.checked(); n != 11 {
			t.Errorf("%d checks in 10 s at a 1 s interval, want 11", n)
		}
		if n, _ := l.Book().Heal("route"); n != 1 {
			t.Errorf("%d heals, want 1", n)
		}
	})
}

// A failing check is retried sooner than the tick, backing off (100 ms,
// 200 ms, 400 ms ...); the failure is logged once, the recovery once.
func TestFailureRetriedWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &part{fail: 4}
		_, logs := start(t, p, Options{Interval: 10 * time.Second})
		time.Sleep(2 * time.Second)
		synctest.Wait()
		var gaps []time.Duration
		for i := 1; i < len(p.checks); i++ {
			gaps = append(gaps, p.checks[i].Sub(p.checks[i-1]))
		}
		want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
		if len(gaps) != len(want) {
			t.Fatalf("gaps between checks %v, want %v", gaps, want)
		}
		for i := range want {
			if gaps[i] != want[i] {
				t.Errorf("gaps between checks %v, want %v", gaps, want)
				break
			}
		}
		out := logs.String()
		if n := strings.Count(out, "check or repair failed"); n != 1 {
			t.Errorf("failure logged %d times, want 1 (bounded):\n%s", n, out)
		}
		if !strings.Contains(out, "check ok again") {
			t.Errorf("recovery not logged:\n%s", out)
		}
	})
}
