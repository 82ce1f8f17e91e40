package evlistener

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/evlistener/evlistener/internal/ctest"
)

// Once Close returns, nothing of the buffer event touches its descriptor
// number again, also when Close runs inside one of its callbacks, where
// libevent holds a reference until its handler returns. The tests give the
// number to another socket at once (dup2, as the next socket or accept of
// the program would take the lowest free number) and see what reaches it.
func TestBufferEventCloseLeavesTheDescriptor(t *testing.T) {
	t.Run("closed in the connected callback: the output reaches no other socket", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		first, other := listen(t), listen(t)
		be, err := NewBufferEvent(b, -1, BEVOptCloseOnFree)
		if err != nil {
			t.Fatal(err)
		}
		be.Write([]byte("meant for the first peer only"))
		be.Enable(EvRead | EvWrite)
		reused := make(chan int, 1)
		be.SetCallbacks(nil, nil, func(be *BufferEvent, what BEVEvent, err error) {
			if what != BEVEventConnected {
				t.Errorf("event %v, %v; want Connected", what, err)
				reused <- -1
				return
			}
			fd := be.FD()
			be.Close()
			takeNumber(t, fd, other.Addr())
			reused <- fd
		})
		startDispatch(t, b, atCleanup)
		if err := be.Connect("tcp", first.Addr().String()); err != nil {
			t.Fatal(err)
		}
		fd := recv(t, reused, "the connected callback")
		if fd < 0 {
			return
		}
		b.Do(func() {}) // the rest of libevent's write handler has run
		if got := closeWithMarker(t, fd, other); got != "marker" {
			t.Fatalf("the socket that took the number got %q, want only its own %q", got, "marker")
		}
		if got := acceptAndReadAll(t, first); got != "" {
			t.Fatalf("the first peer got %q after Close, want nothing: Close drops the output", got)
		}
	})

	t.Run("Write then Close in the read callback: libevent warns of nothing", func(t *testing.T) {
		// libevent logs, rather than returns, an epoll_ctl on a closed
		// descriptor: the events must be gone before the socket closes.
		checkNoLeaks(t)
		warnings, stop := ctest.CaptureLog()
		defer stop()
		before, _ := warnings()
		b := newBase(t)
		be, peer := bevPair(t, b)
		be.SetCallbacks(func(be *BufferEvent) {
			// Queued, arming the write event, where Write would send at
			// once: Close must drop it.
			be.Output().Write([]byte("reply"))
			be.Close()
		}, nil, nil)
		be.Enable(EvRead | EvWrite)
		startDispatch(t, b, atCleanup)
		peer.Write([]byte("request"))
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, err := io.ReadAll(peer); err != nil || len(got) != 0 {
			t.Fatalf("peer read %q, %v; want EOF alone: Close drops the output", got, err)
		}
		b.Do(func() {}) // the rest of libevent's read handler has run
		if n, last := warnings(); n != before {
			t.Fatalf("libevent warned %d times, last %q: it touched the descriptor after Close", n-before, last)
		}
	})
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// takeNumber connects a new socket to addr under the descriptor number fd.
func takeNumber(t *testing.T, fd int, addr net.Addr) {
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Error(err)
		return
	}
	// Go's own descriptor may be fd itself, the lowest free number: take
	// a duplicate, let Go close its own, then move the duplicate to fd.
	raw, _ := c.(*net.TCPConn).SyscallConn()
	dup := -1
	raw.Control(func(s uintptr) { dup, err = syscall.Dup(int(s)) })
	c.Close()
	if err == nil {
		err = syscall.Dup2(dup, fd)
		syscall.Close(dup)
	}
	if err != nil {
		t.Error(err)
	}
}

// closeWithMarker writes "marker" to fd, closes it, and returns all that
// the socket's peer, accepted from ln, read.
func closeWithMarker(t *testing.T, fd int, ln net.Listener) string {
	t.Helper()
	if _, err := syscall.Write(fd, []byte("marker")); err != nil {
		t.Errorf("write to the socket that took the number: %v", err)
	}
	syscall.Close(fd)
	return acceptAndReadAll(t, ln)
}

func acceptAndReadAll(t *testing.T, ln net.Listener) string {
	t.Helper()
	c := acceptConn(t, ln)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(got)
}

func acceptConn(t *testing.T, ln net.Listener) *net.TCPConn {
	t.Helper()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}
