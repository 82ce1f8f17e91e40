package evlistener

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The loop hand-off under load: a call from another goroutine waits for the
// callback that runs now, and no longer, however fast clients arrive.

// floodCallback is how long each accept callback of a flood takes: far
// longer than a loopback dial, so that connections always wait in the
// backlog and libevent's accept loop never runs dry by itself.
const floodCallback = 5 * time.Millisecond

// floodBound is what a call under a flood may take: the callback that runs
// when it is made, plus scheduling on a loaded 2-core machine under -race.
// Without a prompt hand-off such a call waits until the clients stop.
const floodBound = floodCallback + 250*time.Millisecond

// flood dials addr from n goroutines in a loop, each closing its
// connection at once, until stop returns.
func flood(t *testing.T, addr net.Addr, n int) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var d net.Dialer
			for ctx.Err() == nil {
				if c, err := d.DialContext(ctx, addr.Network(), addr.String()); err == nil {
					c.Close()
				}
			}
		}()
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func TestCallsUnderAcceptFlood(t *testing.T) {
	// Each op is called from a goroutine other than the loop's while the
	// accept callback is kept busy by 8 dialing goroutines. stops says
	// whether the op ends accepting: no callback may start after it
	// returned (for LoopBreak, after the callback that ran when it was
	// called).
	const goesOn = -1 // slack of an op after which accepting goes on
	ops := []struct {
		name  string
		op    func(b *Base, l *Listener) error
		slack int64 // callbacks that may still start after op returned
	}{
		{"Listener.Enable", func(_ *Base, l *Listener) error { return l.Enable() }, goesOn},
		{"Base.Do", func(b *Base, _ *Listener) error { return b.Do(func() {}) }, goesOn},
		{"Listener.Close", func(_ *Base, l *Listener) error { return l.Close() }, 0},
		{"Listener.Disable", func(_ *Base, l *Listener) error { return l.Disable() }, 0},
		{"Listener.SetCallback(nil)", func(_ *Base, l *Listener) error { l.SetCallback(nil); return nil }, 0},
		// LoopBreak does not wait for the loop: the callback running as
		// it is called may be one that has not counted itself yet.
		{"Base.LoopBreak", func(b *Base, _ *Listener) error { return b.LoopBreak() }, 1},
		{"Base.Close", func(b *Base, _ *Listener) error { return b.Close() }, 0},
	}
	for _, tc := range ops {
		t.Run(tc.name, func(t *testing.T) {
			b := newBase(t)
			var accepted atomic.Int64
			l := listenTCP(t, b, func(_ *Listener, fd int, _ net.Addr) {
				accepted.Add(1)
				syscall.Close(fd)
				time.Sleep(floodCallback) // the work: slower than the clients
			}, 0)
			r := startDispatch(t, b, whenIdle)
			stopFlood := flood(t, l.Addr(), 8)
			waitFor(t, "the flood to be accepted", func() bool { return accepted.Load() >= 20 })

			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- tc.op(b, l) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(3 * time.Second):
				stopFlood()
				t.Fatalf("%s did not return within 3s under the flood", tc.name)
			}
			took := time.Since(start)
			n := accepted.Load()
			if err != nil {
				t.Fatalf("%s = %v", tc.name, err)
			}
			if tc.slack == goesOn {
				// The loop goes on accepting; Close, checked above,
				// ends it.
				t.Logf("%s returned after %v (%d connections accepted)", tc.name, took, n)
				if took > floodBound {
					t.Errorf("%s took %v; want within %v", tc.name, took, floodBound)
				}
				stopFlood()
				b.Close()
				return
			}
			// Every other op leaves the loop with nothing to do:
			// Dispatch ends.
			dispatchErr := make(chan error, 1)
			go func() { dispatchErr <- r.wait(t) }()
			select {
			case err = <-dispatchErr:
			case <-time.After(3 * time.Second):
				stopFlood()
				t.Fatalf("Dispatch did not return within 3s of %s under the flood", tc.name)
			}
			ended := time.Since(start)
			stopFlood()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s returned after %v, Dispatch after %v (%d connections accepted)", tc.name, took, ended, n)
			if took > floodBound || ended > floodBound {
				t.Errorf("%s took %v and Dispatch returned after %v; want both within %v", tc.name, took, ended, floodBound)
			}
			if got := accepted.Load(); got > n+tc.slack {
				t.Errorf("%d callbacks started after %s returned, want at most %d", got-n, tc.name, tc.slack)
			}
		})
	}
}

// LoopBreak from another goroutine during a slow callback: Dispatch returns
// as that callback returns, and nothing else queued starts, neither
// connections waiting in the backlog (libevent's accept loop would take
// them all) nor other active events. The next Dispatch serves them.
func TestLoopBreakLetsNoQueuedCallbackStart(t *testing.T) {
	// Each source queues 4 callbacks before Dispatch; callback runs first
	// in each, and blocks in the first.
	sources := []struct {
		name  string
		queue func(t *testing.T, b *Base, callback func())
	}{
		{"connections in the backlog", func(t *testing.T, b *Base, callback func()) {
			n := 0 // loop-owned
			l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
				syscall.Close(fd)
				callback()
				if n++; n == 4 {
					l.Disable() // all served: let Dispatch end by itself
				}
			}, 0)
			for range 4 {
				dial(t, l.Addr())
			}
		}},
		{"active events", func(t *testing.T, b *Base, callback func()) {
			for range 4 {
				ev := newEvent(t, b, -1, 0, func(*Event, int, Events) { callback() })
				if err := ev.Active(EvTimeout); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) {
			b := newBase(t)
			k := newBlocker(t)
			var calls atomic.Int32
			src.queue(t, b, func() {
				if calls.Add(1) == 1 {
					k.block()
				}
			})
			r := startDispatch(t, b, whenIdle)
			recv(t, k.entered, "the first callback")
			if err := b.LoopBreak(); err != nil {
				t.Fatal(err)
			}
			close(k.released)
			if err := r.wait(t); err != nil {
				t.Fatal(err)
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("%d callbacks ran, want 1: %s ran after LoopBreak", n, src.name)
			}
			if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
				t.Fatal(err)
			}
			if n := calls.Load(); n != 4 {
				t.Fatalf("%d callbacks after the second Dispatch, want 4", n)
			}
		})
	}
}

func init() { helpers["many-waiters"] = helperManyWaiters }

// manyWaiters is how many goroutines wait for the loop at once.
const manyWaiters = 20000

// maxThreads bounds the OS threads of a process with manyWaiters waiting.
const maxThreads = 100

// A goroutine waiting for the loop parks in the Go scheduler: 20,000 of them
// at once need no thread each. Run in a child process, where a binding that
// blocked a thread per waiter would only kill the child (the Go runtime
// stops at 10,000 threads), at GOMAXPROCS 1 and 2.
func TestManyWaitersNeedNoThreads(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run("GOMAXPROCS="+strconv.Itoa(procs), func(t *testing.T) {
			p := startHelper(t, "many-waiters", "GOMAXPROCS="+strconv.Itoa(procs))
			p.wait(t, 60*time.Second)
			t.Log(strings.TrimSpace(p.stderr.String()))
		})
	}
}

func helperManyWaiters() error {
	b, err := NewBase()
	if err != nil {
		return err
	}
	defer b.Close()
	evs := make([]*Event, manyWaiters)
	for i := range evs {
		if evs[i], err = NewTimer(b, func(*Event, int, Events) {}); err != nil {
			return err
		}
	}
	// A callback holds the loop until every call waits for it.
	entered, release := make(chan struct{}), make(chan struct{})
	hold, err := NewTimer(b, func(*Event, int, Events) {
		close(entered)
		<-release
	})
	if err != nil {
		return err
	}
	if err := hold.Active(EvTimeout); err != nil {
		return err
	}
	dispatched := make(chan error, 1)
	go func() { dispatched <- b.Dispatch() }()
	<-entered
	errs := make(chan error, manyWaiters)
	start := time.Now()
	for _, ev := range evs {
		go func() { errs <- ev.Close() }()
	}
	deadline := time.Now().Add(30 * time.Second)
	for queuedCalls(b) < manyWaiters {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d calls waiting after 30s", queuedCalls(b), manyWaiters)
		}
		time.Sleep(time.Millisecond)
	}
	threads, err := threadCount()
	if err != nil {
		return err
	}
	queued := time.Since(start)
	close(release)
	for range manyWaiters {
		if err := <-errs; err != nil {
			return fmt.Errorf("Close: %v", err)
		}
	}
	fmt.Fprintf(os.Stderr, "GOMAXPROCS=%d: %d goroutines waiting after %v with %d OS threads; all returned %v after the loop was free\n",
		runtime.GOMAXPROCS(0), manyWaiters, queued.Round(time.Millisecond), threads, time.Since(start.Add(queued)).Round(time.Millisecond))
	if threads > maxThreads {
		return fmt.Errorf("%d OS threads with %d goroutines waiting for the loop, want at most %d", threads, manyWaiters, maxThreads)
	}
	if err := hold.Close(); err != nil {
		return err
	}
	if err := b.Close(); err != nil {
		return err
	}
	return <-dispatched
}

// threadCount reads the process's OS thread count from /proc.
func threadCount() (int, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no Threads line in /proc/self/status")
}

// BenchmarkHandoff measures one call from another goroutine (Event.Pending:
// a trivial loop half, so that the hand-off is all there is), by one caller
// at a time and by many at once.
func BenchmarkHandoff(b *testing.B) {
	base, err := NewBase()
	if err != nil {
		b.Fatal(err)
	}
	ev, err := NewTimer(base, func(*Event, int, Events) {})
	if err != nil {
		b.Fatal(err)
	}
	startDispatch(b, base, atCleanup)
	b.Run("one caller", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev.Pending(EvTimeout)
		}
	})
	b.Run("64 callers", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ev.Pending(EvTimeout)
			}
		})
	})
}

// queuedCalls counts the calls from other goroutines waiting for the loop.
func queuedCalls(b *Base) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}
