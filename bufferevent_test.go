package evlistener

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestBufferEventEcho(t *testing.T) {
	for _, tc := range []struct {
		name string
		echo func(be *BufferEvent) error
	}{
		{"Input MoveTo Output", func(be *BufferEvent) error { _, err := be.Input().MoveTo(be.Output()); return err }},
		{"EchoInput", func(be *BufferEvent) error { _, err := be.EchoInput(); return err }},
		{"Read then Write", func(be *BufferEvent) error {
			var p [4096]byte
			for {
				n, err := be.Read(p[:])
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				if _, err := be.Write(p[:n]); err != nil {
					return err
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			b := newBase(t)
			be, peer := bevPair(t, b)
			var cbErr atomic.Value
			be.SetCallbacks(func(be *BufferEvent) {
				if err := tc.echo(be); err != nil {
					cbErr.Store(err)
				}
			}, nil, nil)
			if err := be.Enable(EvRead | EvWrite); err != nil {
				t.Fatal(err)
			}
			startDispatch(t, b, atCleanup)
			pingPong(t, peer, 100, 1000)
			pingPong(t, peer, 3, 300<<10)
			if err := cbErr.Load(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBufferEventBackPressure(t *testing.T) {
	t.Run("read callback at the limit applies back-pressure", func(t *testing.T) {
		checkNoLeaks(t)
		const limit = 256 << 10
		b := newBase(t)
		be, peer := bevPair(t, b)
		var (
			mu       sync.Mutex
			maxOut   int
			paused   = make(chan struct{}, 1)
			resumed  = make(chan struct{}, 1)
			cbErrors []error
		)
		notify := func(ch chan struct{}) {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		var onFull, onDrained DataFunc
		onFull = func(be *BufferEvent) {
			n, err := be.EchoInput()
			mu.Lock()
			maxOut = max(maxOut, n)
			if err != nil {
				cbErrors = append(cbErrors, err)
			}
			mu.Unlock()
			if n < limit {
				return
			}
			be.Disable(EvRead)
			be.SetCallbacks(onFull, onDrained, nil)
			notify(paused)
		}
		onDrained = func(be *BufferEvent) {
			be.Enable(EvRead)
			be.SetCallbacks(onFull, nil, nil)
			notify(resumed)
		}
		be.SetCallbacks(onFull, nil, nil)
		be.SetWatermark(EvWrite, limit/2, 0)
		be.Enable(EvRead | EvWrite)
		startDispatch(t, b, atCleanup)

		// Send 32 MiB without reading: the server must stop reading.
		const total = 32 << 20
		data := make([]byte, total)
		rand.Read(data)
		sent := make(chan error, 1)
		go func() { _, err := peer.Write(data); sent <- err }()
		recv(t, paused, "the read callback at the limit")
		if be.Enabled()&EvRead != 0 {
			t.Fatal("reading still enabled after the read callback disabled it")
		}
		// Now read everything back: the echo resumes and completes.
		got := make([]byte, total)
		peer.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(peer, got); err != nil {
			t.Fatal(err)
		}
		if err := recv(t, sent, "the writer"); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("echo differs from what was sent")
		}
		recv(t, resumed, "the write callback after the output drained")
		mu.Lock()
		defer mu.Unlock()
		// libevent reads at most 16 KiB (or 4 KiB) past the limit.
		if maxOut >= limit+64<<10 {
			t.Errorf("output grew to %d bytes, want < limit %d + 64 KiB", maxOut, limit)
		}
		if len(cbErrors) > 0 {
			t.Error(cbErrors)
		}
	})
}

func TestBufferEventEventCallback(t *testing.T) {
	type event struct {
		what BEVEvent
		err  error
	}
	setup := func(t *testing.T, configure func(be *BufferEvent)) (*net.TCPConn, <-chan event) {
		b := newBase(t)
		be, peer := bevPair(t, b)
		events := make(chan event, 10)
		be.SetCallbacks(nil, nil, func(be *BufferEvent, what BEVEvent, err error) {
			events <- event{what, err}
			be.Close() // closing inside the event callback
		})
		if configure != nil {
			configure(be)
		}
		be.Enable(EvRead | EvWrite)
		startDispatch(t, b, atCleanup)
		return peer, events
	}

	t.Run("EOF", func(t *testing.T) {
		checkNoLeaks(t)
		peer, events := setup(t, nil)
		peer.CloseWrite()
		e := recv(t, events, "the EOF event")
		if e.what != BEVEventReading|BEVEventEOF || e.err != nil {
			t.Fatalf("got %v, %v; want Reading|EOF, nil", e.what, e.err)
		}
		// Closed inside the callback with BEVOptCloseOnFree: the peer
		// sees the end of the stream.
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("peer read: %v, want EOF", err)
		}
	})

	t.Run("connection reset is an error with the errno", func(t *testing.T) {
		checkNoLeaks(t)
		peer, events := setup(t, nil)
		peer.SetLinger(0)
		peer.Close()
		e := recv(t, events, "the error event")
		if e.what != BEVEventReading|BEVEventError {
			t.Fatalf("got %v, want Reading|Error", e.what)
		}
		if !errors.Is(e.err, syscall.ECONNRESET) {
			t.Fatalf("err = %v, want ECONNRESET", e.err)
		}
	})

	t.Run("read timeout", func(t *testing.T) {
		checkNoLeaks(t)
		start := time.Now()
		_, events := setup(t, func(be *BufferEvent) {
			if err := be.SetTimeouts(50*time.Millisecond, 0); err != nil {
				t.Fatal(err)
			}
		})
		e := recv(t, events, "the timeout event")
		if e.what != BEVEventReading|BEVEventTimeout || e.err != nil {
			t.Fatalf("got %v, %v; want Reading|Timeout, nil", e.what, e.err)
		}
		// libevent's clock is CLOCK_MONOTONIC_COARSE: a tick early at most.
		if d := time.Since(start); d < 45*time.Millisecond {
			t.Fatalf("timeout after %v, want about 50ms", d)
		}
	})
}

func TestBufferEventReadWrite(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	be, peer := bevPair(t, b)
	got := make(chan string, 1)
	drained := make(chan int, 10)
	be.SetCallbacks(func(be *BufferEvent) {
		var p [64]byte
		n, _ := be.Read(p[:])
		_, err := be.Read(p[n:])
		if err != io.EOF {
			got <- "second Read did not return io.EOF"
			return
		}
		got <- string(p[:n])
	}, func(be *BufferEvent) {
		drained <- be.Output().Len()
	}, nil)
	be.Enable(EvRead | EvWrite)
	startDispatch(t, b, atCleanup)

	// Write from another goroutine while Dispatch runs.
	if n, err := be.Write([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	p := make([]byte, 5)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, p); err != nil || string(p) != "hello" {
		t.Fatalf("peer read %q, %v", p, err)
	}
	if n := recv(t, drained, "the write callback"); n != 0 {
		t.Fatalf("write callback with %d bytes pending, want 0", n)
	}
	peer.Write([]byte("world"))
	if s := recv(t, got, "the read callback"); s != "world" {
		t.Fatal(s)
	}
}

func TestBufferEventReadWatermark(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	be, peer := bevPair(t, b)
	lens := make(chan int, 10)
	be.SetCallbacks(func(be *BufferEvent) { lens <- be.Input().Len(); be.Input().Drain(1 << 20) }, nil, nil)
	if err := be.SetWatermark(EvRead, 10, 0); err != nil {
		t.Fatal(err)
	}
	be.Enable(EvRead)
	startDispatch(t, b, atCleanup)
	peer.Write([]byte("12345"))
	waitFor(t, "5 bytes in the input buffer", func() bool { return be.Input().Len() == 5 })
	peer.Write([]byte("67890"))
	if n := recv(t, lens, "the read callback"); n != 10 {
		t.Fatalf("read callback with %d bytes, want 10", n)
	}
	if len(lens) != 0 {
		t.Fatalf("read callback ran again below the low watermark")
	}
}

func TestBufferEventClose(t *testing.T) {
	t.Run("from another goroutine: no callback after Close returns", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		be, peer := bevPair(t, b)
		var closed, late atomic.Bool
		var reads atomic.Int64
		be.SetCallbacks(func(be *BufferEvent) {
			if closed.Load() {
				late.Store(true)
			}
			reads.Add(1)
			be.EchoInput()
		}, nil, nil)
		be.Enable(EvRead | EvWrite)
		startDispatch(t, b, atCleanup)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // keep the loop busy with this buffer event
			defer wg.Done()
			buf := make([]byte, 4096)
			go io.Copy(io.Discard, peer)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := peer.Write(buf); err != nil {
					return
				}
			}
		}()
		waitFor(t, "read callbacks", func() bool { return reads.Load() > 10 })
		if err := be.Close(); err != nil {
			t.Fatal(err)
		}
		closed.Store(true)
		if err := be.Close(); !errors.Is(err, ErrClosed) {
			t.Fatalf("second Close = %v, want ErrClosed", err)
		}
		// A callback after Close would run on the loop; a round trip
		// through the loop after Close makes it visible.
		if err := b.call(func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		close(stop)
		peer.Close()
		wg.Wait()
		if late.Load() {
			t.Fatal("read callback ran after Close returned")
		}
	})

	t.Run("inside the read callback", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		be, peer := bevPair(t, b)
		results := make(chan error, 2)
		be.SetCallbacks(func(be *BufferEvent) {
			results <- be.Close()
			results <- be.Close()
		}, nil, nil)
		be.Enable(EvRead)
		startDispatch(t, b, atCleanup)
		peer.Write([]byte("x"))
		if err := recv(t, results, "Close"); err != nil {
			t.Fatal(err)
		}
		if err := recv(t, results, "second Close"); !errors.Is(err, ErrClosed) {
			t.Fatalf("second Close = %v, want ErrClosed", err)
		}
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("peer read: %v, want EOF", err)
		}
	})

	t.Run("Base.Close closes open buffer events", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		be, peer := bevPair(t, b)
		be.Enable(EvRead)
		startDispatch(t, b, atCleanup).stop()
		if err := be.Close(); !errors.Is(err, ErrClosed) {
			t.Fatalf("Close after Base.Close = %v, want ErrClosed", err)
		}
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("peer read: %v, want EOF", err)
		}
	})

	t.Run("without CloseOnFree the socket stays open", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		fd, peer := tcpPair(t)
		defer syscall.Close(fd)
		be, err := NewBufferEvent(b, fd, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := be.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := syscall.Write(fd, []byte("still open")); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 10)
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(peer, p); err != nil || string(p) != "still open" {
			t.Fatalf("peer read %q, %v", p, err)
		}
	})
}

func TestBufferEventPanic(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	be, peer := bevPair(t, b)
	be.SetCallbacks(func(*BufferEvent) { panic("boom") }, nil, nil)
	be.Enable(EvRead)
	peer.Write([]byte("x"))
	p := startDispatch(t, b, whenIdle).waitPanic(t)
	cp, ok := p.(*CallbackPanic)
	if !ok || cp.Value != "boom" {
		t.Fatalf("Dispatch panicked with %#v, want *CallbackPanic{boom}", p)
	}
}

func TestBufferEventBadArguments(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	fd, _ := tcpPair(t)
	defer syscall.Close(fd)
	if _, err := NewBufferEvent(nil, fd, 0); err == nil {
		t.Error("nil base: no error")
	}
	if _, err := NewBufferEvent(b, -2, 0); !errors.Is(err, syscall.EBADF) {
		t.Errorf("fd -2: %v, want EBADF (-1 is an unconnected buffer event)", err)
	}
	if _, err := NewBufferEvent(b, fd, 0x100); err == nil {
		t.Error("unknown option: no error")
	}
	be, err := NewBufferEvent(b, fd, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if err := be.SetWatermark(EvRead, 10, 5); err == nil {
		t.Error("high below low: no error")
	}
	if err := be.Output().Drain(-1); err == nil {
		t.Error("Drain(-1): no error")
	}
	b2 := newBase(t)
	fd2, _ := tcpPair(t)
	be2 := newBEV(t, b2, fd2)
	if _, err := be.Input().MoveTo(be2.Output()); err == nil {
		t.Error("MoveTo across bases: no error")
	}
	if s := (BEVEventReading | BEVEventEOF | 0x1000).String(); s != "BEVEventReading|BEVEventEOF|0x1000" {
		t.Errorf("String = %q", s)
	}
}

// TestBufferEventCallbackAllocs proves that a read callback costs no
// allocation: the trampoline, the handle lookup, the closure call and an
// EchoInput from inside it.
func TestBufferEventCallbackAllocs(t *testing.T) {
	checkNoLeaks(t)
	if allocs := echoAllocs(echoPeer(t, echoingBEV)); allocs != 0 {
		t.Fatalf("%v allocations per echoed message, want 0", allocs)
	}
}

// BenchmarkBufferEventEcho measures one 64-byte ping-pong over loopback
// through a buffer event whose Go read callback moves the input to the
// output: one C→Go call and one Go→C call per message.
func BenchmarkBufferEventEcho(b *testing.B) {
	benchEcho(b, echoPeer(b, echoingBEV))
}

// echoingBEV is an echo server for echoPeer: fd becomes a buffer event whose
// read callback moves the input to the output.
func echoingBEV(tb testing.TB, b *Base, fd int) {
	tb.Helper()
	be := newBEV(tb, b, fd)
	be.SetCallbacks(func(be *BufferEvent) { be.EchoInput() }, nil, nil)
	be.Enable(EvRead | EvWrite)
}

// goToC reads how many calls from Go to C the process has made.
func goToC() uint64 {
	s := []metrics.Sample{{Name: "/cgo/go-to-c-calls:calls"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestCgoCallsPerMessage counts the calls from Go to C per echoed message
// on each echo path, besides the one C→Go callback per message: the echo
// step of a buffer event is one call, and an event's callback reads and
// writes with system calls, not cgo.
func TestCgoCallsPerMessage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t testing.TB, b *Base, fd int)
		max   float64
	}{
		{"BufferEvent read callback with EchoInput", echoingBEV, 1},
		{"Event callback with read and write", echoingEvent(time.Minute), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			peer := echoPeer(t, tc.setup)
			pingPong(t, peer, 10, 64) // warm up
			const n = 2000
			before := goToC()
			pingPong(t, peer, n, 64)
			per := float64(goToC()-before) / n
			t.Logf("%.3f calls from Go to C per message", per)
			if per > tc.max+0.02 {
				t.Errorf("%.3f calls from Go to C per message, want %v", per, tc.max)
			}
		})
	}
}

func TestBufferEventConnect(t *testing.T) {
	t.Run("connected", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		ln := listen(t)
		be, events := connectingBEV(t, b, 0)
		be.Enable(EvRead | EvWrite)
		startDispatch(t, b, atCleanup)
		if err := be.Connect("tcp", ln.Addr().String()); err != nil {
			t.Fatal(err)
		}
		if what := recv(t, events, "the event callback"); what != BEVEventConnected {
			t.Fatalf("event %v, want Connected", what)
		}
		be.Write([]byte("hello"))
		readAccepted(t, ln, "hello")
		fd := be.FD()
		if fd < 0 {
			t.Fatal("FD() = -1 on a connected buffer event")
		}
		be.Close() // the socket Connect made is the buffer event's
		if fdOpen(fd) {
			t.Fatal("Close left the socket Connect made open")
		}
	})
	t.Run("refused", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		addr := nowhere(t)
		be, _ := connectingBEV(t, b, 0)
		errs := make(chan error, 2)
		be.SetCallbacks(nil, nil, func(_ *BufferEvent, what BEVEvent, err error) {
			if what != BEVEventError {
				err = errors.New("event " + what.String() + ", want Error alone")
			}
			errs <- err
		})
		startDispatch(t, b, atCleanup)
		err := be.Connect("tcp", addr)
		if err == nil {
			err = recv(t, errs, "the event callback")
		}
		// As net.Dial says it: dial tcp 127.0.0.1:1: connect: connection refused.
		want := "dial tcp " + addr + ": connect: connection refused"
		if !errors.Is(err, syscall.ECONNREFUSED) || err.Error() != want {
			t.Fatalf("error %v, want %q wrapping ECONNREFUSED", err, want)
		}
	})
	t.Run("again while pending: EALREADY; once connected: EISCONN", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		ln := listen(t)
		be, events := connectingBEV(t, b, 0)
		// From inside a function on the loop: nothing of the connection
		// can have come in between.
		var first, pending error
		b.Do(func() {
			first = be.Connect("tcp", ln.Addr().String())
			pending = be.Connect("tcp", ln.Addr().String())
		})
		if first != nil || !errors.Is(pending, syscall.EALREADY) {
			t.Fatalf("Connect = %v, then %v; want nil, then EALREADY", first, pending)
		}
		startDispatch(t, b, atCleanup)
		if what := recv(t, events, "the event callback"); what != BEVEventConnected {
			t.Fatalf("event %v, want Connected", what)
		}
		var oe *net.OpError
		if err := be.Connect("tcp", ln.Addr().String()); !errors.Is(err, syscall.EISCONN) || !errors.As(err, &oe) || oe.Op != "dial" {
			t.Fatalf("Connect once connected = %v, want a dial error wrapping EISCONN", err)
		}
		b.Do(func() {})
		if len(events) != 0 {
			t.Fatalf("event %v after the second Connect, want none", <-events)
		}
	})
	t.Run("on a connected socket: the kernel's EISCONN, and no event", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		fd, _ := tcpPair(t)
		be := newBEV(t, b, fd)
		events := make(chan BEVEvent, 4)
		be.SetCallbacks(nil, nil, func(_ *BufferEvent, what BEVEvent, err error) { events <- what })
		startDispatch(t, b, atCleanup)
		if err := be.Connect("tcp", "127.0.0.1:1"); !errors.Is(err, syscall.EISCONN) {
			t.Fatalf("Connect on an accepted socket = %v, want EISCONN", err)
		}
		b.Do(func() {})
		if len(events) != 0 {
			t.Fatalf("event %v: Connect returned the failure, the callback must not report it too", <-events)
		}
		if !fdOpen(fd) || be.FD() != fd {
			t.Fatal("a failed Connect closed the socket it did not make")
		}
	})
	t.Run("bad input", func(t *testing.T) {
		b := newBase(t)
		be, err := NewBufferEvent(b, -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range [][2]string{{"udp", "127.0.0.1:1"}, {"tcp", "127.0.0.1:99999"}, {"tcp", "no port"}, {"tcp", ""}, {"tcp", "127.0.0.1"}} {
			var oe *net.OpError
			if err := be.Connect(tc[0], tc[1]); !errors.As(err, &oe) || oe.Op != "dial" {
				t.Errorf("Connect(%q, %q) = %v, want a *net.OpError from dial", tc[0], tc[1], err)
			}
		}
		be.Close()
		if err := be.Connect("tcp", "127.0.0.1:1"); !errors.Is(err, ErrClosed) {
			t.Errorf("Connect on a closed buffer event = %v, want ErrClosed", err)
		}
	})
}

// connectingBEV returns a buffer event on b with no socket, for Connect,
// closed when the test ends; the channel gets what its event callback is
// told.
func connectingBEV(t *testing.T, b *Base, options BEVOption) (*BufferEvent, <-chan BEVEvent) {
	t.Helper()
	be, err := NewBufferEvent(b, -1, options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	events := make(chan BEVEvent, 4)
	be.SetCallbacks(nil, nil, func(_ *BufferEvent, what BEVEvent, _ error) { events <- what })
	return be, events
}

// nowhere returns an address on loopback where nothing listens.
func nowhere(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	ln.Close()
	return ln.Addr().String()
}

// readAccepted accepts a connection on ln and checks that want arrives.
func readAccepted(t *testing.T, ln net.Listener, want string) {
	t.Helper()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([]byte, len(want))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("peer read %q, %v; want %q", got, err, want)
	}
}
