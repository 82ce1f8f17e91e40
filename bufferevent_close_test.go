package evlistener

import (
	"bytes"
	"crypto/rand"
	"errors"
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

func TestCloseAfterFlush(t *testing.T) {
	// flushing runs a buffer event with out in its output, calls setup,
	// then CloseAfterFlush(timeout); it returns the socket and its peer.
	flushing := func(t *testing.T, out []byte, timeout time.Duration, setup func(*BufferEvent, *net.TCPConn)) (int, *net.TCPConn) {
		t.Helper()
		checkNoLeaks(t)
		b := newBase(t)
		fd, peer := tcpPair(t)
		be := newBEV(t, b, fd)
		if setup != nil {
			setup(be, peer)
		}
		be.Write(out)
		startDispatch(t, b, atCleanup)
		if err := be.CloseAfterFlush(timeout); err != nil {
			t.Fatal(err)
		}
		return fd, peer
	}
	// readAll reads peer to EOF and fails unless it got exactly want.
	readAll := func(t *testing.T, peer *net.TCPConn, want []byte) {
		t.Helper()
		peer.SetReadDeadline(time.Now().Add(20 * time.Second))
		if got, err := io.ReadAll(peer); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("peer read %d of %d bytes, then %v; want all, then EOF", len(got), len(want), err)
		}
	}
	// sendUntilReset writes to peer until a write fails, or until stop,
	// when it shuts down its sending side; the goroutine reports on the
	// channel returned as it ends.
	sendUntilReset := func(peer *net.TCPConn, stop <-chan struct{}) <-chan error {
		ended := make(chan error, 1)
		go func() {
			chunk := make([]byte, 1024)
			for {
				select {
				case <-stop:
					ended <- peer.CloseWrite()
					return
				default:
				}
				if _, err := peer.Write(chunk); err != nil {
					ended <- err
					return
				}
			}
		}()
		return ended
	}
	random := func(n int) []byte {
		p := make([]byte, n)
		rand.Read(p)
		return p
	}

	t.Run("everything written, then closed", func(t *testing.T) {
		data := random(4 << 20)
		var be *BufferEvent
		_, peer := flushing(t, data, 0, func(b *BufferEvent, _ *net.TCPConn) { be = b })
		if err := be.Close(); !errors.Is(err, ErrClosed) || be.FD() != -1 {
			t.Fatalf("after CloseAfterFlush: Close = %v, FD = %d; want ErrClosed, -1", err, be.FD())
		}
		readAll(t, peer, data)
	})
	t.Run("the deadline closes what could not go", func(t *testing.T) {
		fd, peer := flushing(t, make([]byte, 64<<20), 50*time.Millisecond, nil) // far more than the socket buffers take
		// The peer never reads until the socket closes: then it reads
		// less than was written, and a reset or EOF.
		waitFor(t, "the socket to close at the deadline", func() bool { return !fdOpen(fd) })
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.Copy(io.Discard, peer)
		if n >= 64<<20 {
			t.Fatalf("peer read all %d bytes: the deadline did not cut the flush", n)
		}
	})
	t.Run("to a peer still sending: every byte arrives, then EOF", func(t *testing.T) {
		// Closing with input unread makes the kernel send a reset, which
		// discards what the peer has not read yet: the flush shuts down
		// the sending side and reads to the peer's EOF first.
		data := random(4 << 20)
		stop := make(chan struct{})
		var ended <-chan error
		fd, peer := flushing(t, data, 0, func(be *BufferEvent, peer *net.TCPConn) {
			be.Enable(EvRead)
			ended = sendUntilReset(peer, stop)
		})
		readAll(t, peer, data)
		close(stop)
		// Its writes may fail once it has everything: a peer that paused
		// had nothing left to lose (see lingerCheck).
		recv(t, ended, "the peer's writer")
		waitFor(t, "the socket to close after the peer's EOF", func() bool { return !fdOpen(fd) })
	})
	t.Run("a quiet peer: EOF after the output, closed once all is acknowledged", func(t *testing.T) {
		fd, peer := flushing(t, []byte("bye"), time.Hour, nil)
		readAll(t, peer, []byte("bye"))
		// Not an hour: a peer that sends nothing is not waited for.
		waitFor(t, "the socket to close", func() bool { return !fdOpen(fd) })
	})
	t.Run("a peer that does not take the output: the deadline ends the linger", func(t *testing.T) {
		// All of it fits in the kernel's send queue, so the linger
		// starts, but little fits in the peer's: the peer never
		// acknowledges it all.
		out := random(256 << 10)
		fd, _ := flushing(t, out, 100*time.Millisecond, func(be *BufferEvent, peer *net.TCPConn) {
			syscall.SetsockoptInt(be.FD(), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 1<<20)
			peer.SetReadBuffer(4 << 10)
		})
		waitFor(t, "the socket to close at the deadline", func() bool { return !fdOpen(fd) })
		// The kernel goes on sending what it holds: a close with nothing
		// unread is no reset.
	})
	t.Run("writes down to empty, whatever the write low watermark", func(t *testing.T) {
		data := random(4 << 20)
		_, peer := flushing(t, data, 0, func(be *BufferEvent, _ *net.TCPConn) {
			if err := be.SetWatermark(EvWrite, 1<<20, 0); err != nil {
				t.Fatal(err)
			}
		})
		readAll(t, peer, data)
	})
	t.Run("during a pending connect: the output goes once connected", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		ln := listen(t)
		be, err := NewBufferEvent(b, -1, BEVOptCloseOnFree)
		if err != nil {
			t.Fatal(err)
		}
		// As a user writes it: all before Dispatch, on this goroutine.
		if err := errors.Join(be.Connect("tcp", ln.Addr().String()), be.Enable(EvRead|EvWrite)); err != nil {
			t.Fatal(err)
		}
		be.Write([]byte("hello"))
		if err := be.CloseAfterFlush(0); err != nil {
			t.Fatal(err)
		}
		startDispatch(t, b, atCleanup)
		c := acceptConn(t, ln)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, err := io.ReadAll(c); err != nil || string(got) != "hello" {
			t.Fatalf("peer read %q, %v; want \"hello\", then EOF", got, err)
		}
	})
	t.Run("Base.Close ends a flush", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		fd, _ := tcpPair(t)
		be := newBEV(t, b, fd)
		be.Write(make([]byte, 64<<20))
		if err := be.CloseAfterFlush(0); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if fdOpen(fd) {
			t.Fatal("the socket of a flushing buffer event survived Base.Close")
		}
	})
}
