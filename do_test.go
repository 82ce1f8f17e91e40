package evlistener

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestDo(t *testing.T) {
	t.Run("from another goroutine runs on the loop", func(t *testing.T) {
		b := newBase(t)
		startDispatch(t, b, atCleanup)
		var onLoop bool
		if err := b.Do(func() { onLoop = b.onLoop() && isRunning(b) }); err != nil {
			t.Fatal(err)
		}
		if !onLoop {
			t.Fatal("f did not run on the loop goroutine of the running Dispatch")
		}
	})
	t.Run("from a callback runs at once", func(t *testing.T) {
		b := newBase(t)
		var order []string
		tm := newEvent(t, b, -1, 0, func(*Event, int, Events) {
			order = append(order, "callback")
			if err := b.Do(func() { order = append(order, "f") }); err != nil {
				t.Error(err)
			}
			order = append(order, "after Do")
		})
		tm.Active(EvTimeout)
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if got := len(order); got != 3 || order[1] != "f" {
			t.Fatalf("order %v, want callback, f, after Do", order)
		}
	})
	t.Run("with no Dispatch the caller is the loop", func(t *testing.T) {
		b := newBase(t)
		l := listenTCP(t, b, func(_ *Listener, fd int, _ net.Addr) { syscall.Close(fd) }, 0)
		entered, release := make(chan struct{}), make(chan struct{})
		doErr := make(chan error, 1)
		go func() {
			doErr <- b.Do(func() {
				// Methods called from f run at once, as from a callback.
				if err := l.Disable(); err != nil {
					t.Error(err)
				}
				close(entered)
				<-release
			})
		}()
		recv(t, entered, "f")
		// No Dispatch starts while f runs: f counts as the loop.
		r := goDispatch(t, b)
		otherCall := make(chan error, 1)
		go func() { otherCall <- l.Enable() }()
		// A negative: watch for a while that neither gets in.
		for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); time.Sleep(time.Millisecond) {
			if isRunning(b) || r.finished() || len(otherCall) > 0 {
				t.Fatal("Dispatch or another call ran while a function Do runs was not finished")
			}
		}
		close(release)
		if err := recv(t, doErr, "Do"); err != nil {
			t.Fatal(err)
		}
		if err := recv(t, otherCall, "Enable"); err != nil {
			t.Fatal(err)
		}
		b.LoopBreak()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a panic goes on in the caller", func(t *testing.T) {
		for _, running := range []bool{false, true} {
			b := newBase(t)
			if running {
				startDispatch(t, b, atCleanup)
			}
			got := func() (v any) {
				defer func() { v = recover() }()
				b.Do(func() { panic("in f") })
				return nil
			}()
			if got != "in f" {
				t.Fatalf("Dispatch running %v: Do panicked with %v, want the panic of f", running, got)
			}
			// The base works on.
			if err := b.Do(func() {}); err != nil {
				t.Fatalf("Dispatch running %v: Do after a panic: %v", running, err)
			}
		}
	})
}

func TestPost(t *testing.T) {
	t.Run("functions run in order, each once", func(t *testing.T) {
		b := newBase(t)
		startDispatch(t, b, atCleanup)
		const n = 1000
		var got []int // loop-owned
		for i := range n {
			if err := b.Post(func() { got = append(got, i) }); err != nil {
				t.Fatal(err)
			}
		}
		b.Do(func() {}) // after every Post
		var bad bool
		b.Do(func() {
			bad = len(got) != n
			for i, v := range got {
				bad = bad || v != i
			}
		})
		if bad {
			t.Fatalf("posted functions ran as %v, want 0..%d in order", got[:min(len(got), 10)], n-1)
		}
	})
	t.Run("from many goroutines at once", func(t *testing.T) {
		b := newBase(t)
		startDispatch(t, b, atCleanup)
		const n = 2000
		var ran atomic.Int32
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := b.Post(func() { ran.Add(1) }); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		b.Do(func() {})
		if got := ran.Load(); got != n {
			t.Fatalf("%d posted functions ran, want %d", got, n)
		}
	})
	t.Run("from a callback runs after it", func(t *testing.T) {
		b := newBase(t)
		var order []string
		tm := newEvent(t, b, -1, 0, func(*Event, int, Events) {
			b.Post(func() { order = append(order, "posted") })
			order = append(order, "callback")
		})
		tm.Active(EvTimeout)
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if len(order) != 2 || order[0] != "callback" {
			t.Fatalf("order %v, want callback, posted", order)
		}
	})
	t.Run("with no Dispatch runs before it returns", func(t *testing.T) {
		b := newBase(t)
		ran := false
		if err := b.Post(func() { ran = true }); err != nil {
			t.Fatal(err)
		}
		if !ran {
			t.Fatal("Post returned before f ran, with no Dispatch running")
		}
	})
	t.Run("a panic stops the loop", func(t *testing.T) {
		b := newBase(t)
		r := startDispatch(t, b, atCleanup)
		if err := b.Post(func() { panic("posted") }); err != nil {
			t.Fatal(err)
		}
		p, ok := r.waitPanic(t).(*CallbackPanic)
		if !ok || p.Value != "posted" {
			t.Fatalf("Dispatch panicked with %v, want a *CallbackPanic of the posted function", p)
		}
	})
}

func TestDoPostClosed(t *testing.T) {
	b := newBase(t)
	b.Close()
	for name, err := range map[string]error{
		"Do":   b.Do(func() { t.Error("f ran on a closed base") }),
		"Post": b.Post(func() { t.Error("f ran on a closed base") }),
	} {
		if !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s on a closed base: %v, want ErrClosed (net.ErrClosed)", name, err)
		}
	}
	if err := newBase(t).Do(nil); err == nil {
		t.Error("Do(nil) returned nil")
	}
	// Closed from a callback while Dispatch still runs: Post refuses too.
	b2 := newBase(t)
	var postErr error
	tm := newEvent(t, b2, -1, 0, func(*Event, int, Events) {
		b2.Close()
		postErr = b2.Post(func() { t.Error("f ran, posted after Close") })
	})
	tm.Active(EvTimeout)
	if err := startDispatch(t, b2, whenIdle).wait(t); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(postErr, ErrClosed) {
		t.Errorf("Post after Close in a callback: %v, want ErrClosed", postErr)
	}
}
