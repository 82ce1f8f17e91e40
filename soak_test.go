package evlistener

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Soak: many open/close cycles through the binding, then the three things a
// leak would show as: handles still registered, descriptors still open, and
// resident memory grown.

const (
	soakAccepts      = 100_000
	soakListeners    = 10_000
	soakBufferEvents = 10_000
	soakConnectors   = 4
	soakInflight     = 256 // below the backlog, so no SYN is ever dropped
	soakMaxRSS       = 16 << 20
)

// takeRSS measures resident memory after a GC, so that garbage is not
// counted as growth.
func takeRSS(t testing.TB) int64 {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	return procRSS(t)
}

// checkRSS fails the test if resident memory grew by soakMaxRSS or more
// since before. Handles and descriptors are checkNoLeaks's.
func checkRSS(t testing.TB, before int64) {
	t.Helper()
	after := takeRSS(t)
	t.Logf("VmRSS %.1f -> %.1f MiB", float64(before)/(1<<20), float64(after)/(1<<20))
	if grew := after - before; grew >= soakMaxRSS && rssBounded {
		t.Errorf("VmRSS grew by %.1f MiB, bound %d MiB", float64(grew)/(1<<20), soakMaxRSS>>20)
	}
}

// procRSS reads VmRSS from /proc/self/status, in bytes.
func procRSS(t testing.TB) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest) // "1234", "kB"
			kb, err := strconv.ParseInt(string(f[0]), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// connectReset connects to addr, sends msg and reads as many bytes back if
// msg is not empty, and closes with SO_LINGER 0: the connection ends with
// RST, so neither side holds an ephemeral port in TIME_WAIT and a long soak
// cannot run out of them. It uses blocking system calls rather than
// net.Dial to keep the client side cheap.
func connectReset(addr *net.TCPAddr, msg []byte) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1}); err != nil {
		return err
	}
	// A lost echo fails the soak instead of blocking it.
	tv := syscall.Timeval{Sec: 10}
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	sa := &syscall.SockaddrInet4{Port: addr.Port}
	copy(sa.Addr[:], addr.IP.To4())
	// The runtime's signals interrupt blocking socket calls (EINTR, and
	// SA_RESTART does not apply with SO_RCVTIMEO); an interrupted connect
	// goes on in the background.
	err = syscall.Connect(fd, sa)
	for err == syscall.EINTR || err == syscall.EALREADY {
		if err = syscall.Connect(fd, sa); err == syscall.EISCONN {
			err = nil
		}
	}
	if err != nil || len(msg) == 0 {
		return err
	}
	for {
		if _, err = syscall.Write(fd, msg); err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return os.NewSyscallError("write", err)
	}
	got := make([]byte, len(msg))
	for n := 0; n < len(got); {
		m, err := syscall.Read(fd, got[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("read", err)
		}
		if m == 0 {
			return fmt.Errorf("EOF after %d of %d echoed bytes", n, len(msg))
		}
		n += m
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// dumpGoroutines returns the stacks of every goroutine, for a test that
// hit its deadline.
func dumpGoroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// soakScale divides the soak's counts: by 10 with -short, which the -asan
// run uses (make asan), where every cycle costs several times as much and
// a tenth is enough to exercise the C side; the other runs of make test
// soak at full count.
func soakScale() int {
	if testing.Short() {
		return 10
	}
	return 1
}

func TestSoak(t *testing.T) {
	accepts := soakAccepts / soakScale()
	listeners := soakListeners / soakScale()
	bevs := soakBufferEvents / soakScale()
	// With no loop running, the binding calls libevent on the caller's
	// goroutine, which counts as the loop meanwhile; with Dispatch running
	// it hands each call to the loop thread and waits. Both paths open and
	// free.
	for _, c := range []struct {
		name string
		// n cycles, after a first round of warm that grows the pools and
		// thread stacks that any program of this shape needs.
		n, warm int
		// cycles runs n cycles and returns how many completed.
		cycles func(t *testing.T, n int) int
	}{
		{fmt.Sprintf("%d accept and close cycles", accepts), accepts, accepts / 20, soakAcceptClose},
		{fmt.Sprintf("%d NewBind and Close, no loop running", listeners), listeners, listeners / 10,
			func(t *testing.T, n int) int { return soakBindClose(t, n, false) }},
		{fmt.Sprintf("%d NewBind and Close while Dispatch runs", listeners), listeners, listeners / 10,
			func(t *testing.T, n int) int { return soakBindClose(t, n, true) }},
		{fmt.Sprintf("%d buffer event connections", bevs), bevs, bevs / 10, soakBufferEventConns},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cycles(t, c.warm)
			checkNoLeaks(t)
			before := takeRSS(t)
			start := time.Now()
			n := c.cycles(t, c.n)
			d := time.Since(start)
			t.Logf("%d cycles in %v (%.0f/s)", n, d.Round(time.Millisecond), float64(n)/d.Seconds())
			if n != c.n {
				t.Errorf("%d cycles completed, want %d", n, c.n)
			}
			checkRSS(t, before)
		})
	}
}

// soakServe serves n clients on a listener of its own base, whose accept
// callback is accept: soakConnectors goroutines call client(addr) until n
// calls were made, and the server ends Dispatch with LoopBreak once it has
// served them. served tells how many it has served so far, what it calls
// them.
func soakServe(t *testing.T, n int, backlog int, accept AcceptFunc, client func(*net.TCPAddr) error, served func() int64, what string) {
	b, err := NewBase()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	l, err := NewBind(b, accept, CloseOnFree|Reuseable, backlog, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().(*net.TCPAddr)
	loop := startDispatch(t, b, whenIdle)

	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, soakConnectors)
	for range soakConnectors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := client(addr); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	select {
	case <-loop.done:
		if err := loop.wait(t); err != nil {
			t.Fatal(err)
		}
		if served() != int64(n) {
			t.Fatalf("Dispatch returned early after %d %s", served(), what)
		}
	case err := <-errs:
		t.Fatalf("client: %v after %d %s", err, served(), what)
	case <-time.After(2 * time.Minute):
		t.Fatalf("%d of %d %s before the deadline\n%s", served(), n, what, dumpGoroutines())
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// soakBufferEventConns serves n connections, each by a buffer event that
// the accept callback opens, that echoes one message and that closes when
// the client resets, and returns how many buffer events were closed.
func soakBufferEventConns(t *testing.T, n int) int {
	var closed, failed atomic.Int64
	echo := func(be *BufferEvent) {
		if _, err := be.EchoInput(); err != nil {
			failed.Add(1)
		}
	}
	onEvent := func(be *BufferEvent, what BEVEvent, err error) {
		if what&(BEVEventEOF|BEVEventError) == 0 {
			return
		}
		if err := be.Close(); err != nil {
			failed.Add(1)
		}
		if closed.Add(1) == int64(n) {
			be.Base().LoopBreak()
		}
	}
	accept := func(l *Listener, fd int, addr net.Addr) {
		be, err := NewBufferEvent(l.Base(), fd, BEVOptCloseOnFree)
		if err != nil {
			syscall.Close(fd)
			failed.Add(1)
			return
		}
		be.SetCallbacks(echo, nil, onEvent)
		if err := be.Enable(EvRead | EvWrite); err != nil {
			failed.Add(1)
		}
	}
	msg := []byte("evlistener soak!")
	soakServe(t, n, -1, accept, func(addr *net.TCPAddr) error { return connectReset(addr, msg) }, closed.Load, "buffer events closed")
	if m := failed.Load(); m != 0 {
		t.Errorf("%d buffer event calls failed", m)
	}
	return int(closed.Load())
}

// soakBindClose opens and closes n listeners on one base, each with a
// callback and an error callback set, and returns n.
func soakBindClose(t *testing.T, n int, onLoop bool) int {
	b, err := NewBase()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var loop *running
	if onLoop {
		// Kept running with no listener open; Base.Close ends it.
		loop = startDispatch(t, b, atCleanup)
	}
	accept := func(l *Listener, fd int, addr net.Addr) { syscall.Close(fd) }
	onError := func(l *Listener, err error) {}
	for i := range n {
		l, err := NewBind(b, accept, CloseOnFree|Reuseable, -1, "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listener %d: %v", i, err)
		}
		l.SetErrorCallback(onError)
		if err := l.Close(); err != nil {
			t.Fatalf("listener %d: Close: %v", i, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if onLoop {
		if err := loop.wait(t); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// soakAcceptClose runs n connect/accept/close cycles against one listener
// whose callback closes each accepted socket, and returns how many the
// callback saw.
func soakAcceptClose(t *testing.T, n int) int {
	// A token per connection between connect and accept keeps the
	// accept queue short: a full queue drops SYNs, and the client would
	// wait a second for the retransmission.
	inflight := make(chan struct{}, soakInflight)
	var accepted atomic.Int64
	var badFD atomic.Int64
	accept := func(l *Listener, fd int, addr net.Addr) {
		if err := syscall.Close(fd); err != nil {
			badFD.Add(1)
		}
		<-inflight
		if accepted.Add(1) == int64(n) {
			l.Base().LoopBreak()
		}
	}
	client := func(addr *net.TCPAddr) error {
		inflight <- struct{}{}
		return connectReset(addr, nil)
	}
	soakServe(t, n, 4096, accept, client, accepted.Load, "accepts")
	if m := badFD.Load(); m != 0 {
		t.Errorf("%d accepted descriptors could not be closed", m)
	}
	return int(accepted.Load())
}
