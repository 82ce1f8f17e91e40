package evlistener

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/evlistener/evlistener/internal/ctest"
)

// helperEnv selects a helper mode when the test binary re-executes itself:
// tests that lower RLIMIT_NOFILE run in a child process, because the Go
// runtime of the test process must not run out of descriptors.
const helperEnv = "EVLISTENER_TEST_HELPER"

// helpers are the child-process modes, by name.
var helpers = map[string]func() error{}

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name))
	}
	flag.Parse()
	// libevent's regression suite runs with lock debugging; so does this
	// one, except when benchmarking, where the checks would cost time.
	if flag.Lookup("test.bench").Value.String() == "" {
		if err := enableLibeventDebugging(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	// As git2go does: a handle still registered after every test has
	// closed its objects is a leak of the Go object and of its C side.
	if n := liveHandles(); n != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d cgo handles still registered after the tests\n", n)
		code = 1
	}
	os.Exit(code)
}

// enableLibeventDebugging turns on libevent's lock debugging and event
// debug mode, after its pthread locking, before the first base.
func enableLibeventDebugging() error {
	if err := UsePthreads(); err != nil {
		return err
	}
	ctest.EnableLibeventDebugging()
	return nil
}

func runHelper(name string) int {
	fn := helpers[name]
	if fn == nil {
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
		return 2
	}
	if err := enableLibeventDebugging(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The runtime opens its netpoll epoll fd with the first timer; do it
	// now, before a helper takes the free descriptors away.
	time.AfterFunc(time.Hour, func() {}).Stop()
	if err := fn(); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", name, err)
		return 1
	}
	return 0
}

// startHelper starts the test binary in helper mode name, with env added
// to its environment. The child's
// stdin and stdout are pipes; its stderr goes to the test log on failure.
type helperProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser
	stderr strings.Builder
}

func startHelper(t *testing.T, name string, env ...string) *helperProcess {
	t.Helper()
	p := &helperProcess{cmd: exec.Command(os.Args[0], "-test.run=^$")}
	p.cmd.Env = append(append(os.Environ(), helperEnv+"="+name), env...)
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if p.stdout, err = p.cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

// wait waits at most d for the child to exit and fails the test unless it
// exits with status 0.
func (p *helperProcess) wait(t *testing.T, d time.Duration) {
	t.Helper()
	p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("helper process: %v\n%s", err, p.stderr.String())
		}
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-done
		t.Fatalf("helper process did not exit within %v\n%s", d, p.stderr.String())
	}
}

// newBase returns a base that is closed when the test ends. It also arms a
// watchdog: a test that deadlocks in libevent cannot be unblocked or even
// fail normally (its cleanup would hang too), so after testTimeout the
// watchdog prints every goroutine's stack and ends the run.
func newBase(t testing.TB) *Base {
	t.Helper()
	return newBaseFlags(t, 0)
}

// testBusyPoll is not a libevent flag: openBase turns it into
// SetBusyPoll(time.Hour), so that Dispatch polls without ever sleeping
// once a callback has run.
const testBusyPoll BaseFlag = 1 << 30

// openBase is NewBaseWithFlags, and SetBusyPoll with testBusyPoll.
func openBase(flags BaseFlag) (*Base, error) {
	b, err := NewBaseWithFlags(flags &^ testBusyPoll)
	if err == nil && flags&testBusyPoll != 0 {
		err = b.SetBusyPoll(time.Hour)
	}
	return b, err
}

// newBaseFlags is newBase with openBase(flags).
func newBaseFlags(t testing.TB, flags BaseFlag) *Base {
	t.Helper()
	watchdog(t)
	b, err := openBase(flags)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil && err != ErrClosed {
			t.Error(err)
		}
	})
	return b
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
		if err := l.Close(); err != nil && err != ErrClosed {
			t.Error(err)
		}
	})
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

// dispatch runs b.Dispatch on another goroutine and waits for it: a
// Dispatch that hangs must fail the test, not stall the run. Callbacks run on
// that goroutine, so they may use t.Error but not t.Fatal.
func dispatch(t testing.TB, b *Base) error {
	t.Helper()
	return startDispatch(t, b).wait(t)
}

// running is a Dispatch on its own goroutine.
type running struct {
	done chan struct{}
	err  error
	pan  any // what Dispatch panicked with
}

// startDispatch starts b.Dispatch on a new goroutine and returns once the
// base counts as running, so that calls from other goroutines are handed to
// the loop.
func startDispatch(t testing.TB, b *Base) *running {
	t.Helper()
	r := goDispatch(b)
	waitFor(t, "Dispatch to start", func() bool { return isRunning(b) || r.finished() })
	return r
}

// goDispatch starts b.Dispatch on a new goroutine without waiting.
func goDispatch(b *Base) *running {
	r := &running{done: make(chan struct{})}
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

// closeAtOnce calls closeFn from n goroutines released together and
// returns how many calls returned nil; any error but ErrClosed fails the
// test.
func closeAtOnce(t testing.TB, n int, closeFn func() error) (nils int) {
	t.Helper()
	start := make(chan struct{})
	errs := make(chan error, n)
	for range n {
		go func() {
			<-start
			errs <- closeFn()
		}()
	}
	close(start)
	for range n {
		switch err := recv(t, errs, "Close"); err {
		case nil:
			nils++
		case ErrClosed:
		default:
			t.Fatalf("Close = %v", err)
		}
	}
	return nils
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
		return r.pan
	case <-time.After(dispatchTimeout):
		// Nothing can unblock a hung loop; stop the run with the
		// stacks that show where it hangs.
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		panic(fmt.Sprintf("%s: Dispatch did not return within %v\n\n%s", t.Name(), dispatchTimeout, buf))
	}
}

// dispatchPanic runs Dispatch and returns what it panicked with.
func dispatchPanic(t testing.TB, b *Base) any {
	t.Helper()
	return goDispatch(b).waitPanic(t)
}

func isRunning(b *Base) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running
}

// queuedCalls counts the calls from other goroutines waiting for the loop.
func queuedCalls(b *Base) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// waitFor polls cond until it holds, failing the test after 5 s.
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

// recv waits at most 5 s for a value; it is how a test waits on a callback.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
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

// listenBacklog asks the kernel, through sock_diag as `ss -l` does, for the
// accept-queue limit of the IPv4 TCP listener bound to addr.
func listenBacklog(t testing.TB, addr *net.TCPAddr) int {
	t.Helper()
	const (
		netlinkSockDiag   = 4
		sockDiagByFamily  = 20
		tcpListen         = 10
		nlmsgHdrLen       = 16
		inetDiagReqV2Len  = 56
		inetDiagMsgSport  = 4  // offset of id.idiag_sport
		inetDiagMsgWqueue = 60 // offset of idiag_wqueue: sk_max_ack_backlog
	)
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, netlinkSockDiag)
	if err != nil {
		t.Fatal(os.NewSyscallError("socket", err))
	}
	defer syscall.Close(fd)
	req := make([]byte, nlmsgHdrLen+inetDiagReqV2Len)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1)
	req[16] = syscall.AF_INET
	req[17] = syscall.IPPROTO_TCP
	ne.PutUint32(req[20:], 1<<tcpListen)
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		t.Fatal(os.NewSyscallError("sendto", err))
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatal(os.NewSyscallError("recvfrom", err))
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				t.Fatalf("no TCP listener on %v in sock_diag", addr)
			case syscall.NLMSG_ERROR:
				t.Fatalf("sock_diag: %v", syscall.Errno(-int32(ne.Uint32(m.Data))))
			}
			if len(m.Data) < inetDiagMsgWqueue+4 {
				continue
			}
			if int(binary.BigEndian.Uint16(m.Data[inetDiagMsgSport:])) == addr.Port {
				return int(ne.Uint32(m.Data[inetDiagMsgWqueue:]))
			}
		}
	}
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
