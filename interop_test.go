package evlistener

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/evlistener/evlistener/internal/ctest"
)

// countingListener listens on loopback and closes itself after n accepts,
// recording the thread its callback ran on.
func countingListener(t *testing.T, b *Base, n int32) (*Listener, *atomic.Int32, *atomic.Uint64) {
	t.Helper()
	var accepted atomic.Int32
	var thread atomic.Uint64
	l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
		syscall.Close(fd)
		thread.Store(ctest.ThreadSelf())
		if accepted.Add(1) == n {
			l.Close()
		}
	}, 0)
	return l, &accepted, &thread
}

// C code adds its own timer and raw event to a base that Go created, while a
// Go listener accepts on it: one loop, run by Dispatch, serves all three, on
// one thread, and Dispatch returns only once all three are done.
func TestCEventsOnGoBase(t *testing.T) {
	t.Run("dispatch", func(t *testing.T) { cEventsOnGoBase(t, baseKind{}) })
	// Polling returns to Go between turns: the loop must keep its thread.
	t.Run("busy poll", func(t *testing.T) { cEventsOnGoBase(t, baseKind{busyPoll: true}) })
}

func cEventsOnGoBase(t *testing.T, kind baseKind) {
	b := newBaseKind(t, kind)
	p := b.CPtr()
	if p == nil {
		t.Fatal("CPtr of an open base is nil")
	}
	const ticks, bytes, clients = 5, 300, 10
	timer, err := ctest.NewTimer(p, 1000, ticks)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := ctest.NewReader(p, bytes)
	if err != nil {
		t.Fatal(err)
	}
	l, accepted, goThread := countingListener(t, b, clients)
	for i := 0; i < clients; i++ {
		dial(t, l.Addr())
	}
	if n, err := syscall.Write(reader.Peer(), []byte(strings.Repeat("x", bytes))); n != bytes || err != nil {
		t.Fatalf("write to C's socket: %d, %v", n, err)
	}

	if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
		t.Fatal(err)
	}
	if got := timer.Fired(); got != ticks {
		t.Errorf("C timer fired %d times, want %d", got, ticks)
	}
	if got := reader.Got(); got != bytes {
		t.Errorf("C read event got %d bytes, want %d", got, bytes)
	}
	if got := accepted.Load(); got != clients {
		t.Errorf("Go listener accepted %d, want %d", got, clients)
	}
	if timer.Thread() != goThread.Load() || reader.Thread() != goThread.Load() {
		t.Errorf("callbacks ran on threads timer %#x, reader %#x, Go %#x; want one loop thread",
			timer.Thread(), reader.Thread(), goThread.Load())
	}
	// C frees its events before Go frees the base.
	timer.Free()
	reader.Free()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if b.CPtr() != nil {
		t.Error("CPtr of a closed base is not nil")
	}
}

// cBase creates a base from C and frees it from C when the test ends.
func cBase(t *testing.T, newBase func() (unsafe.Pointer, error)) unsafe.Pointer {
	t.Helper()
	watchdog(t)
	p, err := newBase()
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs after every Go cleanup: Go's Close
	// comes before event_base_free. A double free would abort the run.
	t.Cleanup(func() { ctest.FreeBase(p) })
	return p
}

// adopt wraps a base from C and closes the Base when the test ends.
func adopt(t *testing.T, p unsafe.Pointer) *Base {
	t.Helper()
	b, err := FromCPtr(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestFromCPtr(t *testing.T) {
	// What a program does before its C code creates bases (TestMain did).
	if err := UsePthreads(); err != nil {
		t.Fatal(err)
	}
	t.Run("Go listens on a base from C; Close leaves it to C", func(t *testing.T) {
		p := cBase(t, ctest.NewBase)
		b := adopt(t, p)
		if b.CPtr() != p {
			t.Errorf("CPtr %p, want %p", b.CPtr(), p)
		}
		timer, err := ctest.NewTimer(p, 1000, 3)
		if err != nil {
			t.Fatal(err)
		}
		const clients = 5
		l, accepted, _ := countingListener(t, b, clients)
		for i := 0; i < clients; i++ {
			dial(t, l.Addr())
		}
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if accepted.Load() != clients || timer.Fired() != 3 {
			t.Errorf("accepted %d of %d, C timer fired %d of 3", accepted.Load(), clients, timer.Fired())
		}
		timer.Free()

		// A listener left open is closed by Close, and Go's own events
		// leave the base with it.
		l2 := listenTCP(t, b, func(*Listener, int, net.Addr) {}, 0)
		if n := ctest.NumEvents(p); n != 1 {
			t.Errorf("%d events on the base with one Go listener, want 1", n)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l2.Close(); !errors.Is(err, ErrClosed) {
			t.Errorf("listener after its base closed: Close = %v, want ErrClosed", err)
		}
		if n := ctest.NumEvents(p); n != 0 {
			t.Errorf("%d events left on the base after Go's Close, want 0", n)
		}
		if got := ctest.RunTimer(p); got != 3 {
			t.Errorf("C loop on the base after Go's Close: timer fired %d times, want 3", got)
		}
		// Once Go's Base is closed, the base may be adopted again.
		b2, err := FromCPtr(p)
		if err != nil {
			t.Fatalf("FromCPtr after Close: %v", err)
		}
		if err := b2.Close(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Close while Dispatch runs leaves C's events on the base", func(t *testing.T) {
		p := cBase(t, ctest.NewBase)
		b := adopt(t, p)
		timer, err := ctest.NewTimer(p, int(time.Hour/time.Microsecond), 1)
		if err != nil {
			t.Fatal(err)
		}
		defer timer.Free()
		l, accepted, _ := countingListener(t, b, 1000)
		r := startDispatch(t, b, whenIdle)
		dial(t, l.Addr())
		waitFor(t, "the first accept", func() bool { return accepted.Load() == 1 })
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.wait(t); err != nil {
			t.Errorf("Dispatch: %v", err)
		}
		if l.FD() != -1 {
			t.Error("listener still open after its base closed")
		}
		if n := ctest.NumEvents(p); n != 1 {
			t.Errorf("%d events on the base after Go's Close, want 1 (C's timer)", n)
		}
	})

	t.Run("a base without locks, used from the loop only", func(t *testing.T) {
		b := adopt(t, cBase(t, ctest.NewBaseNoLock))
		var closeErr error
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			syscall.Close(fd)
			closeErr = l.Close()
		}, 0)
		dial(t, l.Addr())
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if closeErr != nil || l.FD() != -1 {
			t.Errorf("Close inside the callback: %v, fd %d", closeErr, l.FD())
		}
	})

	// The binding's own wake-up needs no libevent lock: calls from
	// another goroutine while Dispatch runs reach the loop thread.
	t.Run("a base without locks, used from another goroutine", func(t *testing.T) {
		b := adopt(t, cBase(t, ctest.NewBaseNoLock))
		accepted := make(chan struct{}, 4)
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			syscall.Close(fd)
			accepted <- struct{}{}
		}, Disabled)
		r := startDispatch(t, b, atCleanup)
		waitFor(t, "Dispatch to run", func() bool { return isRunning(b) })
		if err := l.Enable(); err != nil {
			t.Fatal(err)
		}
		c := dial(t, l.Addr())
		recv(t, accepted, "the accept callback")
		readEOF(t, c)
		if err := l.Disable(); err != nil {
			t.Fatal(err)
		}
		r.breakAndWait(t, b)
	})

	t.Run("nil", func(t *testing.T) {
		if b, err := FromCPtr(nil); err == nil {
			b.Close()
			t.Fatal("FromCPtr(nil) succeeded")
		}
	})

	t.Run("a base that already has a Base", func(t *testing.T) {
		fromC := cBase(t, ctest.NewBase)
		adopt(t, fromC)
		for name, p := range map[string]unsafe.Pointer{"NewBase": newBase(t).CPtr(), "FromCPtr": fromC} {
			if b, err := FromCPtr(p); err == nil {
				b.Close()
				t.Errorf("FromCPtr of a base from %s that is still open succeeded", name)
			} else if !strings.Contains(err.Error(), "already has an open Base") {
				t.Errorf("FromCPtr of a base from %s: %v", name, err)
			}
		}
	})
}

func TestFileConn(t *testing.T) {
	// Go's poller opens its own descriptors on first use; count after.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}

	// Each returns a connected socket and its peer.
	pair := func(t *testing.T) (fd, peer int) {
		p := socketpair(t)
		return p[0], p[1]
	}
	accepted := func(t *testing.T) (fd, peer int) {
		b, err := NewBase() // not newBase: freed before fds are counted
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		fd = -1
		l := listenTCP(t, b, func(l *Listener, afd int, _ net.Addr) {
			fd = afd
			l.Close()
		}, 0)
		c := dial(t, l.Addr())
		f, err := c.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		peer, err = syscall.Dup(int(f.Fd()))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil || fd < 0 {
			t.Fatalf("Dispatch: %v, accepted fd %d", err, fd)
		}
		return fd, peer
	}

	for _, tc := range []struct {
		name string
		make func(t *testing.T) (int, int)
		want string // the net.Conn's type
	}{
		{"unix socketpair", pair, "*net.UnixConn"},
		{"tcp socket from an AcceptFunc", accepted, "*net.TCPConn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			fd, peer := tc.make(t)
			defer syscall.Close(peer)
			if got := openFDs(t); got != before+2 {
				t.Fatalf("%d fds open with the pair, want %d", got, before+2)
			}
			c, err := FileConn(fd)
			if err != nil {
				t.Fatal(err)
			}
			if fdOpen(fd) {
				t.Errorf("fd %d is still open after FileConn, want it closed", fd)
			}
			if got := fmt.Sprintf("%T", c); got != tc.want {
				t.Errorf("FileConn gave a %s, want %s", got, tc.want)
			}
			if got := openFDs(t); got != before+2 {
				t.Errorf("%d fds open after FileConn, want %d: a duplicate is left open", got, before+2)
			}
			// The conn talks to the peer both ways.
			if _, err := syscall.Write(peer, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 8)
			if _, err := io.ReadFull(c, buf[:4]); err != nil || string(buf[:4]) != "ping" {
				t.Fatalf("read %q, %v", buf[:4], err)
			}
			if _, err := c.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if got := openFDs(t); got != before+1 {
				t.Errorf("%d fds open after the conn closed, want %d", got, before+1)
			}
			// The peer gets the data, then the end of the stream: the
			// socket itself is closed, not just one descriptor of it.
			syscall.SetNonblock(peer, false)
			tv := syscall.NsecToTimeval((5 * time.Second).Nanoseconds())
			if err := syscall.SetsockoptTimeval(peer, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
				t.Fatal(err)
			}
			n, err := syscall.Read(peer, buf)
			if err != nil || string(buf[:n]) != "pong" {
				t.Fatalf("peer read %q, %v; want \"pong\"", buf[:n], err)
			}
			if n, err := syscall.Read(peer, buf); n != 0 || err != nil {
				t.Errorf("peer read %d bytes, %v after the conn closed; want end of stream", n, err)
			}
		})
	}

	t.Run("bad fd", func(t *testing.T) {
		var p [2]int
		if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(p[1])
		closed, err := syscall.Dup(p[1])
		if err != nil {
			t.Fatal(err)
		}
		syscall.Close(closed)
		for _, tc := range []struct {
			name  string
			fd    int
			errno syscall.Errno
			fds   int // change in open fds: FileConn takes fd in every case
		}{
			{"negative", -1, syscall.EBADF, 0},
			{"not open", closed, syscall.EBADF, 0},
			{"a pipe, not a socket", p[0], syscall.ENOTSOCK, -1},
		} {
			before := openFDs(t)
			c, err := FileConn(tc.fd)
			if err == nil {
				c.Close()
				t.Errorf("%s: FileConn succeeded", tc.name)
				continue
			}
			var oe *net.OpError
			if !errors.As(err, &oe) || !errors.Is(err, tc.errno) {
				t.Errorf("%s: error %#v, want a *net.OpError wrapping %v", tc.name, err, tc.errno)
			}
			if got := openFDs(t); got != before+tc.fds {
				t.Errorf("%s: %d fds open, want %d", tc.name, got, before+tc.fds)
			}
		}
	})
}
