package evlistener

import (
	"errors"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMethod(t *testing.T) {
	b := newBase(t)
	if m := b.Method(); m != "epoll" {
		t.Fatalf("Method() = %q, want epoll", m)
	}
	if b.CPtr() == nil {
		t.Fatal("CPtr() = nil on an open base")
	}
}

func TestDispatchReturns(t *testing.T) { forEachBaseKind(t, dispatchReturns) }

func dispatchReturns(t *testing.T, kind baseKind) {
	t.Run("with nothing pending", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			setup func(t *testing.T, b *Base)
		}{
			{"no listener", func(*testing.T, *Base) {}},
			{"disabled listener", func(t *testing.T, b *Base) { listenTCP(t, b, nil, Disabled) }},
			{"paused listener", func(t *testing.T, b *Base) { dial(t, listenTCP(t, b, nil, 0).Addr()) }},
			{"closed listener", func(t *testing.T, b *Base) {
				l := idleListener(t, b)
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			}},
			{"listener disabled by Disable", func(t *testing.T, b *Base) {
				if err := idleListener(t, b).Disable(); err != nil {
					t.Fatal(err)
				}
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := newBaseKind(t, kind)
				tc.setup(t, b)
				start := time.Now()
				if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
					t.Fatal(err)
				}
				if d := time.Since(start); d > time.Second {
					t.Fatalf("Dispatch took %v with nothing pending", d)
				}
			})
		}
	})

	t.Run("on LoopBreak from another goroutine, promptly", func(t *testing.T) {
		b := newBaseKind(t, kind)
		idleListener(t, b)
		var lat []time.Duration
		for range 20 {
			r := startDispatch(t, b, whenIdle)
			start := time.Now()
			r.breakAndWait(t, b)
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		t.Logf("LoopBreak to Dispatch return: median %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
		if med := lat[len(lat)/2]; med > 10*time.Millisecond {
			t.Fatalf("median LoopBreak latency %v, want < 10ms", med)
		}
	})

	// libevent breaks its loop only between events, and its accept loop
	// would go on with every queued connection; Dispatch returns after
	// the callback that called LoopBreak, and the next one resumes.
	t.Run("on LoopBreak inside a callback, after that callback", func(t *testing.T) {
		b := newBaseKind(t, kind)
		n := 0
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			n++
			syscall.Close(fd)
			if err := l.Base().LoopBreak(); err != nil {
				t.Error(err)
			}
		}, 0)
		cs := []net.Conn{dial(t, l.Addr()), dial(t, l.Addr()), dial(t, l.Addr())}
		for i := range cs {
			if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
				t.Fatal(err)
			}
			if n != i+1 {
				t.Fatalf("Dispatch %d returned after %d accepts in all, want %d", i+1, n, i+1)
			}
			readEOF(t, cs[i])
			for _, c := range cs[i+1:] {
				stillQueued(t, c)
			}
		}
	})

	// Between Dispatch marking the base running and libevent's loop
	// starting, the loop clears its break flag: a LoopBreak landing there
	// must still end this Dispatch.
	t.Run("on LoopBreak racing with the start of Dispatch", func(t *testing.T) {
		b := newBaseKind(t, kind)
		idleListener(t, b)
		for i := range 300 {
			r := goDispatch(t, b)
			for !isRunning(b) {
				if r.finished() {
					t.Fatalf("round %d: Dispatch returned before LoopBreak: %v", i, r.err)
				}
			}
			r.breakAndWait(t, b)
		}
	})

	t.Run("LoopBreak with no Dispatch running does not affect a later one", func(t *testing.T) {
		b := newBaseKind(t, kind)
		n := 0
		l := listenOnce(t, b, 0, &n)
		for range 3 {
			if err := b.LoopBreak(); err != nil {
				t.Fatal(err)
			}
		}
		dial(t, l.Addr())
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("Dispatch returned after %d accepts; a stale LoopBreak ended it", n)
		}
	})

	for _, tc := range []struct {
		name     string
		listener bool // else nothing but the LoopExit timer is pending
		after    time.Duration
	}{
		{"on LoopExit's timer", true, 50 * time.Millisecond},
		{"a pending LoopExit keeps Dispatch running", false, 30 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBaseKind(t, kind)
			if tc.listener {
				idleListener(t, b)
			}
			start := time.Now()
			if err := b.LoopExit(tc.after); err != nil {
				t.Fatal(err)
			}
			if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
				t.Fatal(err)
			}
			// libevent's cached clock may run a little behind.
			if d := time.Since(start); d < tc.after*8/10 || d > tc.after+time.Second {
				t.Fatalf("Dispatch returned after %v, want about %v: on the LoopExit timer", d, tc.after)
			}
		})
	}

	t.Run("on LoopExit from another goroutine", func(t *testing.T) {
		b := newBaseKind(t, kind)
		idleListener(t, b)
		r := startDispatch(t, b, whenIdle)
		if err := b.LoopExit(0); err != nil {
			t.Fatal(err)
		}
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDispatchTwice(t *testing.T) {
	b := newBase(t)
	idleListener(t, b)
	r := startDispatch(t, b, whenIdle)
	err := startDispatch(t, b, whenIdle).wait(t)
	if err == nil || errors.Is(err, ErrClosed) {
		t.Fatalf("second concurrent Dispatch = %v, want an error", err)
	}
	if r.finished() {
		t.Fatal("the first Dispatch ended")
	}
	r.breakAndWait(t, b)
	// Dispatch runs again once the first returned.
	if err := b.LoopExit(0); err != nil {
		t.Fatal(err)
	}
	if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
		t.Fatal(err)
	}
}

// Dispatch called again from inside a callback is the second concurrent
// Dispatch: an error, not a deadlock or a nested loop.
func TestDispatchInsideCallback(t *testing.T) {
	b := newBase(t)
	var inner error
	l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
		syscall.Close(fd)
		inner = l.Base().Dispatch()
		l.Disable()
	}, 0)
	dial(t, l.Addr())
	if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
		t.Fatal(err)
	}
	if inner == nil {
		t.Fatal("Dispatch inside a callback returned nil")
	}
}

// A listener created inside a callback, on the loop, joins the running loop.
func TestNewBindInsideCallback(t *testing.T) {
	b := newBase(t)
	var inner *Listener
	served := 0
	var innerErr error
	l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
		syscall.Close(fd)
		l.Close()
		inner, innerErr = NewBind(l.Base(), func(l *Listener, fd int, _ net.Addr) {
			served++
			syscall.Close(fd)
			l.Close()
		}, CloseOnFree, -1, "tcp", "127.0.0.1:0")
		if innerErr == nil {
			// Connects at once on loopback, before the loop polls.
			c, err := net.Dial("tcp", inner.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}, 0)
	dial(t, l.Addr())
	if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
		t.Fatal(err)
	}
	if innerErr != nil {
		t.Fatal(innerErr)
	}
	if served != 1 {
		t.Fatalf("the listener made in the callback accepted %d clients, want 1", served)
	}
}

func TestBaseClose(t *testing.T) { forEachBaseKind(t, baseClose) }

func baseClose(t *testing.T, kind baseKind) {
	// checkClosed asserts what a closed base and its listener report.
	checkClosed := func(t *testing.T, b *Base, l *Listener, addr net.Addr) {
		t.Helper()
		if l.FD() != -1 || l.Addr() != nil {
			t.Fatalf("listener after Base.Close: FD() = %d, Addr() = %v", l.FD(), l.Addr())
		}
		if err := l.Close(); !errors.Is(err, ErrClosed) {
			t.Fatalf("listener Close after Base.Close = %v, want ErrClosed", err)
		}
		refused(t, addr)
		if b.Method() != "" || b.CPtr() != nil {
			t.Fatalf("closed base: Method() = %q, CPtr() = %v", b.Method(), b.CPtr())
		}
		for name, err := range map[string]error{
			"Close":     b.Close(),
			"Dispatch":  b.Dispatch(),
			"LoopBreak": b.LoopBreak(),
			"LoopExit":  b.LoopExit(0),
		} {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s on a closed base = %v, want ErrClosed", name, err)
			}
		}
	}

	t.Run("with no Dispatch running", func(t *testing.T) {
		b := newBaseKind(t, kind)
		l := idleListener(t, b)
		addr := l.Addr()
		handles := liveHandles()
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if got := liveHandles(); got != handles-2 {
			t.Fatalf("live handles %d -> %d, want the base's and the listener's released", handles, got)
		}
		checkClosed(t, b, l, addr)
	})

	t.Run("while Dispatch runs on another goroutine", func(t *testing.T) {
		b := newBaseKind(t, kind)
		l := idleListener(t, b)
		addr := l.Addr()
		r := startDispatch(t, b, whenIdle)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		// Close waited for the loop to stop and freed what was open.
		if l.FD() != -1 {
			t.Fatal("the listener is open after Base.Close returned")
		}
		refused(t, addr)
		if err := r.wait(t); err != nil {
			t.Fatalf("Dispatch = %v, want nil", err)
		}
		checkClosed(t, b, l, addr)
	})

	t.Run("while a callback runs", func(t *testing.T) {
		b := newBaseKind(t, kind)
		k := newBlocker(t)
		calls := 0
		l := callbackSources[0].make(t, b, k.block, &calls)
		addr := l.Addr()
		r := startDispatch(t, b, whenIdle)
		recv(t, k.entered, "the callback")
		closed := goClose(t, b)
		if len(closed) != 0 {
			t.Fatal("Base.Close returned while a callback was running")
		}
		close(k.released)
		if err := recv(t, closed, "Base.Close"); err != nil {
			t.Fatal(err)
		}
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
		checkClosed(t, b, l, addr)
	})

	t.Run("inside a callback", func(t *testing.T) {
		b := newBaseKind(t, kind)
		var inCb error
		var fdInCb int
		calls := 0
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			calls++
			syscall.Close(fd)
			inCb = l.Base().Close()
			// Still usable until the callback returns.
			fdInCb = l.FD()
		}, 0)
		addr := l.Addr()
		dial(t, addr)
		queued := dial(t, addr)
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if inCb != nil {
			t.Fatalf("Base.Close inside a callback = %v", inCb)
		}
		// No callback starts after Close, and the queued client is
		// not accepted: closing the listening socket resets it.
		if calls != 1 {
			t.Fatalf("%d accept callbacks, want 1", calls)
		}
		queued.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := queued.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("queued client: read error %v, want ECONNRESET", err)
		}
		if fdInCb < 0 {
			t.Fatalf("FD() = %d right after Base.Close inside the callback", fdInCb)
		}
		checkClosed(t, b, l, addr)
	})

	t.Run("while a callback that panics runs", func(t *testing.T) {
		b := newBaseKind(t, kind)
		k := newBlocker(t)
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			k.block()
			panic("boom")
		}, 0)
		addr := l.Addr()
		dial(t, addr)
		r := startDispatch(t, b, whenIdle)
		recv(t, k.entered, "the callback")
		closed := goClose(t, b)
		close(k.released)
		if err := recv(t, closed, "Base.Close"); err != nil {
			t.Fatal(err)
		}
		if v, ok := r.waitPanic(t).(*CallbackPanic); !ok || v.Value != "boom" {
			t.Fatalf("Dispatch panicked with %v", v)
		}
		checkClosed(t, b, l, addr)
	})

	t.Run("from several goroutines at once", func(t *testing.T) {
		b := newBaseKind(t, kind)
		idleListener(t, b)
		r := startDispatch(t, b, whenIdle)
		if nils := closeAtOnce(t, 8, b.Close); nils != 1 {
			t.Fatalf("%d Close calls returned nil, want 1", nils)
		}
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("NewBind on a closed base", func(t *testing.T) {
		b := newBaseKind(t, kind)
		b.Close()
		if _, err := NewBind(b, nil, 0, -1, "tcp", "127.0.0.1:0"); err == nil {
			t.Fatal("NewBind on a closed base succeeded")
		}
	})
}

// goClose calls b.Close on another goroutine, which waits for the
// callback that runs, and returns once Close has marked b closed; the
// channel gives what Close returns.
func goClose(t *testing.T, b *Base) <-chan error {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	waitFor(t, "Close to mark the base closed", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.closed
	})
	return closed
}

// Methods called from another goroutine while Dispatch runs are handed to
// the loop; their effect is visible when they return.
func TestCallsWhileDispatchRuns(t *testing.T) { forEachBaseKind(t, callsWhileDispatchRuns) }

func callsWhileDispatchRuns(t *testing.T, kind baseKind) {
	b := newBaseKind(t, kind)
	accepted := make(chan struct{}, 10)
	l := listenTCP(t, b, func(_ *Listener, fd int, _ net.Addr) {
		syscall.Close(fd)
		accepted <- struct{}{}
	}, Disabled)
	idleListener(t, b)
	r := startDispatch(t, b, whenIdle)
	c := dial(t, l.Addr())
	stillQueued(t, c)
	if err := l.Enable(); err != nil {
		t.Fatal(err)
	}
	recv(t, accepted, "the accept after Enable")
	readEOF(t, c)
	if err := l.Disable(); err != nil {
		t.Fatal(err)
	}
	c = dial(t, l.Addr())
	stillQueued(t, c)
	// A listener made while Dispatch runs joins the running loop.
	l2 := listenTCP(t, b, func(_ *Listener, fd int, _ net.Addr) {
		syscall.Close(fd)
		accepted <- struct{}{}
	}, 0)
	c2 := dial(t, l2.Addr())
	recv(t, accepted, "the accept on a listener made during Dispatch")
	readEOF(t, c2)
	r.breakAndWait(t, b)
	stillQueued(t, c)
}

func TestNewBaseWithFlags(t *testing.T) {
	t.Run("unknown flags", func(t *testing.T) {
		checkNoLeaks(t)
		for _, f := range []BaseFlag{0x04, 0x40, 0x100, -1} { // 0x04: IOCP, Windows only
			b, err := NewBaseWithFlags(f)
			if err == nil {
				b.Close()
				t.Fatalf("NewBaseWithFlags(%#x) succeeded", int(f))
			}
			if !strings.Contains(err.Error(), "unknown flags") {
				t.Fatalf("NewBaseWithFlags(%#x): %v", int(f), err)
			}
		}
	})
	// The flags reach event_config: EVENT_NOEPOLL steers libevent away
	// from epoll unless the base ignores the environment.
	t.Run("BaseIgnoreEnv", func(t *testing.T) {
		if m := newBase(t).Method(); m != "epoll" {
			t.Skipf("the default backend here is %q, not epoll", m)
		}
		t.Setenv("EVENT_NOEPOLL", "1")
		if m := newBase(t).Method(); m == "epoll" {
			t.Fatal("EVENT_NOEPOLL=1 left NewBase on epoll")
		}
		if m := newBaseKind(t, baseKind{flags: BaseIgnoreEnv | BaseNoLock}).Method(); m != "epoll" {
			t.Fatalf("with BaseIgnoreEnv the backend is %q, want epoll", m)
		}
	})
}

// idleListener adds a listener with nothing to accept, which keeps Dispatch
// running until something else ends it.
func idleListener(t testing.TB, b *Base) *Listener {
	t.Helper()
	return listenTCP(t, b, func(_ *Listener, fd int, _ net.Addr) { syscall.Close(fd) }, 0)
}
