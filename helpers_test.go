package evlistener

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/evlistener/evlistener/internal/servertest"
)

// Helpers of every test file: bases, listeners, clients, loops, leak checks.

// newBase returns a base that is closed when the test ends. It also arms a
// watchdog: a test that deadlocks in libevent cannot be unblocked or even
// fail normally (its cleanup would hang too), so after testTimeout the
// watchdog prints every goroutine's stack and ends the run.
func newBase(t testing.TB) *Base {
	t.Helper()
	return newBaseKind(t, baseKind{})
}

// baseKind is one way to make a base that the binding must serve alike:
// its libevent flags, and whether Dispatch busy-polls.
type baseKind struct {
	name  string
	flags BaseFlag
	// busyPoll sets SetBusyPoll(time.Hour) with no budget: Dispatch polls
	// without ever sleeping once a callback has run.
	busyPoll bool
}

// baseKinds are the bases forEachBaseKind runs a test on: with libevent's
// locks, without (BaseNoLock), and busy-polling.
var baseKinds = []baseKind{
	{name: "locked"},
	{name: "BaseNoLock", flags: BaseNoLock},
	{name: "busy poll", flags: BaseNoLock, busyPoll: true},
}

// open makes a base of kind k.
func (k baseKind) open() (*Base, error) {
	b, err := NewBaseWithFlags(k.flags)
	if err == nil && k.busyPoll {
		err = errors.Join(b.SetBusyPoll(time.Hour), b.SetBusyPollBudget(math.Inf(1)))
	}
	return b, err
}

// newBaseKind is newBase with a base of kind k.
func newBaseKind(t testing.TB, k baseKind) *Base {
	t.Helper()
	watchdog(t)
	b, err := k.open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Error(err)
		}
	})
	return b
}

// forEachBaseKind runs test on each of baseKinds: calls from other
// goroutines must be as safe, and Dispatch must end the same way, on all
// of them.
func forEachBaseKind(t *testing.T, test func(*testing.T, baseKind)) {
	for _, k := range baseKinds {
		t.Run(k.name, func(t *testing.T) { test(t, k) })
	}
}

// listenTCP binds a listener on 127.0.0.1 port 0 with CloseOnFree and the
// given flags; it is closed when the test ends.
func listenTCP(t testing.TB, b *Base, cb AcceptFunc, flags Flag) *Listener {
	t.Helper()
	l, err := NewBind(b, cb, CloseOnFree|flags, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, l)
	return l
}

func closeAtEnd(t testing.TB, l *Listener) {
	t.Cleanup(func() {
		if err := l.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Error(err)
		}
	})
}

// listenOnce is listenTCP with a callback that closes each socket, counts
// it in *n and disables the listener: a Dispatch with nothing else pending
// then ends after one accept.
func listenOnce(t testing.TB, b *Base, flags Flag, n *int) *Listener {
	t.Helper()
	return listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
		*n++
		syscall.Close(fd)
		l.Disable()
	}, flags)
}

// dial connects to addr; on loopback the handshake completes in the kernel,
// so the connection waits in the listener's backlog before any Dispatch.
func dial(t testing.TB, addr net.Addr) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(addr.Network(), addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testTimeout bounds any test that creates a base, cleanup included.
const testTimeout = 30 * time.Second

func watchdog(t testing.TB) {
	name := t.Name()
	timer := time.AfterFunc(testTimeout, func() {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "FAIL: %s did not finish within %v (deadlock?)\n\n%s", name, testTimeout, buf)
		os.Exit(2)
	})
	t.Cleanup(func() { timer.Stop() })
}

// dispatchTimeout bounds every Dispatch a test expects to end on its own.
const dispatchTimeout = 10 * time.Second

// loopEnd says when a Dispatch that startDispatch starts returns, if the
// test does not end it first (LoopBreak, LoopExit, Close).
type loopEnd int

const (
	// whenIdle is libevent's own end: once no event is pending.
	whenIdle loopEnd = iota
	// atCleanup keeps the loop running while nothing is pending, with a
	// long LoopExit, until the test ends.
	atCleanup
)

// running is a Dispatch on its own goroutine.
type running struct {
	done     chan struct{}
	err      error
	pan      any         // what Dispatch panicked with
	observed atomic.Bool // the test waited for Dispatch
	stop     func()      // closes the base and waits for Dispatch
}

// startDispatch is the one way the tests run a loop: b.Dispatch on a new
// goroutine, running (or already returned) once startDispatch returns, so
// that calls from other goroutines are handed to the loop. Callbacks run
// on that goroutine, so they may use t.Error but not t.Fatal. When the
// test ends (or at r.stop) the base is closed and Dispatch waited for; a
// panic or error the test did not wait for fails it.
func startDispatch(t testing.TB, b *Base, end loopEnd) *running {
	t.Helper()
	if end == atCleanup {
		if err := b.LoopExit(time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	r := goDispatch(t, b)
	waitFor(t, "Dispatch to start", func() bool { return isRunning(b) || r.finished() })
	return r
}

// goDispatch is startDispatch without waiting for the base to count as
// running: for the tests that race the start of Dispatch. The goroutine
// needs no locked thread: the loop stays on one thread while it is in C,
// and pollLoop locks it between turns.
func goDispatch(t testing.TB, b *Base) *running {
	r := &running{done: make(chan struct{})}
	r.stop = sync.OnceFunc(func() {
		if err := b.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Base.Close: %v", err)
		}
		if r.observed.Load() {
			return
		}
		if p := r.waitPanic(t); p != nil {
			t.Errorf("Dispatch panicked: %v", p)
		} else if r.err != nil {
			t.Errorf("Dispatch: %v", r.err)
		}
	})
	t.Cleanup(r.stop)
	go func() {
		defer close(r.done)
		defer func() { r.pan = recover() }()
		r.err = b.Dispatch()
	}()
	return r
}

// breakAndWait ends the running Dispatch with LoopBreak and waits for it.
func (r *running) breakAndWait(t testing.TB, b *Base) {
	t.Helper()
	if err := b.LoopBreak(); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func (r *running) finished() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// wait waits for Dispatch to return and fails the test if it panicked.
func (r *running) wait(t testing.TB) error {
	t.Helper()
	if p := r.waitPanic(t); p != nil {
		t.Fatalf("Dispatch panicked: %v", p)
	}
	return r.err
}

// waitPanic waits for Dispatch to return and tells what it panicked with.
func (r *running) waitPanic(t testing.TB) any {
	t.Helper()
	select {
	case <-r.done:
		r.observed.Store(true)
		return r.pan
	case <-time.After(dispatchTimeout):
		// Nothing can unblock a hung loop; stop the run with the
		// stacks that show where it hangs.
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		panic(fmt.Sprintf("%s: Dispatch did not return within %v\n\n%s", t.Name(), dispatchTimeout, buf))
	}
}

func isRunning(b *Base) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running
}

// waitFor and recv are servertest's, with the 5 s every test allows: recv
// is how a test waits on a callback.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	servertest.WaitFor(t, 5*time.Second, what, cond)
}

func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return servertest.Recv(t, ch, 5*time.Second, what)
}

// queuedWait is how long a client is watched to show that the server left
// it alone: a read must time out rather than see EOF or a reset.
const queuedWait = 50 * time.Millisecond

// stillQueued fails the test if the server closed or wrote to c.
func stillQueued(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(queuedWait))
	defer c.SetReadDeadline(time.Time{})
	n, err := c.Read(make([]byte, 1))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client %v: read = %d, %v; want a timeout (connection left in the backlog)", c.LocalAddr(), n, err)
	}
}

// readEOF fails the test unless the server closed c without writing.
func readEOF(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err != io.EOF {
		t.Fatalf("client %v: read = %d, %v; want EOF", c.LocalAddr(), n, err)
	}
}

// readAll reads what the server wrote until it closed c.
func readAll(t testing.TB, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("client %v: %v", c.LocalAddr(), err)
	}
	return string(b)
}

// refused fails the test unless a connection to addr is refused: nothing
// listens there any more.
func refused(t testing.TB, addr net.Addr) {
	t.Helper()
	c, err := net.DialTimeout(addr.Network(), addr.String(), 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dial %v succeeded; want the listening socket closed", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("dial %v: %v; want ECONNREFUSED", addr, err)
	}
}

func fcntl(fd, cmd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// fdOpen reports whether fd is an open descriptor.
func fdOpen(fd int) bool {
	_, err := fcntl(fd, syscall.F_GETFD)
	return err == nil
}

// fdModes reports O_NONBLOCK and FD_CLOEXEC of fd.
func fdModes(fd int) (nonblock, cloexec bool, err error) {
	fl, err := fcntl(fd, syscall.F_GETFL)
	if err != nil {
		return false, false, err
	}
	fd2, err := fcntl(fd, syscall.F_GETFD)
	if err != nil {
		return false, false, err
	}
	return fl&syscall.O_NONBLOCK != 0, fd2&syscall.FD_CLOEXEC != 0, nil
}

// openFDs counts the descriptors of this process.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // the directory being read
}

// sockoptInt reads an integer socket option of fd.
func sockoptInt(t testing.TB, fd, level, opt int) int {
	t.Helper()
	v, err := syscall.GetsockoptInt(fd, level, opt)
	if err != nil {
		t.Fatal(os.NewSyscallError("getsockopt", err))
	}
	return v
}

// socketpair returns a connected pair of non-blocking unix stream sockets,
// as libevent's TT_NEED_SOCKETPAIR does. The caller closes them: a
// listener with CloseOnFree takes one.
func socketpair(t testing.TB) [2]int {
	t.Helper()
	p, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(os.NewSyscallError("socketpair", err))
	}
	return p
}

// checkNoLeaks is the leak check of the tests: it records the live handles
// and open fds now and, when the test ends (after the cleanups registered
// later), fails it unless both are back where they were. It measures after
// a GC, so that garbage waiting for a finalizer is not counted.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	warmNetpoll()
	handles, fds := liveHandles(), openFDs(t)
	t.Cleanup(func() {
		if n := liveHandles(); n != handles {
			t.Errorf("live handles: %d, want %d", n, handles)
		}
		// A peer closed by a cleanup leaves Go's poller asynchronously,
		// and an *os.File dropped without Close closes at its
		// finalizer: poll briefly, collecting garbage once. Fewer fds
		// than before is not a leak (an earlier test's finalizer ran).
		// Not a GC every time: the fuzz targets check every input.
		deadline := time.Now().Add(2 * time.Second)
		collected := false
		for {
			n := openFDs(t)
			if n <= fds {
				return
			}
			if !collected {
				runtime.GC()
				collected = true
				continue
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

// echoPeer starts an echo server, serve on one end of a tcpPair on a
// running base, and returns the other end.
func echoPeer(tb testing.TB, serve func(testing.TB, *Base, int)) *net.TCPConn {
	tb.Helper()
	b := newBase(tb)
	fd, peer := tcpPair(tb)
	serve(tb, b, fd)
	startDispatch(tb, b, atCleanup)
	return peer
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

// newBEV wraps fd in a buffer event that closes it, on a base closed when
// the test ends.
func newBEV(t testing.TB, b *Base, fd int) *BufferEvent {
	t.Helper()
	be, err := NewBufferEvent(b, fd, BEVOptCloseOnFree)
	if err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	return be
}

// bevPair returns a buffer event on b that owns one end of a tcpPair, and
// the other end.
func bevPair(t testing.TB, b *Base) (*BufferEvent, *net.TCPConn) {
	t.Helper()
	fd, peer := tcpPair(t)
	return newBEV(t, b, fd), peer
}

// pingPong writes n messages of size bytes to peer and checks that each
// comes back.
func pingPong(t testing.TB, peer net.Conn, n, size int) {
	t.Helper()
	msg := make([]byte, size)
	got := make([]byte, size)
	rand.Read(msg)
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < n; i++ {
		msg[0] = byte(i)
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("message %d came back changed", i)
		}
	}
}

// newEvent creates an event closed when the test ends.
func newEvent(t testing.TB, b *Base, fd int, what Events, cb EventFunc) *Event {
	t.Helper()
	ev, err := NewEvent(b, fd, what, cb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ev.Close() })
	return ev
}

// newTimer creates a timer closed when the test ends.
func newTimer(t testing.TB, b *Base, cb EventFunc) *Event {
	t.Helper()
	ev, err := NewTimer(b, cb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ev.Close() })
	return ev
}
