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
	randport := func(t *testing.T) {
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
		const flags = CloseOnFree | Reuseable | CloseOnExec
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
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if count1 != 0 || count2 != 0 {
			t.Fatalf("counts = %d, %d; want 0, 0", count1, count2)
		}
	}
	// randport_ts and error_ts are randport and error with
	// LEV_OPT_THREADSAFE, under lock debugging. Here every listener has
	// it (New adds ThreadSafe to the caller's flags) and TestMain turns
	// lock debugging on, so randport and error are the _ts variants as
	// well: a copy with ThreadSafe passed again would run the same code.
	t.Run("randport", randport)

	// error: a connected, non-listening unix socket with backlog 0 (no
	// listen call), so accept fails with EINVAL; the error callback
	// disables the listener and Dispatch returns on its own. The accept
	// callback never runs.
	errorCase := func(t *testing.T) {
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
		}, CloseOnFree|Reuseable, 0, pair[0])
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
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if count != 1000 {
			t.Fatalf("count = %d, want 1000", count)
		}
		if !errors.Is(got, syscall.EINVAL) {
			t.Fatalf("error callback got %v, want EINVAL", got)
		}
	}
	t.Run("error", errorCase)

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
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if count != 0 {
			t.Fatalf("count = %d, want 0", count)
		}
		if !fdValid {
			t.Fatal("the accepted fd was closed by Close inside the callback")
		}
		refused(t, addr)
		if err := l.Close(); !errors.Is(err, ErrClosed) {
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
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
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
