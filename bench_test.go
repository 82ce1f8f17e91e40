package evlistener

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/evlistener/evlistener/internal/ctest"
)

// BenchmarkAcceptCallback measures one accept callback from libevent's C
// side to the Go AcceptFunc: the trampoline, the handle lookup and the copy
// of the peer address.
func BenchmarkAcceptCallback(b *testing.B) {
	base, err := NewBase()
	if err != nil {
		b.Fatal(err)
	}
	defer base.Close()
	n := 0
	l, err := NewBind(base, func(*Listener, int, net.Addr) { n++ }, CloseOnFree|Disabled, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	benchAccept(l, -1, b.N)
	b.StopTimer()
	if n != b.N {
		b.Fatalf("callback ran %d times, want %d", n, b.N)
	}
}

// BenchmarkEnableDisableCrossGoroutine measures Enable then Disable called
// from a goroutine other than the one running Dispatch: each is handed to
// the loop thread, which runs it and wakes the caller.
func BenchmarkEnableDisableCrossGoroutine(b *testing.B) {
	base, err := NewBase()
	if err != nil {
		b.Fatal(err)
	}
	l, err := NewBind(base, func(_ *Listener, fd int, _ net.Addr) { syscall.Close(fd) }, CloseOnFree, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	loop := startDispatch(b, base, atCleanup)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := l.Enable(); err != nil {
			b.Fatal(err)
		}
		if err := l.Disable(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	loop.stop()
}

// BenchmarkEnableDisableOnLoop measures the same pair called from inside a
// callback, where no hand-off is needed.
func BenchmarkEnableDisableOnLoop(b *testing.B) {
	base, err := NewBase()
	if err != nil {
		b.Fatal(err)
	}
	l, err := NewBind(base, nil, CloseOnFree|Disabled, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	startDispatch(b, base, atCleanup)
	b.ResetTimer()
	benchOnLoop(b, base, func(n int) error {
		for range n {
			if err := l.Enable(); err != nil {
				return err
			}
			if err := l.Disable(); err != nil {
				return err
			}
		}
		return nil
	})
}

// BenchmarkHandleLookup measures the registry lookup every trampoline does.
func BenchmarkHandleLookup(b *testing.B) {
	h := newHandle(&Listener{})
	defer deleteHandle(h)
	b.ReportAllocs()
	var l *Listener
	for i := 0; i < b.N; i++ {
		l = h.value().(*Listener)
	}
	_ = l
}

// BenchmarkConnSetup measures what a server does for each connection on top
// of accept(2): wrap the socket in an event or a buffer event, arm it, and
// free it again. No loop runs, so each call takes the base's lock.
func BenchmarkConnSetup(b *testing.B) {
	base := newBase(b)
	fds := socketpair(b)
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	b.Run("Event", func(b *testing.B) {
		cb := func(*Event, int, Events) {}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			ev, err := NewEvent(base, fds[0], EvRead|EvPersist, cb)
			if err != nil {
				b.Fatal(err)
			}
			ev.Add(time.Minute)
			ev.Close()
		}
	})
	b.Run("BufferEvent", func(b *testing.B) {
		read := func(*BufferEvent) {}
		event := func(*BufferEvent, BEVEvent, error) {}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			be, err := NewBufferEvent(base, fds[0], 0)
			if err != nil {
				b.Fatal(err)
			}
			be.SetCallbacks(read, nil, event)
			be.SetWatermark(EvWrite, 1<<19, 0)
			be.SetTimeouts(time.Minute, time.Minute)
			be.Enable(EvRead | EvWrite)
			be.Close()
		}
	})
}

// loopAndSocket returns a base whose loop runs until the benchmark ends,
// and one end of a socketpair for the benchmarks on the loop to use as a
// connection's socket.
func loopAndSocket(b *testing.B) (*Base, int) {
	base := newBase(b)
	startDispatch(b, base, atCleanup)
	fds := socketpair(b)
	b.Cleanup(func() {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
	})
	return base, fds[0]
}

// benchOnLoop runs f(b.N) once on base's loop, from inside a callback, and
// reports the allocations per op.
func benchOnLoop(b *testing.B, base *Base, f func(n int) error) {
	b.ReportAllocs()
	var err error
	if err := base.Do(func() { err = f(b.N) }); err != nil {
		b.Fatal(err)
	}
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkConnSetupOnLoop is BenchmarkConnSetup where a server does it: on
// the loop, inside a callback, against the same libevent calls made from C
// ("C": event_new, event_add with a timeout, event_free, one cgo call for
// all of them). The difference per op is what the binding adds to each
// connection, without the noise of the kernel's accept and loopback paths
// that a whole-server benchmark carries.
func BenchmarkConnSetupOnLoop(b *testing.B) {
	base, fd := loopAndSocket(b)
	b.Run("Event", func(b *testing.B) {
		cb := func(*Event, int, Events) {}
		benchOnLoop(b, base, func(n int) error {
			for range n {
				ev, err := NewEvent(base, fd, EvRead|EvPersist, cb)
				if err != nil {
					return err
				}
				if err := ev.Add(time.Minute); err != nil {
					return err
				}
				ev.Close()
			}
			return nil
		})
	})
	b.Run("C", func(b *testing.B) {
		benchOnLoop(b, base, func(n int) error { return ctest.ConnSetup(base.CPtr(), fd, n) })
	})
}
