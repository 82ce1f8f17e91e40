package evlistener

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBusyPoll(t *testing.T) {
	// fireOnce runs Dispatch with a timer that fires at once and a
	// LoopExit far away, and returns the loop thread's id once the timer's
	// callback ran, and the running Dispatch.
	fireOnce := func(t *testing.T, b *Base) (tid int, r *running) {
		t.Helper()
		tids := make(chan int, 1)
		tm := newTimer(t, b, func(*Event, int, Events) { tids <- syscall.Gettid() })
		if err := tm.Add(time.Microsecond); err != nil {
			t.Fatal(err)
		}
		r = startDispatch(t, b, atCleanup)
		return recv(t, tids, "the timer callback"), r
	}

	t.Run("polls after a callback", func(t *testing.T) {
		b := newBaseKind(t, baseKind{flags: BaseNoLock, busyPoll: true})
		_, r := fireOnce(t, b)
		// A LoopBreak now could land before the loop's next turn: wait
		// for that turn, a poll, first.
		waitFor(t, "Dispatch to poll after the callback", func() bool { return b.polls.Load() > 0 })
		r.breakAndWait(t, b)
	})
	t.Run("an idle loop never polls, whatever the budget", func(t *testing.T) {
		b := newBase(t)
		if err := errors.Join(b.SetBusyPoll(time.Hour), b.SetBusyPollBudget(math.Inf(1)), b.LoopExit(time.Hour)); err != nil {
			t.Fatal(err)
		}
		tids := make(chan int, 1)
		r := &running{done: make(chan struct{})}
		go func() {
			defer close(r.done)
			runtime.LockOSThread() // Dispatch's loop runs on this thread
			tids <- syscall.Gettid()
			r.err = b.Dispatch()
		}()
		tid := recv(t, tids, "the loop thread")
		waitFor(t, "the loop thread to wait in epoll with a timeout", func() bool { return inBlockingEpollWait(t, tid) })
		if n := b.polls.Load(); n != 0 {
			t.Errorf("the loop polled %d times before any callback ran", n)
		}
		r.breakAndWait(t, b)
	})
	t.Run("off by default", func(t *testing.T) {
		b := newBase(t)
		_, r := fireOnce(t, b)
		r.breakAndWait(t, b)
		if n := b.polls.Load(); n != 0 {
			t.Fatalf("Dispatch polled %d times without SetBusyPoll", n)
		}
	})
	t.Run("sleeps once the window has passed", func(t *testing.T) {
		b := newBase(t)
		if err := errors.Join(b.SetBusyPoll(time.Millisecond), b.SetBusyPollBudget(math.Inf(1))); err != nil {
			t.Fatal(err)
		}
		tid, r := fireOnce(t, b)
		waitFor(t, "the loop thread to wait in epoll with a timeout", func() bool { return inBlockingEpollWait(t, tid) })
		r.breakAndWait(t, b)
	})
	t.Run("the budget ends polling", func(t *testing.T) {
		// An hour's window, but the default budget: a callback that works
		// for 2 ms earns 200 µs of polling, and then the loop sleeps.
		b := newBase(t)
		if err := b.SetBusyPoll(time.Hour); err != nil {
			t.Fatal(err)
		}
		tids := make(chan int, 1)
		tm, err := NewTimer(b, func(*Event, int, Events) {
			for start := time.Now(); time.Since(start) < 2*time.Millisecond; {
			}
			tids <- syscall.Gettid()
		})
		if err != nil {
			t.Fatal(err)
		}
		defer tm.Close()
		if err := tm.Add(time.Microsecond); err != nil {
			t.Fatal(err)
		}
		r := startDispatch(t, b, atCleanup)
		tid := recv(t, tids, "the timer callback")
		waitFor(t, "the loop thread to wait in epoll with a timeout", func() bool { return inBlockingEpollWait(t, tid) })
		if n := b.polls.Load(); n == 0 {
			t.Error("the loop never polled on the credit the callback earned")
		}
		r.breakAndWait(t, b)
	})
	t.Run("the budget", func(t *testing.T) {
		const us = time.Microsecond
		fresh := newPoller(50*us, 0.1)
		if fresh.limit() != 0 {
			t.Errorf("a loop that has not worked polls for %v, want 0", fresh.limit())
		}
		// Work earns a tenth of its time.
		p := newPoller(50*us, 0.1)
		p.worked(time.Second, 100*us)
		if l := p.limit(); l <= 0 || l > 10*us {
			t.Fatalf("after 100 µs of work: polls for %v, want more than 0, at most 10 µs", l)
		}
		// Work that comes 8 µs after the last, after 100 µs of work each
		// time: it learns to poll about that long, not the whole credit.
		caught := 0
		for range 200 {
			if p.limit() >= 8*us {
				caught++
			}
			p.worked(8*us, 100*us)
		}
		if l := p.limit(); l < 8*us || l > 20*us {
			t.Errorf("work every 8 µs: polls for %v, want 8 to 20 µs", l)
		}
		if caught < 190 {
			t.Errorf("work every 8 µs, 10 µs earned each time: %d of 200 caught, want at least 190", caught)
		}
		// Work that comes 30 µs after the last with 40 µs of it: 4 µs
		// earned each time. It saves up rather than poll short, then
		// polls long enough.
		polls, caught := 0, 0
		for range 200 {
			if l := p.limit(); l > 0 {
				polls++
				if l >= 30*us {
					caught++
				}
			}
			p.worked(30*us, 40*us)
		}
		if polls > 100 || caught < polls/2 {
			t.Errorf("work every 30 µs, 4 µs earned each time: polled %d times of 200, caught %d, want at most 100, most caught", polls, caught)
		}
		// Work that always comes later than the window: only a full
		// credit polls (a probe), once per 50 µs earned.
		polls = 0
		for range 1000 {
			if p.limit() > 0 {
				polls++
			}
			p.worked(time.Millisecond, 10*us)
		}
		if polls > 30 {
			t.Errorf("work always late: polled %d times in 1000 turns earning 1 µs each, want about 20", polls)
		}
		u := newPoller(50*us, math.Inf(1))
		for _, gap := range []time.Duration{0, 10 * us, time.Second} {
			u.worked(gap, 0)
			if got := u.limit(); got != 50*us {
				t.Fatalf("no budget: polls for %v, want the window", got)
			}
		}
	})
	t.Run("polling stays within the budget", func(t *testing.T) {
		// Whatever the work, the time spent polling (up to the work or
		// the limit, whichever came first) stays within the budget's share
		// of the time worked, plus at most one window.
		const spin = 50 * time.Microsecond
		rng := rand.New(rand.NewPCG(1, 2))
		for _, share := range []float64{0, 0.1, 0.5} {
			p := newPoller(spin, share)
			var polled, worked time.Duration
			caught := 0
			for range 100000 {
				var gap time.Duration
				switch rng.IntN(3) {
				case 0:
					gap = time.Duration(rng.Int64N(int64(5 * time.Microsecond)))
				case 1:
					gap = time.Duration(rng.Int64N(int64(100 * time.Microsecond)))
				default:
					gap = time.Duration(rng.Int64N(int64(10 * time.Millisecond)))
				}
				busy := time.Duration(rng.Int64N(int64(30 * time.Microsecond)))
				limit := p.limit()
				if gap <= limit {
					caught++
				}
				polled += min(gap, limit)
				worked += busy
				p.worked(gap, busy)
			}
			if bound := time.Duration(share*float64(worked)) + spin; polled > bound {
				t.Errorf("share %v: polled %v for %v of work, more than %v", share, polled, worked, bound)
			}
			if share > 0 && caught == 0 {
				t.Errorf("share %v: polling caught no work", share)
			}
		}
	})
	t.Run("bad budget", func(t *testing.T) {
		b := newBase(t)
		for _, share := range []float64{-0.1, math.NaN(), math.Inf(-1)} {
			if err := b.SetBusyPollBudget(share); err == nil {
				t.Errorf("SetBusyPollBudget(%v) accepted", share)
			}
		}
		for _, share := range []float64{0, 0.1, 2, math.Inf(1)} {
			if err := b.SetBusyPollBudget(share); err != nil {
				t.Errorf("SetBusyPollBudget(%v): %v", share, err)
			}
		}
	})
	t.Run("closed base", func(t *testing.T) {
		b := newBase(t)
		b.Close()
		if err := b.SetBusyPoll(time.Second); !errors.Is(err, ErrClosed) {
			t.Fatalf("SetBusyPoll on a closed base: %v, want ErrClosed", err)
		}
		if err := b.SetBusyPollBudget(1); !errors.Is(err, ErrClosed) {
			t.Fatalf("SetBusyPollBudget on a closed base: %v, want ErrClosed", err)
		}
		if err := b.SetBusyPollBudget(math.NaN()); !errors.Is(err, ErrClosed) {
			t.Fatalf("SetBusyPollBudget(NaN) on a closed base: %v, want ErrClosed: closed comes before the arguments", err)
		}
	})
}

// inBlockingEpollWait reports whether thread tid of this process is in an
// epoll wait with a timeout other than 0 (libevent's loop asleep, not
// polling), from /proc/self/task/TID/syscall: "NR arg1 arg2 ... sp pc".
func inBlockingEpollWait(t *testing.T, tid int) bool {
	t.Helper()
	line, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/syscall", tid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(line))
	if len(f) < 5 {
		return false // "running", or not in a system call
	}
	waits := map[string][]string{
		"amd64": {"232", "281", "441"}, // epoll_wait, epoll_pwait, epoll_pwait2
		"arm64": {"22", "441"},         // epoll_pwait, epoll_pwait2
	}[runtime.GOARCH]
	if waits == nil {
		t.Skipf("epoll syscall numbers of %s not listed", runtime.GOARCH)
	}
	// The timeout is the fourth argument (a pointer for epoll_pwait2).
	return slices.Contains(waits, f[0]) && f[4] != "0x0"
}
