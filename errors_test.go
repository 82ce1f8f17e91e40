package evlistener

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// emfileResult is what the EMFILE helper process reports.
type emfileResult struct {
	Window      time.Duration   // how long the listener ran out of descriptors
	CPU         time.Duration   // user+system time of the child in that window
	ErrorAt     []time.Duration // when each error callback ran, from the start
	AcceptedIn  int             // accepts during the window (must be 0)
	Accepted    int             // accepts once the limit was raised
	ServedAfter time.Duration   // from raising the limit to the last accept
}

// With no descriptor left, accept fails with EMFILE. libevent 2.1 would
// keep the listener enabled and spin (about 180,000 error callbacks per
// 100 ms at full CPU); the binding pauses 10 ms, 20 ms, 40 ms, ... and calls
// the error callback once per pause. Runs in a child process with a lowered
// RLIMIT_NOFILE; clients connect from this process.
func TestAcceptBackoffOnEMFILE(t *testing.T) {
	const clients = 8
	p := startHelper(t, "emfile")
	out := bufio.NewReader(p.stdout)
	line, err := out.ReadString('\n')
	if err != nil {
		p.wait(t, dispatchTimeout)
		t.Fatalf("reading the helper's address: %v", err)
	}
	addr, err := net.ResolveTCPAddr("tcp", strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	var cs []net.Conn
	for range clients {
		cs = append(cs, dial(t, addr))
	}
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	var res emfileResult
	if err := json.NewDecoder(out).Decode(&res); err != nil {
		p.wait(t, dispatchTimeout)
		t.Fatalf("reading the helper's result: %v", err)
	}
	p.wait(t, dispatchTimeout)
	for i, c := range cs {
		if got := readAll(t, c); got != "served\n" {
			t.Fatalf("client %d read %q", i, got)
		}
	}
	n := len(res.ErrorAt)
	t.Logf("%d error callbacks in %v at %v; CPU %v; %d clients served %v after the limit was raised",
		n, res.Window, res.ErrorAt, res.CPU, res.Accepted, res.ServedAfter)
	if res.AcceptedIn != 0 || res.Accepted != clients {
		t.Fatalf("accepts: %d with no descriptor left, %d after; want 0, %d", res.AcceptedIn, res.Accepted, clients)
	}
	// 400 ms of 10, 20, 40, 80, 160 ms pauses: 6 steps, 5 if timers
	// run late. A spinning listener would make hundreds of thousands.
	if n < 3 || n > 8 {
		t.Fatalf("%d error callbacks in %v, want one per back-off step (about 6)", n, res.Window)
	}
	// The pauses add up to what the back-off steps say. Their sum is what
	// is checked, not each gap: a callback that runs late (the loop
	// yielded, a loaded machine) shortens the gap after it as much as it
	// lengthens the one before.
	delay, paused := firstBackoff, time.Duration(0)
	for range n - 1 {
		paused += delay
		delay = min(2*delay, maxBackoff)
	}
	if got := res.ErrorAt[n-1] - res.ErrorAt[0]; got < paused*8/10 {
		t.Fatalf("%d error callbacks over %v, want pauses adding up to %v (%v)", n, got, paused, res.ErrorAt)
	}
	if res.CPU > res.Window/4 {
		t.Fatalf("child used %v of CPU in %v: the listener spins", res.CPU, res.Window)
	}
	// The retry after the limit is raised comes at the next step.
	if res.ServedAfter > 2*delay+time.Second {
		t.Fatalf("queued clients served %v after the limit was raised", res.ServedAfter)
	}
}

func init() {
	helpers["emfile"] = helperEMFILE
}

// helperEMFILE is the child side of TestAcceptBackoffOnEMFILE: it prints
// its listener's address, waits for "go" (the clients are queued by then),
// takes every free descriptor slot away for a while, then raises the limit
// again and serves the queue.
func helperEMFILE() error {
	const window = 400 * time.Millisecond
	const clients = 8
	b, err := NewBase()
	if err != nil {
		return err
	}
	defer b.Close()
	var res emfileResult
	var start time.Time
	var errs []error
	var raised time.Time
	l, err := NewBind(b, func(l *Listener, fd int, _ net.Addr) {
		syscall.Write(fd, []byte("served\n"))
		syscall.Close(fd)
		res.Accepted++
		if res.Accepted == clients {
			res.ServedAfter = time.Since(raised)
			l.Close()
		}
	}, CloseOnFree, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	l.SetErrorCallback(func(_ *Listener, err error) {
		res.ErrorAt = append(res.ErrorAt, time.Since(start))
		errs = append(errs, err)
	})
	fmt.Println(l.Addr())
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}

	// The lowest free descriptor becomes the limit: no slot is left.
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	syscall.Close(fd)
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		return err
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: uint64(fd), Max: orig.Max}); err != nil {
		return err
	}
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start = time.Now()
	if err := b.LoopExit(window); err != nil {
		return err
	}
	if err := b.Dispatch(); err != nil {
		return err
	}
	res.Window = time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	res.CPU = time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	res.AcceptedIn = res.Accepted
	for _, err := range errs {
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "accept" || oe.Net != "tcp" || oe.Addr.String() != l.Addr().String() || !errors.Is(err, syscall.EMFILE) {
			return fmt.Errorf("error callback got %#v (%v), want an accept *net.OpError on %v wrapping EMFILE", err, err, l.Addr())
		}
	}

	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		return err
	}
	raised = time.Now()
	// The listener closes itself once the queue is served, and Dispatch
	// returns; the parent's timeout bounds it.
	if err := b.Dispatch(); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// The error callback gets the errno captured in C at the failing accept,
// inside a *net.OpError that names the operation and the listener.
func TestErrorCallbackErrno(t *testing.T) {
	b := newBase(t)
	l := notListening(t, b)
	var got error
	l.SetErrorCallback(func(l *Listener, err error) {
		got = err
		l.Disable()
	})
	if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
		t.Fatal(err)
	}
	var oe *net.OpError
	if !errors.As(got, &oe) || oe.Op != "accept" || oe.Net != "unix" {
		t.Fatalf("error callback got %#v, want a *net.OpError for accept on unix", got)
	}
	var se *os.SyscallError
	if !errors.As(got, &se) || se.Syscall != "accept" || se.Err != syscall.EINVAL {
		t.Fatalf("error callback got %v, want accept: EINVAL", got)
	}
	// EMFILE: TestAcceptBackoffOnEMFILE.
}

// NewBind's errors name the step that failed, as net.Listen's do, and
// leave no descriptor behind.
func TestNewBindErrorSteps(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct {
		name, network, address string
		flags                  Flag
		step                   string
		errno                  syscall.Errno
	}{
		{"port in use", "tcp", taken.Addr().String(), 0, "bind", syscall.EADDRINUSE},
		{"IPv6-only on an IPv4 socket", "tcp4", "127.0.0.1:0", BindIPv6Only, "setsockopt", syscall.ENOPROTOOPT},
		{"deferred accept on a unix socket", "unix", t.TempDir() + "/s", DeferredAccept, "setsockopt", syscall.EOPNOTSUPP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewBind(b, nil, CloseOnFree|tc.flags, -1, tc.network, tc.address)
			var oe *net.OpError
			var se *os.SyscallError
			if !errors.As(err, &oe) || oe.Op != "listen" || !errors.As(err, &se) || se.Syscall != tc.step || !errors.Is(err, tc.errno) {
				t.Fatalf("NewBind = %v; want a listen *net.OpError around %s: %v", err, tc.step, tc.errno)
			}
			want := "listen " + tc.network
			if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), ": "+tc.step+": ") {
				t.Fatalf("error %q, want it shaped as net.Listen's: %q ... %s: ...", err, want, tc.step)
			}
		})
	}
}
