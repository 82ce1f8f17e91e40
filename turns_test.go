package evlistener

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// fromC reports whether the caller runs in a call from C into Go.
func fromC() bool {
	pc := make([]uintptr, 64)
	frames := runtime.CallersFrames(pc[:runtime.Callers(2, pc)])
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "runtime.cgocallback") {
			return true
		}
		if !more {
			return false
		}
	}
}

// TestConnEventsRunAfterTurn: the callbacks of events made by AcceptEvents
// run from Go after the loop's turn, not as calls from C into Go; the
// accept callback still comes from C (which shows that fromC sees a C→Go
// call), with busy polling and without.
func TestConnEventsRunAfterTurn(t *testing.T) {
	forEachBaseKind(t, func(t *testing.T, bk baseKind) {
		checkNoLeaks(t)
		b := newBaseKind(t, bk)
		l := listenTCP(t, b, nil, 0)
		var accepts, acceptsFromC, events, eventsFromC atomic.Int64
		echo := echoEvent(make([]byte, 64))
		err := l.AcceptEvents(EventOptions{
			OnAccept: func(*Listener, *Event) {
				accepts.Add(1)
				if fromC() {
					acceptsFromC.Add(1)
				}
			},
			OnEvent: func(ev *Event, fd int, what Events) {
				events.Add(1)
				if fromC() {
					eventsFromC.Add(1)
				}
				echo(ev, fd, what)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		startDispatch(t, b, atCleanup)
		c := newRawClient(l.Addr())
		c.cycles(t, 5)
		waitFor(t, "the connections to close", func() bool { return openConns(t, b) == 0 })
		if accepts.Load() != 5 || acceptsFromC.Load() != 5 {
			t.Errorf("%d accept callbacks, %d of them from C; want 5, 5", accepts.Load(), acceptsFromC.Load())
		}
		if events.Load() < 10 || eventsFromC.Load() != 0 {
			t.Errorf("%d event callbacks, %d of them from C; want at least 10 (a byte and an end of stream each), none from C", events.Load(), eventsFromC.Load())
		}
	})
}

// TestConnEventsSameTurn: connection events that fire in the same turn
// run one after the other, and a callback that closes another connection
// whose event fired in that turn, or deletes its event, keeps its callback
// from running, as libevent's event_del cancels an active event; when
// the first callback stops the loop (a panic, LoopBreak), the next
// Dispatch runs the others. The events are edge-triggered, so that an
// event not run is not reported again: only the hand-back runs it.
func TestConnEventsSameTurn(t *testing.T) {
	for _, stop := range []string{"close another", "Del another", "panic", "LoopBreak"} {
		t.Run(stop, func(t *testing.T) {
			checkNoLeaks(t)
			b := newBase(t)
			l := listenTCP(t, b, nil, 0)
			accepted := make(chan *Event, 2)
			var conns [2]*Event
			var ran [2]atomic.Int64
			first := true
			buf := make([]byte, 64)
			err := l.AcceptEvents(EventOptions{
				What:     EvRead | EvPersist | EvET,
				OnAccept: func(_ *Listener, ev *Event) { accepted <- ev },
				OnEvent: func(ev *Event, fd int, _ Events) {
					i := 0
					if ev != conns[0] {
						i = 1
					}
					ran[i].Add(1)
					for {
						if n, _ := syscall.Read(fd, buf); n <= 0 {
							break
						}
					}
					if !first {
						return
					}
					first = false
					switch stop {
					case "close another":
						conns[1-i].Close()
					case "Del another":
						conns[1-i].Del()
					case "panic":
						panic("first")
					case "LoopBreak":
						b.LoopBreak()
					}
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			r := startDispatch(t, b, atCleanup)
			var clients [2]net.Conn
			for i := range clients {
				clients[i] = dial(t, l.Addr())
				conns[i] = recv(t, accepted, "the accept callback")
			}
			writeInOneTurn(t, b, clients[:])
			if stop == "close another" || stop == "Del another" {
				waitFor(t, "a callback", func() bool { return ran[0].Load()+ran[1].Load() > 0 })
				if err := b.Do(func() {}); err != nil { // after the turn's callbacks
					t.Fatal(err)
				}
				if got := ran[0].Load() + ran[1].Load(); got != 1 {
					t.Errorf("%d callbacks ran, want 1: the other connection's ran after %s", got, stop)
				}
				return
			}
			if stop == "panic" {
				if p, ok := r.waitPanic(t).(*CallbackPanic); !ok || p.Value != "first" {
					t.Fatalf("Dispatch panicked with %v, want the callback's panic", p)
				}
			} else if err := r.wait(t); err != nil {
				t.Fatal(err)
			}
			if got := ran[0].Load() + ran[1].Load(); got != 1 {
				t.Fatalf("%d callbacks ran before the loop stopped, want 1", got)
			}
			startDispatch(t, b, atCleanup)
			waitFor(t, "the other connection's callback, in the next Dispatch", func() bool {
				return ran[0].Load() == 1 && ran[1].Load() == 1
			})
		})
	}
}

// TestConnEventsStale: a noted event whose slot has had another connection
// since (its generation moved on) is skipped.
func TestConnEventsStale(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	l := listenTCP(t, b, nil, 0)
	accepted := make(chan *Event, 1)
	var ran atomic.Int64
	err := l.AcceptEvents(EventOptions{
		OnAccept: func(_ *Listener, ev *Event) { accepted <- ev },
		OnEvent:  func(*Event, int, Events) { ran.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	startDispatch(t, b, atCleanup)
	dial(t, l.Addr())
	ev := recv(t, accepted, "the accept callback")
	if err := b.Do(func() {
		bt := b.batch // made by Dispatch
		slot := (*cConnEv)(ev.cptr)
		fired := unsafe.Slice(bt.e, 2) // room for 64
		fired[0] = cFired{slot: slot, gen: slot.gen - 1, what: cShort(EvRead)}
		fired[1] = cFired{slot: slot, gen: slot.gen, what: cShort(EvRead)}
		bt.n = 2
		b.runFired(bt)
	}); err != nil {
		t.Fatal(err)
	}
	if got := ran.Load(); got != 1 {
		t.Errorf("%d callbacks ran, want 1: the stale entry's ran", got)
	}
}

// TestConnEventsManyInOneTurn: a turn that reports more connections than
// the batch first holds runs them all from Go: the batch grows rather than
// cut the turn short (which would make libevent report every socket still
// readable again) or fall back to calls from C.
func TestConnEventsManyInOneTurn(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	l := listenTCP(t, b, nil, 0)
	const n = 150 // the batch starts with room for 64
	accepted := make(chan *Event, n)
	var ran, fromCgo atomic.Int64
	buf := make([]byte, 64)
	err := l.AcceptEvents(EventOptions{
		OnAccept: func(_ *Listener, ev *Event) { accepted <- ev },
		OnEvent: func(_ *Event, fd int, _ Events) {
			ran.Add(1)
			if fromC() {
				fromCgo.Add(1)
			}
			syscall.Read(fd, buf)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	startDispatch(t, b, atCleanup)
	clients := make([]net.Conn, n)
	for i := range clients {
		clients[i] = dial(t, l.Addr())
		recv(t, accepted, "the accept callback")
	}
	// libevent's epoll asks for 32 events at first and doubles that
	// after each turn that filled it: the later rounds get all n in one
	// turn.
	for round := 1; round <= 3; round++ {
		writeInOneTurn(t, b, clients)
		waitFor(t, "every connection's callback", func() bool { return ran.Load() >= int64(round*n) })
	}
	if got := fromCgo.Load(); got != 0 {
		t.Errorf("%d of %d callbacks came from C, want none", got, ran.Load())
	}
}

// TestConnEventsCloseAtTurn: an event's Close from a batch's callback
// closes the socket as the next turn starts (Base.closeAtTurn), or at
// once when the batch's room for closes is full: a callback that closes
// 101 connections closes them all. When the callback also stops the loop,
// the socket is closed by the time Dispatch returns.
func TestConnEventsCloseAtTurn(t *testing.T) {
	closing := func(stop func(b *Base)) func(b *Base) EventOptions {
		return func(b *Base) EventOptions {
			buf := make([]byte, 64)
			return EventOptions{OnEvent: func(ev *Event, fd int, _ Events) {
				syscall.Read(fd, buf) // unread, close would send a reset
				ev.Close()
				if stop != nil {
					stop(b)
				}
			}}
		}
	}
	t.Run("more than a turn's room", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		l := listenTCP(t, b, nil, 0)
		const n = 100 // room for 64 closes a turn
		accepted := make(chan *Event, n+1)
		var all []*Event
		buf := make([]byte, 64)
		err := l.AcceptEvents(EventOptions{
			OnAccept: func(_ *Listener, ev *Event) { accepted <- ev },
			// The one client that writes closes every connection.
			OnEvent: func(ev *Event, fd int, _ Events) {
				syscall.Read(fd, buf) // unread, close would send a reset
				for _, e := range all {
					e.Close()
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		startDispatch(t, b, atCleanup)
		clients := make([]net.Conn, n+1)
		for i := range clients {
			clients[i] = dial(t, l.Addr())
			all = append(all, recv(t, accepted, "the accept callback"))
		}
		if _, err := clients[n].Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		for _, c := range clients {
			readEOF(t, c)
		}
		waitFor(t, "the connections to close", func() bool { return openConns(t, b) == 0 })
	})
	for _, stop := range []string{"LoopBreak", "panic"} {
		t.Run("then "+stop, func(t *testing.T) {
			checkNoLeaks(t)
			b := newBase(t)
			l := listenTCP(t, b, nil, 0)
			opts := closing(func(b *Base) {
				if stop == "panic" {
					panic("stop")
				}
				b.LoopBreak()
			})(b)
			if err := l.AcceptEvents(opts); err != nil {
				t.Fatal(err)
			}
			r := startDispatch(t, b, atCleanup)
			c := dial(t, l.Addr())
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if stop == "panic" {
				if p := r.waitPanic(t); p == nil {
					t.Fatal("Dispatch returned without the callback's panic")
				}
			} else if err := r.wait(t); err != nil {
				t.Fatal(err)
			}
			readEOF(t, c) // with no loop running
		})
	}
}

// writeInOneTurn writes a byte from each client while b's loop waits
// inside a callback: their sockets all become readable before the loop's
// next turn, which reports them together.
func writeInOneTurn(t *testing.T, b *Base, clients []net.Conn) {
	t.Helper()
	release := make(chan struct{})
	if err := b.Post(func() { <-release }); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
}

// TestConnEventsOverload: thousands of goroutines, each a client that
// sends three requests and waits for each echo, all at once against one
// loop: many connections' events fire in each turn, and every echo still
// arrives once and every connection closes.
func TestConnEventsOverload(t *testing.T) {
	checkNoLeaks(t)
	clients := 2000
	if testing.Short() {
		clients = 500
	}
	b := newBase(t)
	l := listenTCP(t, b, nil, 0)
	// Edge-triggered: a noted event that did not run would not be
	// reported again, and its client would wait for ever.
	opts := EventOptions{What: EvRead | EvPersist | EvET, OnEvent: echoEvent(make([]byte, 4096))}
	if err := l.AcceptEvents(opts); err != nil {
		t.Fatal(err)
	}
	startDispatch(t, b, atCleanup)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- overloadClient(l.Addr(), byte(i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every connection to close", func() bool { return openConns(t, b) == 0 })
}

// overloadClient sends three bytes, one at a time, reads each echo, and
// closes.
func overloadClient(addr net.Addr, x byte) error {
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var buf [1]byte
	for i := range 3 {
		if _, err := c.Write([]byte{x + byte(i)}); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			return fmt.Errorf("echo %d: %w", i, err)
		}
		if buf[0] != x+byte(i) {
			return fmt.Errorf("echo %d: got %q, want %q", i, buf[0], x+byte(i))
		}
	}
	return nil
}

// TestDispatchKeepsItsThread: the loop goroutine stays on one thread
// through its passes through the Go scheduler (yieldIfDueAt), with other
// goroutines busy on the other Ps, which would take it up on their threads
// were it free to move: callbacks run between turns see one thread, as C
// code sharing the base expects (TestCEventsOnGoBase).
func TestDispatchKeepsItsThread(t *testing.T) {
	checkNoLeaks(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	b := newBase(t)
	l := listenTCP(t, b, nil, 0)
	var stop atomic.Bool
	var busy sync.WaitGroup
	for range 3 {
		busy.Add(1)
		go func() {
			defer busy.Done()
			for !stop.Load() {
				runtime.Gosched()
			}
		}()
	}
	defer busy.Wait()
	defer stop.Store(true)

	// The callbacks run from the batch, between turns, for at least five
	// passes through the scheduler.
	var first, moved, ran atomic.Int64
	start := time.Now()
	echo := echoEvent(make([]byte, 64))
	err := l.AcceptEvents(EventOptions{OnEvent: func(ev *Event, fd int, what Events) {
		ran.Add(1)
		tid := int64(syscall.Gettid())
		if !first.CompareAndSwap(0, tid) && tid != first.Load() {
			moved.Add(1)
		}
		echo(ev, fd, what)
		if time.Since(start) > 5*yieldEvery {
			b.LoopBreak()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int)
	go func() {
		c := newRawClient(l.Addr())
		for !stop.Load() {
			if c.cycle() != nil {
				break
			}
		}
		close(done)
	}()
	err = b.Dispatch()
	stop.Store(true)
	b.Close() // the client may wait for an echo
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if moved.Load() != 0 {
		t.Errorf("%d of %d callbacks ran on another thread than the loop's first", moved.Load(), ran.Load())
	}
}
