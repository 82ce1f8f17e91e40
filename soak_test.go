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
// a tenth is enough to exercise the C side; the race and cgocheck2 runs
// soak at full count.
func soakScale() int {
	if testing.Short() {
		return 10
	}
	return 1
}

func TestSoak(t *testing.T) {
	accepts := soakAccepts / soakScale()
	t.Run(fmt.Sprintf("%d accept and close cycles", accepts), func(t *testing.T) {
		// A first round grows the pools and thread stacks that any
		// program of this shape needs.
		soakAcceptClose(t, accepts/20)
		checkNoLeaks(t)
		before := takeRSS(t)
		start := time.Now()
		n := soakAcceptClose(t, accepts)
		d := time.Since(start)
		t.Logf("%d accept/close cycles in %v (%.0f/s)", n, d.Round(time.Millisecond), float64(n)/d.Seconds())
		if n != accepts {
			t.Errorf("accepted %d connections, want %d", n, accepts)
		}
		checkRSS(t, before)
	})

	// With no loop running, the binding calls libevent on the caller's
	// goroutine, which counts as the loop meanwhile; with Dispatch running it hands each
	// call to the loop thread and waits. Both paths open and free.
	listeners := soakListeners / soakScale()
	for _, running := range []bool{false, true} {
		name := fmt.Sprintf("%d NewBind and Close, no loop running", listeners)
		if running {
			name = fmt.Sprintf("%d NewBind and Close while Dispatch runs", listeners)
		}
		t.Run(name, func(t *testing.T) {
			soakBindClose(t, listeners/10, running)
			checkNoLeaks(t)
			before := takeRSS(t)
			start := time.Now()
			soakBindClose(t, listeners, running)
			t.Logf("%d listeners opened and closed in %v", listeners, time.Since(start).Round(time.Millisecond))
			checkRSS(t, before)
		})
	}

	bevs := soakBufferEvents / soakScale()
	t.Run(fmt.Sprintf("%d buffer event connections", bevs), func(t *testing.T) {
		soakBufferEventConns(t, bevs/10)
		checkNoLeaks(t)
		before := takeRSS(t)
		start := time.Now()
		n := soakBufferEventConns(t, bevs)
		d := time.Since(start)
		t.Logf("%d buffer event connections in %v (%.0f/s)", n, d.Round(time.Millisecond), float64(n)/d.Seconds())
		if n != bevs {
			t.Errorf("%d buffer events closed, want %d", n, bevs)
		}
		checkRSS(t, before)
	})
}

// soakBufferEventConns serves n connections, each by a buffer event that
// the accept callback opens, that echoes one message and that closes when
// the client resets, and returns how many buffer events were closed.
func soakBufferEventConns(t *testing.T, n int) int {
	b, err := NewBase()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
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
	l, err := NewBind(b, func(l *Listener, fd int, addr net.Addr) {
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
	}, CloseOnFree|Reuseable, -1, "tcp", "127.0.0.1:0")
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
			msg := []byte("evlistener soak!")
			for next.Add(1) <= int64(n) {
				if err := connectReset(addr, msg); err != nil {
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
	case err := <-errs:
		t.Fatalf("client: %v after %d connections", err, closed.Load())
	case <-time.After(2 * time.Minute):
		t.Fatalf("%d of %d buffer events closed before the deadline\n%s", closed.Load(), n, dumpGoroutines())
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if m := failed.Load(); m != 0 {
		t.Errorf("%d buffer event calls failed", m)
	}
	return int(closed.Load())
}

// soakBindClose opens and closes n listeners on one base, each with a
// callback and an error callback set.
func soakBindClose(t *testing.T, n int, running bool) {
	b, err := NewBase()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dispatched := make(chan error, 1)
	if running {
		// A pending exit timer keeps Dispatch running with no
		// listener open; Base.Close ends it.
		if err := b.LoopExit(time.Hour); err != nil {
			t.Fatal(err)
		}
		go func() { dispatched <- b.Dispatch() }()
		// Dispatch on a base closed before it starts returns ErrClosed.
		waitFor(t, "Dispatch to start", func() bool { return isRunning(b) })
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
	if running {
		select {
		case err := <-dispatched:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Dispatch did not return after Close\n%s", dumpGoroutines())
		}
	}
}

// soakAcceptClose runs n connect/accept/close cycles against one listener
// whose callback closes each accepted socket, and returns how many the
// callback saw.
func soakAcceptClose(t *testing.T, n int) int {
	b, err := NewBase()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	// A token per connection between connect and accept keeps the
	// accept queue short: a full queue drops SYNs, and the client would
	// wait a second for the retransmission.
	inflight := make(chan struct{}, soakInflight)
	var accepted atomic.Int64
	var badFD atomic.Int64
	l, err := NewBind(b, func(l *Listener, fd int, addr net.Addr) {
		if err := syscall.Close(fd); err != nil {
			badFD.Add(1)
		}
		<-inflight
		if accepted.Add(1) == int64(n) {
			l.Base().LoopBreak()
		}
	}, CloseOnFree|Reuseable, 4096, "tcp", "127.0.0.1:0")
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
				inflight <- struct{}{}
				if err := connectReset(addr, nil); err != nil {
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
		if accepted.Load() != int64(n) {
			t.Fatalf("Dispatch returned early after %d accepts", accepted.Load())
		}
	case err := <-errs:
		t.Fatalf("connect: %v after %d accepts", err, accepted.Load())
	case <-time.After(2 * time.Minute):
		t.Fatalf("%d of %d accepted before the deadline\n%s", accepted.Load(), n, dumpGoroutines())
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if m := badFD.Load(); m != 0 {
		t.Errorf("%d accepted descriptors could not be closed", m)
	}
	return int(accepted.Load())
}
