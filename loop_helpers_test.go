package evlistener

import (
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Helpers shared by the tests of buffer events and events.

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
		// A closed peer's fd leaves with the Go runtime's poller
		// asynchronously: poll briefly.
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

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

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
// and waits for Dispatch to return. A long LoopExit keeps the loop running
// while nothing is pending. stop is also registered as a cleanup.
func dispatching(t testing.TB, b *Base) (stop func()) {
	t.Helper()
	if err := b.LoopExit(time.Hour); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Dispatch() }()
	waitFor(t, "Dispatch to start", func() bool { return b.loopG.Load() != 0 })
	var once sync.Once
	stop = func() {
		once.Do(func() {
			b.Close()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Dispatch: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Dispatch did not return after Close")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// newTestBase returns a base closed when the test ends.
func newTestBase(t testing.TB) *Base {
	t.Helper()
	b, err := NewBase()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recv waits for a value on ch for up to 5 s.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// dispatchRecover runs Dispatch on the calling goroutine and returns what it
// panicked with, or nil.
func dispatchRecover(b *Base) (p any, err error) {
	defer func() { p = recover() }()
	return nil, b.Dispatch()
}
