package evlistener

import (
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Helpers of the buffer event and event tests, beside main_test.go's.

// checkNoLeaks records the live handles and open fds now and, when the
// test ends (after the cleanups registered later), fails it if either
// grew.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	warmNetpoll()
	handles, fds := liveHandles(), openFDs(t)
	t.Cleanup(func() {
		if n := liveHandles(); n != handles {
			t.Errorf("live handles: %d, want %d", n, handles)
		}
		// A peer closed by a cleanup leaves Go's poller asynchronously:
		// poll briefly.
		deadline := time.Now().Add(2 * time.Second)
		for {
			n := openFDs(t)
			if n <= fds {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("open fds: %d, want %d", n, fds)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// warmNetpoll opens the Go runtime's poller fds once, so that they do not
// count as a leak of the first test that uses package net.
var warmNetpoll = sync.OnceFunc(func() {
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
})

// tcpPair returns a connected loopback TCP pair: a non-blocking,
// close-on-exec socket for libevent and the peer as a net.Conn, closed when
// the test ends.
func tcpPair(t testing.TB) (fd int, peer *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw, err := s.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// A dup shares the file status flags, so it stays non-blocking; Go's
	// poller forgets the original on Close (EPOLL_CTL_DEL first).
	var derr error
	raw.Control(func(s uintptr) { fd, derr = syscall.Dup(int(s)) })
	if derr != nil {
		t.Fatal(derr)
	}
	syscall.CloseOnExec(fd)
	return fd, c.(*net.TCPConn)
}

// dispatching runs b's loop on a new goroutine until stop, which closes b
// and waits for Dispatch to return; a long LoopExit keeps the loop running
// while nothing is pending. stop is also a cleanup of the test.
func dispatching(t testing.TB, b *Base) (stop func()) {
	t.Helper()
	if err := b.LoopExit(time.Hour); err != nil {
		t.Fatal(err)
	}
	r := startDispatch(t, b)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			b.Close()
			if err := r.wait(t); err != nil {
				t.Errorf("Dispatch: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// readWriteEcho is an event callback that echoes with read and write
// straight from the callback. buf is made outside it: syscall.Read leaks
// its argument under -race.
func readWriteEcho(buf []byte) EventFunc {
	return func(ev *Event, fd int, what Events) {
		if n, err := syscall.Read(fd, buf); err == nil {
			syscall.Write(fd, buf[:n])
		}
	}
}

// echoAllocs reports the allocations per 64-byte ping-pong through peer.
func echoAllocs(peer *net.TCPConn) float64 {
	msg, got := make([]byte, 64), make([]byte, 64)
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	return testing.AllocsPerRun(1000, func() {
		peer.Write(msg)
		io.ReadFull(peer, got)
	})
}

// benchEcho runs b.N 64-byte ping-pongs through peer.
func benchEcho(b *testing.B, peer *net.TCPConn) {
	msg, got := make([]byte, 64), make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		peer.Write(msg)
		io.ReadFull(peer, got)
	}
}
