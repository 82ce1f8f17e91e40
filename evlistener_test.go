package evlistener

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// Ports of libevent 2.1.12's test/regress_listener.c, case by case, with
// their assertions. Each C case runs in a fresh process on a fresh base;
// here each gets a fresh base, and error_unlock, which lowers
// RLIMIT_NOFILE, a fresh process.
func TestLibevent(t *testing.T) {
	// randport: two listeners on port 0 get different ports; 2 and 1
	// clients; each accept callback closes the fd and disables its
	// listener at its count, and Dispatch returns on its own.
	randport := func(t *testing.T, flags Flag) {
		b := newBase(t)
		acceptcb := func(count *int) AcceptFunc {
			return func(l *Listener, fd int, _ net.Addr) {
				*count--
				syscall.Close(fd)
				if *count == 0 {
					if err := l.Disable(); err != nil {
						t.Error(err)
					}
				}
			}
		}
		count1, count2 := 2, 1
		flags |= CloseOnFree | Reuseable | CloseOnExec
		l1, err := NewBind(b, acceptcb(&count1), flags, -1, "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, l1)
		l2, err := NewBind(b, acceptcb(&count2), flags, -1, "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, l2)

		var ports [2]int
		for i, l := range []*Listener{l1, l2} {
			if l.FD() < 0 {
				t.Fatalf("listener %d: FD() = %d", i+1, l.FD())
			}
			sa, err := syscall.Getsockname(l.FD())
			if err != nil {
				t.Fatalf("listener %d: getsockname: %v", i+1, err)
			}
			sin, ok := sa.(*syscall.SockaddrInet4)
			if !ok {
				t.Fatalf("listener %d: getsockname = %T, want AF_INET", i+1, sa)
			}
			if sin.Addr != [4]byte{127, 0, 0, 1} {
				t.Fatalf("listener %d: bound to %v, want 127.0.0.1", i+1, sin.Addr)
			}
			ta, ok := l.Addr().(*net.TCPAddr)
			if !ok || !ta.IP.Equal(net.IPv4(127, 0, 0, 1)) || ta.Port != sin.Port || ta.Port == 0 {
				t.Fatalf("listener %d: Addr() = %v, getsockname port %d", i+1, l.Addr(), sin.Port)
			}
			if l.Base() != b {
				t.Fatalf("listener %d: Base() = %p, want %p", i+1, l.Base(), b)
			}
			if _, cloexec, _ := fdModes(l.FD()); !cloexec {
				t.Fatalf("listener %d: listening socket lacks FD_CLOEXEC with CloseOnExec", i+1)
			}
			ports[i] = sin.Port
		}
		if ports[0] == ports[1] {
			t.Fatalf("both listeners on port %d", ports[0])
		}
		dial(t, l1.Addr())
		dial(t, l1.Addr())
		dial(t, l2.Addr())
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if count1 != 0 || count2 != 0 {
			t.Fatalf("counts = %d, %d; want 0, 0", count1, count2)
		}
	}
	t.Run("randport", func(t *testing.T) { randport(t, 0) })
	// The C variant adds LEV_OPT_THREADSAFE under lock debugging; this
	// process runs with lock debugging on (TestMain).
	t.Run("randport_ts", func(t *testing.T) { randport(t, ThreadSafe) })

	// error: a connected, non-listening unix socket with backlog 0 (no
	// listen call), so accept fails with EINVAL; the error callback
	// disables the listener and Dispatch returns on its own. The accept
	// callback never runs.
	errorCase := func(t *testing.T, flags Flag) {
		b := newBase(t)
		pair := socketpair(t)
		defer syscall.Close(pair[1])
		if n, err := syscall.Write(pair[1], []byte("hello")); n != 5 {
			t.Fatalf("send = %d, %v", n, err)
		}
		count := 1
		l, err := New(b, func(_ *Listener, fd int, _ net.Addr) {
			count--
			syscall.Close(fd)
		}, CloseOnFree|Reuseable|flags, 0, pair[0])
		if err != nil {
			syscall.Close(pair[0])
			t.Fatal(err)
		}
		closeAtEnd(t, l)
		var got error
		l.SetErrorCallback(func(l *Listener, err error) {
			count = 1000
			got = err
			if err := l.Disable(); err != nil {
				t.Error(err)
			}
		})
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if count != 1000 {
			t.Fatalf("count = %d, want 1000", count)
		}
		if !errors.Is(got, syscall.EINVAL) {
			t.Fatalf("error callback got %v, want EINVAL", got)
		}
	}
	t.Run("error", func(t *testing.T) { errorCase(t, 0) })
	t.Run("error_ts", func(t *testing.T) { errorCase(t, ThreadSafe) })

	// error_unlock: the same failing accept with no error callback, and
	// no free descriptor left (RLIMIT_NOFILE lowered to the peer's fd), in
	// a child process under lock debugging: the accept error path must
	// release the listener's lock (libevent #341), or freeing the listener
	// aborts the child.
	t.Run("error_unlock", func(t *testing.T) {
		p := startHelper(t, "error_unlock")
		p.wait(t, dispatchTimeout)
		if out := p.stderr.String(); out != "" {
			t.Fatalf("helper wrote to stderr:\n%s", out)
		}
	})

	// close_accepted_fd: the accept callback frees its listener. The
	// accepted fd stays the callback's (libevent #577), Dispatch returns on
	// its own, and the listening socket is closed once it has.
	t.Run("close_accepted_fd", func(t *testing.T) {
		b := newBase(t)
		count := 1
		fdValid := false
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			count--
			if count == 0 {
				if err := l.Close(); err != nil {
					t.Error(err)
				}
			}
			fdValid = fdOpen(fd)
			syscall.Close(fd)
		}, Reuseable)
		addr := l.Addr()
		dial(t, addr)
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if count != 0 {
			t.Fatalf("count = %d, want 0", count)
		}
		if !fdValid {
			t.Fatal("the accepted fd was closed by Close inside the callback")
		}
		refused(t, addr)
		if err := l.Close(); err != ErrClosed {
			t.Fatalf("second Close = %v, want ErrClosed", err)
		}
	})

	// immediate_close: disabling inside the accept callback stops the
	// accept loop at once, so of two queued clients only one is taken
	// (count 0, not -1); the other stays in the backlog, untouched.
	t.Run("immediate_close", func(t *testing.T) {
		b := newBase(t)
		count := 1
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			count--
			syscall.Close(fd)
			if count == 0 {
				if err := l.Disable(); err != nil {
					t.Error(err)
				}
			}
		}, Reuseable)
		c1 := dial(t, l.Addr())
		c2 := dial(t, l.Addr())
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if count != 0 {
			t.Fatalf("count = %d, want 0", count)
		}
		// Connections are accepted in order: the first was closed,
		// the second waits.
		readEOF(t, c1)
		stillQueued(t, c2)
	})
}

func init() {
	helpers["error_unlock"] = helperErrorUnlock
}

// helperErrorUnlock is the child side of TestLibevent/error_unlock.
func helperErrorUnlock() error {
	b, err := NewBase()
	if err != nil {
		return err
	}
	p, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if n, err := syscall.Write(p[1], []byte("hello")); n <= 0 {
		return fmt.Errorf("send: %d, %v", n, err)
	}
	accepted := 0
	l, err := New(b, func(_ *Listener, fd int, _ net.Addr) {
		accepted++
		syscall.Close(fd)
	}, CloseOnFree|Reuseable|ThreadSafe, 0, p[0])
	if err != nil {
		return err
	}
	lim := syscall.Rlimit{Cur: uint64(p[1]), Max: uint64(p[1])}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("setrlimit: %w", err)
	}
	// EVLOOP_ONCE in C; here a short bounded loop, since the listener
	// backs off and retries instead of spinning.
	if err := b.LoopExit(30 * time.Millisecond); err != nil {
		return err
	}
	if err := b.Dispatch(); err != nil {
		return err
	}
	if accepted != 0 {
		return fmt.Errorf("accept callback ran %d times on a socket that does not listen", accepted)
	}
	if l.delay == 0 {
		return errors.New("accept did not fail: the error path was not exercised")
	}
	// From another goroutine, so possibly another thread: a lock left
	// held by the loop thread would deadlock or trip lock debugging.
	errc := make(chan error, 1)
	go func() { errc <- l.Close() }()
	select {
	case err := <-errc:
		if err != nil {
			return err
		}
	case <-time.After(5 * time.Second):
		return errors.New("Close hung after the accept error")
	}
	return b.Close()
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

// notListening wraps a connected unix socket that does not listen, with
// backlog 0 so that New does not call listen(): every accept fails with
// EINVAL, as in libevent's listener/error test.
func notListening(t testing.TB, b *Base) *Listener {
	t.Helper()
	pair := socketpair(t)
	t.Cleanup(func() { syscall.Close(pair[1]) })
	if _, err := syscall.Write(pair[1], []byte("hello")); err != nil {
		t.Fatal(err)
	}
	l, err := New(b, func(_ *Listener, fd int, _ net.Addr) {
		syscall.Close(fd)
		t.Error("accept callback ran on a socket that does not listen")
	}, CloseOnFree, 0, pair[0])
	if err != nil {
		syscall.Close(pair[0])
		t.Fatal(err)
	}
	closeAtEnd(t, l)
	return l
}

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
				r := startDispatch(t, b)
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
				if err := dispatch(t, b); err != nil || calls != 1 {
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
		r := startDispatch(t, b)
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

func TestClose(t *testing.T) {
	t.Run("close inside the accept callback", func(t *testing.T) {
		b := newBase(t)
		calls := 0
		var fd, afterFD int
		var addr net.Addr
		var second error
		l := listenTCP(t, b, func(l *Listener, cfd int, _ net.Addr) {
			calls++
			defer syscall.Close(cfd)
			if err := l.Close(); err != nil {
				t.Error(err)
			}
			afterFD, addr, second = l.FD(), l.Addr(), l.Close()
		}, 0)
		fd = l.FD()
		laddr := l.Addr()
		c1 := dial(t, laddr)
		c2 := dial(t, laddr)
		handles := liveHandles()
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if calls != 1 {
			t.Fatalf("%d accept callbacks, want 1: none may start after Close", calls)
		}
		if afterFD != -1 || addr != nil || second != ErrClosed {
			t.Fatalf("after Close: FD() = %d, Addr() = %v, Close() = %v; want -1, nil, ErrClosed", afterFD, addr, second)
		}
		if got := liveHandles(); got != handles-1 {
			t.Fatalf("live handles %d -> %d; Close must release the listener's", handles, got)
		}
		readEOF(t, c1) // the callback closed its connection
		// The queued client was never accepted: closing the listening
		// socket resets it.
		c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("queued client: read error %v, want ECONNRESET", err)
		}
		refused(t, laddr)
		if fdOpen(fd) && sockname(fd) != nil && sockname(fd).String() == laddr.String() {
			t.Fatalf("listening fd %d still open after Dispatch returned", fd)
		}
	})

	t.Run("close another listener inside an accept callback", func(t *testing.T) {
		b := newBase(t)
		calls := 0
		var ls [2]*Listener
		cb := func(l *Listener, fd int, _ net.Addr) {
			calls++
			syscall.Close(fd)
			for _, other := range ls {
				if err := other.Close(); err != nil {
					t.Error(err)
				}
			}
		}
		ls[0] = listenTCP(t, b, cb, 0)
		ls[1] = listenTCP(t, b, cb, 0)
		// Both listening sockets are readable in the same loop pass.
		dial(t, ls[0].Addr())
		dial(t, ls[1].Addr())
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if calls != 1 {
			t.Fatalf("%d accept callbacks, want 1", calls)
		}
	})

	t.Run("close from several goroutines at once", func(t *testing.T) {
		for _, loop := range []bool{false, true} {
			b := newBase(t)
			l := listenTCP(t, b, func(_ *Listener, fd int, _ net.Addr) { syscall.Close(fd) }, 0)
			var r *running
			if loop {
				r = startDispatch(t, b) // the listener keeps it alive
			}
			const n = 8
			start := make(chan struct{})
			errs := make(chan error, n)
			for range n {
				go func() {
					<-start
					errs <- l.Close()
				}()
			}
			close(start)
			nils := 0
			for range n {
				switch err := recv(t, errs, "Close"); err {
				case nil:
					nils++
				case ErrClosed:
				default:
					t.Fatalf("Close = %v", err)
				}
			}
			if nils != 1 {
				t.Fatalf("dispatch running %v: %d Close calls returned nil, want 1", loop, nils)
			}
			if loop {
				if err := r.wait(t); err != nil {
					t.Fatal(err)
				}
			}
		}
	})

	t.Run("close inside the error callback", func(t *testing.T) {
		b := newBase(t)
		l := notListening(t, b)
		calls := 0
		l.SetErrorCallback(func(l *Listener, _ error) {
			calls++
			if err := l.Close(); err != nil {
				t.Error(err)
			}
		})
		// Returning on its own shows the back-off retry was cancelled.
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if calls != 1 {
			t.Fatalf("%d error callbacks, want 1", calls)
		}
	})

	t.Run("close during a back-off pause", func(t *testing.T) {
		b := newBase(t)
		l := notListening(t, b)
		calls := make(chan struct{}, 100)
		l.SetErrorCallback(func(*Listener, error) { calls <- struct{}{} })
		r := startDispatch(t, b)
		recv(t, calls, "the error callback")
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
		if n := len(calls); n > 1 {
			t.Fatalf("%d error callbacks after Close", n)
		}
	})

	t.Run("without CloseOnFree the socket outlives Close", func(t *testing.T) {
		b := newBase(t)
		l, err := NewBind(b, nil, 0, -1, "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fd, addr := l.FD(), l.Addr()
		defer syscall.Close(fd)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if !fdOpen(fd) {
			t.Fatal("Close closed the socket without CloseOnFree")
		}
		dial(t, addr) // still listening: the connection waits in the backlog
	})
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

	t.Run("nil callback at creation", func(t *testing.T) {
		b := newBase(t)
		l := listenTCP(t, b, nil, 0)
		c := dial(t, l.Addr())
		// A paused listener keeps nothing pending.
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		stillQueued(t, c)
		n := 0
		l.SetCallback(countAndDisable(t, &n, 1))
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d accepts after SetCallback, want 1", n)
		}
		readEOF(t, c)
	})

	t.Run("SetCallback(nil) on a running listener", func(t *testing.T) {
		b := newBase(t)
		n := 0
		l := listenTCP(t, b, countAndDisable(t, &n, 100), 0)
		r := startDispatch(t, b)
		l.SetCallback(nil)
		if err := r.wait(t); err != nil { // nothing pending any more
			t.Fatal(err)
		}
		c := dial(t, l.Addr())
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		stillQueued(t, c)
		l.SetCallback(countAndDisable(t, &n, 1))
		if err := dispatch(t, b); err != nil {
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
			if err := dispatch(t, b); err != nil {
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
			if err := dispatch(t, b); err != nil {
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
		if err := dispatch(t, b); err != nil {
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
	if err := dispatch(t, b); err != nil {
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
	if err := dispatch(t, b); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("%d accepts after Enable, want 3", n)
	}
	readEOF(t, cs[1])
	readEOF(t, cs[2])
}
