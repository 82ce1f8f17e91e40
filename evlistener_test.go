package evlistener

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
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
			if nils := closeAtOnce(t, 8, l.Close); nils != 1 {
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

	t.Run("Enable with a nil callback, then SetCallback", func(t *testing.T) {
		b := newBase(t)
		l := listenTCP(t, b, nil, Disabled)
		c := dial(t, l.Addr())
		if err := l.Enable(); err != nil {
			t.Fatal(err)
		}
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

func TestNetworks(t *testing.T) {
	// serveOnce accepts one client, checks its address type, writes
	// "hi" and closes; then disables the listener.
	serveOnce := func(t *testing.T, peer *net.Addr) AcceptFunc {
		return func(l *Listener, fd int, addr net.Addr) {
			*peer = addr
			syscall.Write(fd, []byte("hi"))
			syscall.Close(fd)
			l.Disable()
		}
	}

	t.Run("unix socket path, removed on Close with CloseOnFree", func(t *testing.T) {
		b := newBase(t)
		path := t.TempDir() + "/s"
		var peer net.Addr
		l, err := NewBind(b, serveOnce(t, &peer), CloseOnFree, -1, "unix", path)
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, l)
		if a, ok := l.Addr().(*net.UnixAddr); !ok || a.Name != path || a.Net != "unix" {
			t.Fatalf("Addr() = %#v", l.Addr())
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("stat %s: %v, %v", path, fi, err)
		}
		c := dial(t, l.Addr())
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if _, ok := peer.(*net.UnixAddr); !ok {
			t.Fatalf("peer address %#v, want *net.UnixAddr", peer)
		}
		if got := readAll(t, c); got != "hi" {
			t.Fatalf("client read %q", got)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket file after Close: %v", err)
		}
	})

	t.Run("unix socket path in use", func(t *testing.T) {
		b := newBase(t)
		path := t.TempDir() + "/s"
		l := listenUnix(t, b, path)
		_, err := NewBind(b, nil, CloseOnFree, -1, "unix", path)
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("second bind on %s: %v, want EADDRINUSE", path, err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("a failed bind removed the socket of %v: %v", l.Addr(), err)
		}
	})

	t.Run("abstract unix socket", func(t *testing.T) {
		b := newBase(t)
		name := fmt.Sprintf("@evlistener-test-%d-%d", os.Getpid(), time.Now().UnixNano())
		var peer net.Addr
		l, err := NewBind(b, serveOnce(t, &peer), CloseOnFree, -1, "unix", name)
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, l)
		if l.Addr().String() != name {
			t.Fatalf("Addr() = %q, want %q", l.Addr(), name)
		}
		c := dial(t, l.Addr())
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, c); got != "hi" {
			t.Fatalf("client read %q", got)
		}
		addr := l.Addr()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		refused(t, addr)
	})

	t.Run("IPv6 loopback", func(t *testing.T) {
		b := newBase(t)
		var peer net.Addr
		l, err := NewBind(b, serveOnce(t, &peer), CloseOnFree, -1, "tcp6", "[::1]:0")
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, l)
		la, ok := l.Addr().(*net.TCPAddr)
		if !ok || !la.IP.Equal(net.IPv6loopback) || la.Port == 0 {
			t.Fatalf("Addr() = %v", l.Addr())
		}
		c := dial(t, l.Addr())
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if pa, ok := peer.(*net.TCPAddr); !ok || !pa.IP.Equal(net.IPv6loopback) || pa.Port != c.LocalAddr().(*net.TCPAddr).Port {
			t.Fatalf("peer address %v, client %v", peer, c.LocalAddr())
		}
		if got := readAll(t, c); got != "hi" {
			t.Fatalf("client read %q", got)
		}
	})

	t.Run("IPv4 peer address", func(t *testing.T) {
		b := newBase(t)
		var peer net.Addr
		l := listenTCP(t, b, serveOnce(t, &peer), 0)
		c := dial(t, l.Addr())
		if err := dispatch(t, b); err != nil {
			t.Fatal(err)
		}
		if peer.String() != c.LocalAddr().String() {
			t.Fatalf("peer address %v, client %v", peer, c.LocalAddr())
		}
	})
}

func listenUnix(t testing.TB, b *Base, path string) *Listener {
	t.Helper()
	l, err := NewBind(b, nil, CloseOnFree, -1, "unix", path)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, l)
	return l
}

func TestBacklog(t *testing.T) {
	somaxconn := 4096
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		fmt.Sscan(string(b), &somaxconn)
	}
	for _, tc := range []struct {
		backlog, want int
	}{
		{-1, 128}, // libevent's default
		{-5, 128},
		{7, 7},
		{1 << 40, somaxconn}, // must not wrap around to 0 in the C int
	} {
		t.Run(fmt.Sprintf("NewBind backlog %d", tc.backlog), func(t *testing.T) {
			b := newBase(t)
			l, err := NewBind(b, nil, CloseOnFree, tc.backlog, "tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			closeAtEnd(t, l)
			if got := listenBacklog(t, l.Addr().(*net.TCPAddr)); got != tc.want {
				t.Fatalf("listen backlog %d, want %d", got, tc.want)
			}
		})
	}

	t.Run("NewBind backlog 0 is an error that says why", func(t *testing.T) {
		b := newBase(t)
		before := openFDs(t)
		l, err := NewBind(b, nil, CloseOnFree, 0, "tcp", "127.0.0.1:0")
		if err == nil {
			l.Close()
			t.Fatal("NewBind with backlog 0 succeeded")
		}
		if !strings.Contains(err.Error(), "backlog") {
			t.Fatalf("error %q does not mention the backlog", err)
		}
		if after := openFDs(t); after != before {
			t.Fatalf("open fds %d -> %d", before, after)
		}
	})

	// New with backlog 0 calls no listen(): the socket keeps the
	// backlog it listens with. A backlog > 0 calls listen() again.
	for _, tc := range []struct{ backlog, want int }{{0, 3}, {9, 9}, {-1, 128}} {
		t.Run(fmt.Sprintf("New backlog %d on a listening socket", tc.backlog), func(t *testing.T) {
			b := newBase(t)
			fd := listeningSocket(t, 3)
			n := 0
			l, err := New(b, func(l *Listener, cfd int, _ net.Addr) {
				n++
				syscall.Close(cfd)
				l.Disable()
			}, CloseOnFree, tc.backlog, fd)
			if err != nil {
				syscall.Close(fd)
				t.Fatal(err)
			}
			closeAtEnd(t, l)
			if got := listenBacklog(t, l.Addr().(*net.TCPAddr)); got != tc.want {
				t.Fatalf("listen backlog %d, want %d", got, tc.want)
			}
			dial(t, l.Addr())
			if err := dispatch(t, b); err != nil || n != 1 {
				t.Fatalf("Dispatch = %v with %d accepts", err, n)
			}
		})
	}
}

// listeningSocket returns a blocking TCP socket listening on 127.0.0.1
// with the given backlog.
func listeningSocket(t testing.TB, backlog int) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, backlog); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	return fd
}

// New takes a socket that net.Listen made, through File's dup.
func TestNewFromNetListener(t *testing.T) {
	for _, backlog := range []int{0, -1} {
		t.Run(fmt.Sprintf("backlog %d", backlog), func(t *testing.T) {
			b := newBase(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f, err := ln.(*net.TCPListener).File()
			ln.Close() // the dup keeps the socket listening
			if err != nil {
				t.Fatal(err)
			}
			fd, err := syscall.Dup(int(f.Fd())) // Fd made it blocking
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			var peer net.Addr
			l, err := New(b, func(l *Listener, cfd int, addr net.Addr) {
				peer = addr
				syscall.Write(cfd, []byte("hi"))
				syscall.Close(cfd)
				l.Disable()
			}, CloseOnFree, backlog, fd)
			if err != nil {
				syscall.Close(fd)
				t.Fatal(err)
			}
			closeAtEnd(t, l)
			if l.FD() != fd || l.Addr().String() != ln.Addr().String() {
				t.Fatalf("FD() = %d, Addr() = %v; want %d, %v", l.FD(), l.Addr(), fd, ln.Addr())
			}
			if nonblock, _, _ := fdModes(fd); !nonblock {
				t.Fatal("New left the socket blocking; libevent's accept loop would block in accept()")
			}
			c := dial(t, l.Addr())
			if err := dispatch(t, b); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, c); got != "hi" || peer.String() != c.LocalAddr().String() {
				t.Fatalf("client read %q; peer %v, client %v", got, peer, c.LocalAddr())
			}
			addr := l.Addr()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			refused(t, addr) // CloseOnFree closed the dup, the last reference
		})
	}
}

// emfileResult is what the EMFILE helper process reports.
type emfileResult struct {
	Window      time.Duration   // how long the listener ran out of descriptors
	CPU         time.Duration   // user+system time of the child in that window
	ErrorAt     []time.Duration // when each error callback ran, from the start
	AcceptedIn  int             // accepts during the window (must be 0)
	Accepted    int             // accepts once the limit was raised
	ServedAfter time.Duration   // from raising the limit to the last accept
}

// With no descriptor left, accept fails with EMFILE. libevent 2.1 would
// keep the listener enabled and spin (about 180,000 error callbacks per
// 100 ms at full CPU); the binding pauses 10 ms, 20 ms, 40 ms, ... and calls
// the error callback once per pause. Runs in a child process with a lowered
// RLIMIT_NOFILE; clients connect from this process.
func TestAcceptBackoffOnEMFILE(t *testing.T) {
	const clients = 8
	p := startHelper(t, "emfile")
	out := bufio.NewReader(p.stdout)
	line, err := out.ReadString('\n')
	if err != nil {
		p.wait(t, dispatchTimeout)
		t.Fatalf("reading the helper's address: %v", err)
	}
	addr, err := net.ResolveTCPAddr("tcp", strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	var cs []net.Conn
	for range clients {
		cs = append(cs, dial(t, addr))
	}
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	var res emfileResult
	if err := json.NewDecoder(out).Decode(&res); err != nil {
		p.wait(t, dispatchTimeout)
		t.Fatalf("reading the helper's result: %v", err)
	}
	p.wait(t, dispatchTimeout)
	for i, c := range cs {
		if got := readAll(t, c); got != "served\n" {
			t.Fatalf("client %d read %q", i, got)
		}
	}
	n := len(res.ErrorAt)
	t.Logf("%d error callbacks in %v at %v; CPU %v; %d clients served %v after the limit was raised",
		n, res.Window, res.ErrorAt, res.CPU, res.Accepted, res.ServedAfter)
	if res.AcceptedIn != 0 || res.Accepted != clients {
		t.Fatalf("accepts: %d with no descriptor left, %d after; want 0, %d", res.AcceptedIn, res.Accepted, clients)
	}
	// 400 ms of 10, 20, 40, 80, 160 ms pauses: 6 steps, 5 if timers
	// run late. A spinning listener would make hundreds of thousands.
	if n < 3 || n > 8 {
		t.Fatalf("%d error callbacks in %v, want one per back-off step (about 6)", n, res.Window)
	}
	delay := firstBackoff
	for i := 1; i < n; i++ {
		if gap := res.ErrorAt[i] - res.ErrorAt[i-1]; gap < delay*8/10 {
			t.Fatalf("error callback %d came %v after the previous one, want a pause of %v", i, gap, delay)
		}
		delay = min(2*delay, maxBackoff)
	}
	if res.CPU > res.Window/4 {
		t.Fatalf("child used %v of CPU in %v: the listener spins", res.CPU, res.Window)
	}
	// The retry after the limit is raised comes at the next step.
	if res.ServedAfter > 2*delay+time.Second {
		t.Fatalf("queued clients served %v after the limit was raised", res.ServedAfter)
	}
}

func init() {
	helpers["emfile"] = helperEMFILE
}

// helperEMFILE is the child side of TestAcceptBackoffOnEMFILE: it prints
// its listener's address, waits for "go" (the clients are queued by then),
// takes every free descriptor slot away for a while, then raises the limit
// again and serves the queue.
func helperEMFILE() error {
	const window = 400 * time.Millisecond
	const clients = 8
	b, err := NewBase()
	if err != nil {
		return err
	}
	defer b.Close()
	var res emfileResult
	var start time.Time
	var errs []error
	var raised time.Time
	l, err := NewBind(b, func(l *Listener, fd int, _ net.Addr) {
		syscall.Write(fd, []byte("served\n"))
		syscall.Close(fd)
		res.Accepted++
		if res.Accepted == clients {
			res.ServedAfter = time.Since(raised)
			l.Close()
		}
	}, CloseOnFree, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	l.SetErrorCallback(func(_ *Listener, err error) {
		res.ErrorAt = append(res.ErrorAt, time.Since(start))
		errs = append(errs, err)
	})
	fmt.Println(l.Addr())
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}

	// The lowest free descriptor becomes the limit: no slot is left.
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	syscall.Close(fd)
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		return err
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: uint64(fd), Max: orig.Max}); err != nil {
		return err
	}
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start = time.Now()
	if err := b.LoopExit(window); err != nil {
		return err
	}
	if err := b.Dispatch(); err != nil {
		return err
	}
	res.Window = time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	res.CPU = time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	res.AcceptedIn = res.Accepted
	for _, err := range errs {
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "accept" || oe.Net != "tcp" || oe.Addr.String() != l.Addr().String() || !errors.Is(err, syscall.EMFILE) {
			return fmt.Errorf("error callback got %#v (%v), want an accept *net.OpError on %v wrapping EMFILE", err, err, l.Addr())
		}
	}

	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		return err
	}
	raised = time.Now()
	// The listener closes itself once the queue is served, and Dispatch
	// returns; the parent's timeout bounds it.
	if err := b.Dispatch(); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// The error callback gets the errno captured in C at the failing accept,
// inside a *net.OpError that names the operation and the listener.
func TestErrorCallbackErrno(t *testing.T) {
	b := newBase(t)
	l := notListening(t, b)
	var got error
	l.SetErrorCallback(func(l *Listener, err error) {
		got = err
		l.Disable()
	})
	if err := dispatch(t, b); err != nil {
		t.Fatal(err)
	}
	var oe *net.OpError
	if !errors.As(got, &oe) || oe.Op != "accept" || oe.Net != "unix" {
		t.Fatalf("error callback got %#v, want a *net.OpError for accept on unix", got)
	}
	var se *os.SyscallError
	if !errors.As(got, &se) || se.Syscall != "accept" || se.Err != syscall.EINVAL {
		t.Fatalf("error callback got %v, want accept: EINVAL", got)
	}
	// EMFILE: TestAcceptBackoffOnEMFILE.
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
		v := dispatchPanic(t, b)
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
		if err := dispatch(t, b); err != nil {
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
		if v, ok := dispatchPanic(t, b).(*CallbackPanic); !ok || v.Value != "boom" {
			t.Fatalf("Dispatch panicked with %v", v)
		}
		if calls != 1 {
			t.Fatalf("%d callbacks ran, want 1", calls)
		}
		if v, ok := dispatchPanic(t, b).(*CallbackPanic); !ok || v.Value != "boom" || calls != 2 {
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
		v := dispatchPanic(t, b)
		cp, ok := v.(*CallbackPanic)
		if !ok || !errors.Is(cp, syscall.EINVAL) || len(cp.Stack) == 0 {
			t.Fatalf("Dispatch panicked with %#v, want a *CallbackPanic wrapping the EINVAL error", v)
		}
		if calls != 1 {
			t.Fatalf("%d error callbacks, want 1", calls)
		}
		// Resumes with the next Dispatch: the retry fails again.
		if err := dispatch(t, b); err != nil {
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
		r := startDispatch(t, b)
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
		if err := dispatch(t, b); err != nil {
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
		if _, ok := dispatchPanic(t, b).(*CallbackPanic); !ok {
			t.Fatal("Dispatch did not panic")
		}
		readEOF(t, c)
		if err := dispatch(t, b); err != nil { // nothing left
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

func TestClosedListener(t *testing.T) {
	b := newBase(t)
	l := listenTCP(t, b, nil, 0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Close":   l.Close(),
		"Enable":  l.Enable(),
		"Disable": l.Disable(),
	} {
		if err != ErrClosed {
			t.Errorf("%s on a closed listener = %v, want ErrClosed", name, err)
		}
	}
	l.SetCallback(func(_ *Listener, fd int, _ net.Addr) { syscall.Close(fd) })
	l.SetErrorCallback(func(*Listener, error) {})
	if l.FD() != -1 || l.Addr() != nil || l.CPtr() != nil || l.Base() != b {
		t.Fatalf("FD() = %d, Addr() = %v, CPtr() = %v, Base() = %p", l.FD(), l.Addr(), l.CPtr(), l.Base())
	}
}

// Listener methods after Base.Close, which closed the listener.
func TestListenerOfClosedBase(t *testing.T) {
	b := newBase(t)
	l := listenTCP(t, b, nil, 0)
	addr := l.Addr()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Close":   l.Close(),
		"Enable":  l.Enable(),
		"Disable": l.Disable(),
	} {
		if err != ErrClosed {
			t.Errorf("%s = %v, want ErrClosed", name, err)
		}
	}
	l.SetCallback(nil)
	l.SetErrorCallback(nil)
	if l.FD() != -1 || l.Addr() != nil {
		t.Fatalf("FD() = %d, Addr() = %v", l.FD(), l.Addr())
	}
	refused(t, addr)
}

// Bad input returns an error shaped like net's, never a panic, and leaks
// no descriptor.
func TestBadInput(t *testing.T) {
	b := newBase(t)
	closed, err := NewBase()
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	pipe := make([]int, 2)
	if err := syscall.Pipe2(pipe, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(pipe[0])
	defer syscall.Close(pipe[1])
	udp, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(udp)
	pair := socketpair(t)
	defer syscall.Close(pair[0])
	defer syscall.Close(pair[1])
	taken := listenTCP(t, b, nil, 0)
	long := "/tmp/" + strings.Repeat("x", 200)
	cb := func(_ *Listener, fd int, _ net.Addr) { syscall.Close(fd) }

	bind := func(b *Base, flags Flag, backlog int, network, address string) func() (*Listener, error) {
		return func() (*Listener, error) { return NewBind(b, cb, flags, backlog, network, address) }
	}
	wrap := func(b *Base, flags Flag, backlog, fd int) func() (*Listener, error) {
		return func() (*Listener, error) { return New(b, cb, flags, backlog, fd) }
	}
	for _, tc := range []struct {
		name string
		call func() (*Listener, error)
		net  string // the OpError's Net, if it must have one
		addr string // the OpError's Addr, if it must have one
		is   error  // what errors.Is must find, if anything
		msg  string // what Error() must mention
	}{
		{name: "NewBind nil base", call: bind(nil, 0, -1, "tcp", "127.0.0.1:0"), msg: "nil base"},
		{name: "New nil base", call: wrap(nil, 0, 0, pair[0]), msg: "nil base"},
		{name: "closed base", call: bind(closed, CloseOnFree, -1, "tcp", "127.0.0.1:0"), is: ErrClosed},
		{name: "New on a closed base", call: wrap(closed, 0, 0, pair[0]), is: ErrClosed},
		{name: "unknown network", call: bind(b, 0, -1, "udp", "127.0.0.1:0"), net: "udp", msg: "udp"},
		{name: "empty network", call: bind(b, 0, -1, "", "127.0.0.1:0"), msg: "network"},
		{name: "address without port", call: bind(b, 0, -1, "tcp", "127.0.0.1"), net: "tcp", msg: "port"},
		{name: "bad IP", call: bind(b, 0, -1, "tcp", "1.2.3.4.5:80"), net: "tcp"},
		{name: "too many colons", call: bind(b, 0, -1, "tcp", "127.0.0.1:80:80"), net: "tcp", msg: "colons"},
		{name: "unknown service", call: bind(b, 0, -1, "tcp", "127.0.0.1:no-such-service"), net: "tcp", msg: "port"},
		{name: "unclosed bracket", call: bind(b, 0, -1, "tcp6", "[::1:80"), net: "tcp6"},
		{name: "unresolvable host", call: bind(b, 0, -1, "tcp", "no-such-host..invalid:80"), net: "tcp"},
		{name: "port out of range", call: bind(b, 0, -1, "tcp", "127.0.0.1:65536"), net: "tcp"},
		{name: "negative port", call: bind(b, 0, -1, "tcp", "127.0.0.1:-1"), net: "tcp"},
		{name: "IPv6 address on tcp4", call: bind(b, 0, -1, "tcp4", "[::1]:0"), net: "tcp4"},
		{name: "port in use", call: bind(b, 0, -1, "tcp", taken.Addr().String()), net: "tcp", addr: taken.Addr().String(), is: syscall.EADDRINUSE},
		{name: "address not local", call: bind(b, 0, -1, "tcp", "192.0.2.1:0"), net: "tcp", addr: "192.0.2.1:0", is: syscall.EADDRNOTAVAIL},
		{name: "empty unix path", call: bind(b, 0, -1, "unix", ""), net: "unix"},
		{name: "unix path too long", call: bind(b, 0, -1, "unix", long), net: "unix", msg: "long"},
		{name: "unix path with NUL", call: bind(b, 0, -1, "unix", "/tmp/a\x00b"), net: "unix"},
		{name: "unix path in a missing directory", call: bind(b, 0, -1, "unix", "/nonexistent/dir/s"), net: "unix", is: syscall.ENOENT},
		{name: "NewBind backlog 0", call: bind(b, 0, 0, "tcp", "127.0.0.1:0"), net: "tcp", msg: "backlog"},
		{name: "NewBind unknown flags", call: bind(b, 1<<9, -1, "tcp", "127.0.0.1:0"), net: "tcp", msg: "0x200"},
		{name: "New unknown flags", call: wrap(b, CloseOnFree|1<<20, -1, listeningSocketFor(t)), net: "tcp", msg: "0x100000"},
		{name: "New fd -1", call: wrap(b, 0, -1, -1), is: syscall.EBADF},
		{name: "New closed fd", call: wrap(b, 0, -1, closedFD(t)), is: syscall.EBADF},
		{name: "New pipe fd", call: wrap(b, 0, -1, pipe[0]), is: syscall.ENOTSOCK},
		{name: "New datagram socket", call: wrap(b, 0, -1, udp), msg: "stream"},
		{name: "New connected socket", call: wrap(b, CloseOnFree, -1, pair[0]), net: "unix", is: syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			handles := liveHandles()
			var l *Listener
			var err error
			func() {
				defer func() {
					if v := recover(); v != nil {
						t.Fatalf("panicked: %v", v)
					}
				}()
				l, err = tc.call()
			}()
			if err == nil {
				l.Close()
				t.Fatal("no error")
			}
			t.Log(err)
			if l != nil {
				t.Fatalf("a listener with the error %v", err)
			}
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "listen" {
				t.Fatalf("error %#v (%v), want a *net.OpError for listen", err, err)
			}
			if tc.net != "" && oe.Net != tc.net {
				t.Errorf("Net = %q, want %q", oe.Net, tc.net)
			}
			if tc.addr != "" && (oe.Addr == nil || oe.Addr.String() != tc.addr) {
				t.Errorf("Addr = %v, want %s", oe.Addr, tc.addr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
			if after := openFDs(t); after != before {
				t.Errorf("open fds %d -> %d", before, after)
			}
			if after := liveHandles(); after != handles {
				t.Errorf("live handles %d -> %d", handles, after)
			}
		})
	}
	// A failed New leaves the caller's socket open, CloseOnFree or not.
	if !fdOpen(pair[0]) {
		t.Fatal("a failed New closed the caller's socket")
	}
}

// listeningSocketFor returns a listening socket closed when the test ends.
func listeningSocketFor(t *testing.T) int {
	fd := listeningSocket(t, 1)
	t.Cleanup(func() { syscall.Close(fd) })
	return fd
}

// closedFD returns a descriptor number that is not open.
func closedFD(t *testing.T) int {
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	return fd
}
