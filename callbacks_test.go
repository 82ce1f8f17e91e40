package evlistener

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// libevent 2.1.12 deadlocks when evconnlistener_disable or _free runs on
// another thread while the listener's callback runs (issue #1224): that
// thread waits in event_del for the callback, and the loop thread, back
// from the callback, waits for the listener lock. Each case holds the
// callback until the other goroutine's call is waiting, then releases it;
// a binding that called libevent from the other goroutine would hang here.
func TestCallFromOtherGoroutineDuringCallback(t *testing.T) {
	ops := []struct {
		name string
		op   func(l *Listener) error
	}{
		{"Disable", (*Listener).Disable},
		{"Close", (*Listener).Close},
		{"SetCallback(nil)", func(l *Listener) error { l.SetCallback(nil); return nil }},
	}
	for _, src := range callbackSources {
		for _, op := range ops {
			t.Run(op.name+" while the "+src.name+" runs", func(t *testing.T) {
				b := newBase(t)
				k := newBlocker(t)
				calls := 0
				l := src.make(t, b, k.block, &calls)
				r := startDispatch(t, b, whenIdle)
				recv(t, k.entered, "the callback")
				opErr := make(chan error, 1)
				go func() { opErr <- op.op(l) }()
				waitFor(t, op.name+" to wait for the loop", func() bool {
					return queuedCalls(b) > 0 || len(opErr) > 0
				})
				close(k.released)
				if err := recv(t, opErr, op.name); err != nil {
					t.Fatalf("%s = %v", op.name, err)
				}
				// The listener no longer keeps the loop alive, nor
				// does a back-off retry: Dispatch ends on its own.
				if err := r.wait(t); err != nil {
					t.Fatal(err)
				}
				if calls != 1 {
					t.Fatalf("%d callbacks, want 1", calls)
				}
				// A later Dispatch finds nothing to do either.
				if err := startDispatch(t, b, whenIdle).wait(t); err != nil || calls != 1 {
					t.Fatalf("second Dispatch = %v with %d callbacks; want nil, 1", err, calls)
				}
			})
		}
	}
	// Enable while the accept callback runs keeps the listener going.
	t.Run("Enable while the accept callback runs", func(t *testing.T) {
		b := newBase(t)
		k := newBlocker(t)
		calls := 0
		l := callbackSources[0].make(t, b, k.block, &calls)
		r := startDispatch(t, b, whenIdle)
		recv(t, k.entered, "the callback")
		opErr := make(chan error, 1)
		go func() { opErr <- l.Enable() }()
		waitFor(t, "Enable to wait for the loop", func() bool { return queuedCalls(b) > 0 || len(opErr) > 0 })
		close(k.released)
		if err := recv(t, opErr, "Enable"); err != nil {
			t.Fatal(err)
		}
		dial(t, l.Addr())
		waitFor(t, "the second client to be accepted", func() bool { return acceptedCount(b, &calls) == 2 })
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
	})
}

// acceptedCount reads a counter owned by the loop, on the loop.
func acceptedCount(b *Base, n *int) int {
	var v int
	b.call(func() error { v = *n; return nil })
	return v
}

func TestNilCallbackPauses(t *testing.T) {
	// countAndDisable counts accepts, closes each fd and disables the
	// listener at n, so that Dispatch ends on its own.
	countAndDisable := func(t *testing.T, count *int, n int) AcceptFunc {
		return func(l *Listener, fd int, _ net.Addr) {
			syscall.Close(fd)
			if *count++; *count == n {
				if err := l.Disable(); err != nil {
					t.Error(err)
				}
			}
		}
	}
	// acceptsOnceSetCallback checks that c is still queued on l, a
	// listener without a callback, and that after SetCallback one turn of
	// the loop accepts it.
	acceptsOnceSetCallback := func(t *testing.T, b *Base, l *Listener, c net.Conn) {
		t.Helper()
		stillQueued(t, c)
		n := 0
		l.SetCallback(countAndDisable(t, &n, 1))
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d accepts after SetCallback, want 1", n)
		}
	}

	t.Run("nil callback at creation", func(t *testing.T) {
		b := newBase(t)
		l := listenTCP(t, b, nil, 0)
		c := dial(t, l.Addr())
		// A paused listener keeps nothing pending.
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		acceptsOnceSetCallback(t, b, l, c)
		readEOF(t, c)
	})

	t.Run("Enable with a nil callback, then SetCallback", func(t *testing.T) {
		b := newBase(t)
		l := listenTCP(t, b, nil, Disabled)
		c := dial(t, l.Addr())
		if err := l.Enable(); err != nil {
			t.Fatal(err)
		}
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		acceptsOnceSetCallback(t, b, l, c)
	})

	t.Run("SetCallback(nil) on a running listener", func(t *testing.T) {
		b := newBase(t)
		n := 0
		l := listenTCP(t, b, countAndDisable(t, &n, 100), 0)
		r := startDispatch(t, b, whenIdle)
		l.SetCallback(nil)
		if err := r.wait(t); err != nil { // nothing pending any more
			t.Fatal(err)
		}
		c := dial(t, l.Addr())
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		stillQueued(t, c)
		l.SetCallback(countAndDisable(t, &n, 1))
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d accepts, want 1", n)
		}
		readEOF(t, c)
	})

	// libevent's own set_cb(NULL) inside the callback makes its accept
	// loop take the next queued connection and close it.
	for _, enable := range []bool{false, true} {
		name := "SetCallback(nil) inside the callback"
		if enable {
			name += ", then Enable"
		}
		t.Run(name, func(t *testing.T) {
			b := newBase(t)
			n := 0
			l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
				n++
				syscall.Close(fd)
				l.SetCallback(nil)
				if enable {
					if err := l.Enable(); err != nil {
						t.Error(err)
					}
				}
			}, 0)
			c1 := dial(t, l.Addr())
			c2 := dial(t, l.Addr())
			c3 := dial(t, l.Addr())
			if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("%d accepts, want 1", n)
			}
			readEOF(t, c1)
			stillQueued(t, c2)
			stillQueued(t, c3)
			m := 0
			l.SetCallback(countAndDisable(t, &m, 2))
			if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
				t.Fatal(err)
			}
			if m != 2 {
				t.Fatalf("%d accepts after SetCallback, want 2", m)
			}
			readEOF(t, c2)
			readEOF(t, c3)
		})
	}

	t.Run("SetCallback inside the callback replaces it", func(t *testing.T) {
		b := newBase(t)
		var first, second int
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			first++
			syscall.Close(fd)
			l.SetCallback(countAndDisable(t, &second, 2))
		}, 0)
		for range 3 {
			dial(t, l.Addr())
		}
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if first != 1 || second != 2 {
			t.Fatalf("callbacks ran %d and %d times, want 1 and 2", first, second)
		}
	})
}

// Disabling inside the accept callback stops libevent's accept loop at
// once; the rest of the queue waits and is accepted after Enable.
func TestDisableInsideCallback(t *testing.T) {
	b := newBase(t)
	n := 0
	l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
		syscall.Close(fd)
		if n++; n == 1 || n == 3 {
			if err := l.Disable(); err != nil {
				t.Error(err)
			}
		}
	}, 0)
	cs := []net.Conn{dial(t, l.Addr()), dial(t, l.Addr()), dial(t, l.Addr())}
	if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d accepts, want 1", n)
	}
	readEOF(t, cs[0])
	stillQueued(t, cs[1])
	stillQueued(t, cs[2])
	if err := l.Enable(); err != nil {
		t.Fatal(err)
	}
	if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("%d accepts after Enable, want 3", n)
	}
	readEOF(t, cs[1])
	readEOF(t, cs[2])
}

func TestCallbackPanics(t *testing.T) {
	type boom struct{ n int }

	t.Run("panic in the accept callback", func(t *testing.T) {
		b := newBase(t)
		calls := 0
		var panicFD int
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			calls++
			if calls == 1 {
				panicFD = fd
				panic(&boom{42})
			}
			syscall.Close(fd)
			l.Disable()
		}, 0)
		c1 := dial(t, l.Addr())
		c2 := dial(t, l.Addr())
		v := startDispatch(t, b, whenIdle).waitPanic(t)
		cp, ok := v.(*CallbackPanic)
		if !ok {
			t.Fatalf("Dispatch panicked with %#v, want *CallbackPanic", v)
		}
		if bv, ok := cp.Value.(*boom); !ok || bv.n != 42 {
			t.Fatalf("CallbackPanic.Value = %#v, want the callback's *boom", cp.Value)
		}
		// The stack is the callback's, taken where it panicked.
		if !strings.Contains(string(cp.Stack), "TestCallbackPanics") {
			t.Fatalf("CallbackPanic.Stack does not show the callback:\n%s", cp.Stack)
		}
		if msg := cp.Error(); !strings.Contains(msg, "42") || !strings.Contains(msg, "TestCallbackPanics") {
			t.Fatalf("Error() = %q, want the value and the stack", msg)
		}
		if calls != 1 {
			t.Fatalf("%d accept callbacks before Dispatch panicked, want 1", calls)
		}
		readEOF(t, c1) // the binding closed the fd the callback owned
		if fdOpen(panicFD) && isSocketTo(panicFD, c1) {
			t.Fatal("the panicking callback's fd is still open")
		}
		stillQueued(t, c2)
		// The listener resumes with the next Dispatch.
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if calls != 2 {
			t.Fatalf("%d accept callbacks after the next Dispatch, want 2", calls)
		}
		readEOF(t, c2)
	})

	t.Run("no other callback runs after a panic", func(t *testing.T) {
		b := newBase(t)
		calls := 0
		cb := func(*Listener, int, net.Addr) {
			calls++
			panic("boom")
		}
		// Both listening sockets are readable in the same loop pass.
		l1 := listenTCP(t, b, cb, 0)
		l2 := listenTCP(t, b, cb, 0)
		dial(t, l1.Addr())
		dial(t, l2.Addr())
		if v, ok := startDispatch(t, b, whenIdle).waitPanic(t).(*CallbackPanic); !ok || v.Value != "boom" {
			t.Fatalf("Dispatch panicked with %v", v)
		}
		if calls != 1 {
			t.Fatalf("%d callbacks ran, want 1", calls)
		}
		if v, ok := startDispatch(t, b, whenIdle).waitPanic(t).(*CallbackPanic); !ok || v.Value != "boom" || calls != 2 {
			t.Fatalf("second Dispatch panicked with %v after %d callbacks", v, calls)
		}
	})

	t.Run("panic in the error callback", func(t *testing.T) {
		b := newBase(t)
		l := notListening(t, b)
		calls := 0
		l.SetErrorCallback(func(l *Listener, err error) {
			calls++
			if calls == 1 {
				panic(err)
			}
			l.Disable()
		})
		v := startDispatch(t, b, whenIdle).waitPanic(t)
		cp, ok := v.(*CallbackPanic)
		if !ok || !errors.Is(cp, syscall.EINVAL) || len(cp.Stack) == 0 {
			t.Fatalf("Dispatch panicked with %#v, want a *CallbackPanic wrapping the EINVAL error", v)
		}
		if calls != 1 {
			t.Fatalf("%d error callbacks, want 1", calls)
		}
		// Resumes with the next Dispatch: the retry fails again.
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if calls != 2 {
			t.Fatalf("%d error callbacks after the next Dispatch, want 2", calls)
		}
	})

	t.Run("panic while another goroutine waits for the loop", func(t *testing.T) {
		b := newBase(t)
		k := newBlocker(t)
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			k.block()
			panic("boom")
		}, 0)
		dial(t, l.Addr())
		r := startDispatch(t, b, whenIdle)
		recv(t, k.entered, "the callback")
		disabled := make(chan error, 1)
		go func() { disabled <- l.Disable() }()
		waitFor(t, "Disable to wait for the loop", func() bool { return queuedCalls(b) > 0 })
		close(k.released)
		if v, ok := r.waitPanic(t).(*CallbackPanic); !ok || v.Value != "boom" {
			t.Fatalf("Dispatch panicked with %v", v)
		}
		if err := recv(t, disabled, "Disable"); err != nil {
			t.Fatalf("Disable = %v", err)
		}
		// Disabled by the user: the next Dispatch does not resume it.
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("panic after Close inside the callback", func(t *testing.T) {
		b := newBase(t)
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			l.Close()
			panic("boom")
		}, 0)
		c := dial(t, l.Addr())
		if _, ok := startDispatch(t, b, whenIdle).waitPanic(t).(*CallbackPanic); !ok {
			t.Fatal("Dispatch did not panic")
		}
		readEOF(t, c)
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil { // nothing left
			t.Fatal(err)
		}
	})
}

// isSocketTo reports whether fd is the server side of client c.
func isSocketTo(fd int, c net.Conn) bool {
	sa, err := syscall.Getpeername(fd)
	if err != nil {
		return false
	}
	sin, ok := sa.(*syscall.SockaddrInet4)
	return ok && sin.Port == c.LocalAddr().(*net.TCPAddr).Port
}

// blocker holds a callback until the test releases it; a callback never
// stays blocked longer than dispatchTimeout, so a failing test still ends.
type blocker struct {
	t        testing.TB
	entered  chan struct{}
	released chan struct{}
}

func newBlocker(t testing.TB) *blocker {
	return &blocker{t: t, entered: make(chan struct{}), released: make(chan struct{})}
}

// block runs in the callback.
func (k *blocker) block() {
	close(k.entered)
	select {
	case <-k.released:
	case <-time.After(dispatchTimeout):
		k.t.Error("callback never released")
	}
}

// callbackSource makes a listener whose first callback calls block: the
// accept callback on a TCP listener with a client waiting, or the error
// callback on a socket that does not listen. calls counts the callbacks.
type callbackSource struct {
	name string
	make func(t *testing.T, b *Base, block func(), calls *int) *Listener
}

var callbackSources = []callbackSource{
	{"accept callback", func(t *testing.T, b *Base, block func(), calls *int) *Listener {
		l := listenTCP(t, b, func(_ *Listener, fd int, _ net.Addr) {
			syscall.Close(fd)
			if *calls++; *calls == 1 {
				block()
			}
		}, 0)
		dial(t, l.Addr())
		return l
	}},
	{"error callback", func(t *testing.T, b *Base, block func(), calls *int) *Listener {
		l := notListening(t, b)
		l.SetErrorCallback(func(*Listener, error) {
			if *calls++; *calls == 1 {
				block()
			}
		})
		return l
	}},
}
