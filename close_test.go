package evlistener

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

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
