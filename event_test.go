package evlistener

import (
	"errors"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestEventTimer(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	type firing struct {
		fd   int
		what Events
		at   time.Time
	}
	fired := make(chan firing, 10)
	ev := newTimer(t, b, func(ev *Event, fd int, what Events) { fired <- firing{fd, what, time.Now()} })
	start := time.Now()
	if err := ev.Add(20 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if !ev.Pending(EvTimeout) {
		t.Fatal("timer not pending after Add")
	}
	// A one-shot timer is all that is pending: Dispatch returns after it.
	if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
		t.Fatal(err)
	}
	if len(fired) != 1 {
		t.Fatalf("timer fired %d times, want 1", len(fired))
	}
	f := <-fired
	if f.fd != -1 || f.what != EvTimeout {
		t.Fatalf("callback got fd %d, what %v; want -1, EvTimeout", f.fd, f.what)
	}
	if d := f.at.Sub(start); d < 15*time.Millisecond {
		t.Fatalf("fired after %v, want about 20ms", d)
	}
	if ev.Pending(EvTimeout) {
		t.Fatal("one-shot timer still pending after it fired")
	}
}

func TestEventPersistentRead(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	fd, peer := tcpPair(t)
	defer syscall.Close(fd)
	var cbErr atomic.Value
	newEvent(t, b, fd, EvRead|EvPersist, func(ev *Event, fd int, what Events) {
		var buf [4096]byte
		n, err := syscall.Read(fd, buf[:])
		if err == nil && n > 0 {
			_, err = syscall.Write(fd, buf[:n])
		}
		if err != nil {
			cbErr.Store(err)
		}
	}).Add(0)
	startDispatch(t, b, atCleanup)
	pingPong(t, peer, 200, 100)
	if err := cbErr.Load(); err != nil {
		t.Fatal(err)
	}
}

func TestEventAddDelActive(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	fd, peer := tcpPair(t)
	defer syscall.Close(fd)
	whats := make(chan Events, 10)
	ev := newEvent(t, b, fd, EvRead|EvPersist, func(ev *Event, fd int, what Events) {
		whats <- what
		if what&EvRead != 0 {
			var buf [16]byte
			syscall.Read(fd, buf[:])
		}
	})
	startDispatch(t, b, atCleanup)

	t.Run("timeout on a read event", func(t *testing.T) {
		if err := ev.Add(30 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if w := recv(t, whats, "the timeout"); w != EvTimeout {
			t.Fatalf("what = %v, want EvTimeout", w)
		}
	})
	t.Run("Del stops it", func(t *testing.T) {
		if err := ev.Del(); err != nil {
			t.Fatal(err)
		}
		// The persistent timeout repeats every 30 ms until Del: what a
		// slow machine let fire before Del returned does not count.
		for len(whats) > 0 {
			<-whats
		}
		if ev.Pending(EvRead | EvTimeout) {
			t.Fatal("pending after Del")
		}
		peer.Write([]byte("x"))
		waitFor(t, "the byte to arrive", func() bool {
			var buf [1]byte
			n, _, _ := syscall.Recvfrom(fd, buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return n == 1
		})
		// The byte waits: a round trip through the loop shows that no
		// callback ran.
		b.call(func() error { return nil })
		if len(whats) != 0 {
			t.Fatalf("callback ran after Del: %v", <-whats)
		}
	})
	t.Run("Add resumes it", func(t *testing.T) {
		if err := ev.Add(0); err != nil {
			t.Fatal(err)
		}
		if w := recv(t, whats, "the read"); w != EvRead {
			t.Fatalf("what = %v, want EvRead", w)
		}
	})
	t.Run("Active from another goroutine", func(t *testing.T) {
		if err := ev.Active(EvWrite); err != nil {
			t.Fatal(err)
		}
		if w := recv(t, whats, "the activation"); w != EvWrite {
			t.Fatalf("what = %v, want EvWrite", w)
		}
	})
}

func TestEventClose(t *testing.T) {
	t.Run("inside its own callback", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		results := make(chan error, 2)
		ev, err := NewEvent(b, -1, EvPersist, func(ev *Event, _ int, _ Events) {
			results <- ev.Close()
			results <- ev.Close()
		})
		if err != nil {
			t.Fatal(err)
		}
		ev.Add(time.Millisecond)
		// Closed inside the callback, the persistent timer leaves nothing
		// pending and Dispatch returns.
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if err := <-results; err != nil {
			t.Fatal(err)
		}
		if err := <-results; !errors.Is(err, ErrClosed) {
			t.Fatalf("second Close = %v, want ErrClosed", err)
		}
		if len(results) != 0 {
			t.Fatal("callback ran after Close")
		}
	})

	t.Run("from another goroutine: no callback after Close returns", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		var closed, late atomic.Bool
		var fired atomic.Int64
		ev, err := NewEvent(b, -1, EvPersist, func(ev *Event, _ int, _ Events) {
			if closed.Load() {
				late.Store(true)
			}
			fired.Add(1)
		})
		if err != nil {
			t.Fatal(err)
		}
		ev.Add(time.Microsecond) // fires on every turn of the loop
		startDispatch(t, b, atCleanup)
		waitFor(t, "the timer to fire", func() bool { return fired.Load() > 10 })
		if err := ev.Close(); err != nil {
			t.Fatal(err)
		}
		closed.Store(true)
		b.call(func() error { return nil })
		if late.Load() {
			t.Fatal("callback ran after Close returned")
		}
		if err := ev.Close(); !errors.Is(err, ErrClosed) {
			t.Fatalf("second Close = %v, want ErrClosed", err)
		}
	})

	t.Run("Base.Close closes open events", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		ev, err := NewTimer(b, func(*Event, int, Events) {})
		if err != nil {
			t.Fatal(err)
		}
		ev.Add(time.Hour)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := ev.Close(); !errors.Is(err, ErrClosed) {
			t.Fatalf("Close after Base.Close = %v, want ErrClosed", err)
		}
	})
}

func TestEventPanic(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	ev := newTimer(t, b, func(*Event, int, Events) { panic(errors.New("boom")) })
	ev.Add(time.Millisecond)
	p := startDispatch(t, b, whenIdle).waitPanic(t)
	cp, ok := p.(*CallbackPanic)
	if !ok || cp.Unwrap() == nil || cp.Unwrap().Error() != "boom" {
		t.Fatalf("Dispatch panicked with %#v, want *CallbackPanic{boom}", p)
	}
}

func TestEventBadArguments(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	cb := func(*Event, int, Events) {}
	for _, tc := range []struct {
		name string
		fn   func() (*Event, error)
	}{
		{"nil base", func() (*Event, error) { return NewEvent(nil, -1, 0, cb) }},
		{"nil callback", func() (*Event, error) { return NewEvent(b, -1, 0, nil) }},
		{"signal", func() (*Event, error) { return NewEvent(b, 2, 0x08, cb) }},
		{"read without fd", func() (*Event, error) { return NewEvent(b, -1, EvRead, cb) }},
	} {
		if ev, err := tc.fn(); err == nil {
			ev.Close()
			t.Errorf("%s: no error", tc.name)
		}
	}
	if s := (EvRead | EvPersist | 0x08).String(); s != "EvRead|EvPersist|0x8" {
		t.Errorf("String = %q", s)
	}
}

// TestEventCallbackAllocs proves that an event callback costs no
// allocation: trampoline, handle lookup and closure call.
func TestEventCallbackAllocs(t *testing.T) {
	checkNoLeaks(t)
	if allocs := echoAllocs(echoPeer(t, echoingEvent(0))); allocs != 0 {
		t.Fatalf("%v allocations per message, want 0", allocs)
	}
}

// BenchmarkEventEcho measures one 64-byte ping-pong over loopback through
// an event whose Go callback reads and writes back: one C→Go call per
// message.
func BenchmarkEventEcho(b *testing.B) {
	benchEcho(b, echoPeer(b, echoingEvent(0)))
}

// echoingEvent is an echo server for echoPeer: fd, which it closes when
// the test ends, becomes a persistent read event with timeout whose
// callback reads and writes back.
func echoingEvent(timeout time.Duration) func(testing.TB, *Base, int) {
	return func(tb testing.TB, b *Base, fd int) {
		tb.Helper()
		tb.Cleanup(func() { syscall.Close(fd) }) // after the event's Close
		newEvent(tb, b, fd, EvRead|EvPersist, readWriteEcho(make([]byte, 4096))).Add(timeout)
	}
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
