package evlistener

import (
	"errors"
	"io"
	"net"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/evlistener/evlistener/internal/ctest"
)

// connKind is one way of accepting with the connection's object made in C;
// the tests run on both.
type connKind struct {
	name string
	// perMessage is the calls from Go to C its echo makes per message
	// (TestCgoCallsPerMessage).
	perMessage float64
	// perTurn is the calls from Go to C per turn of the loop in which the
	// connection's callbacks run: an event's run after the turn, which is
	// one Go→C call instead of a C→Go call each (turns.go).
	perTurn float64
	// closeCalls is the calls from Go to C of Close from the connection's
	// own callback: none for an event, closed by the call that starts the
	// next turn (Base.closeAtTurn).
	closeCalls float64
	// accept sets l to accept into this kind's object, whose callbacks
	// echo and close at end of stream. onAccept, if not nil, runs in the
	// accept callback with the object (an *Event or a *BufferEvent).
	accept func(t testing.TB, l *Listener, onAccept func(obj connObject)) error
}

// connObject is what both kinds of a connection's object have.
type connObject interface {
	FD() int
	Close() error
	RemoteAddr() net.Addr
	CPtr() unsafe.Pointer
}

var connKinds = []connKind{
	{"Event", 0, 1, 0, func(t testing.TB, l *Listener, onAccept func(connObject)) error {
		opts := EventOptions{OnEvent: echoEvent(make([]byte, 4096))}
		if onAccept != nil {
			opts.OnAccept = func(_ *Listener, ev *Event) { onAccept(ev) }
		}
		return l.AcceptEvents(opts)
	}},
	{"BufferEvent", 1, 0, 1, func(t testing.TB, l *Listener, onAccept func(connObject)) error {
		opts := BufferEventOptions{
			OnRead:  func(be *BufferEvent) { be.EchoInput() },
			OnEvent: func(be *BufferEvent, _ BEVEvent, _ error) { be.Close() },
		}
		if onAccept != nil {
			opts.OnAccept = func(_ *Listener, be *BufferEvent) { onAccept(be) }
		}
		return l.AcceptBufferEvents(opts)
	}},
}

func forEachConnKind(t *testing.T, test func(t *testing.T, k connKind)) {
	for _, k := range connKinds {
		t.Run(k.name, func(t *testing.T) { test(t, k) })
	}
}

// echoEvent is a connection event's callback: echo what arrived, close at
// end of stream, on an error or a timeout. buf is made outside it:
// syscall.Read leaks its argument under -race.
func echoEvent(buf []byte) EventFunc {
	return func(ev *Event, fd int, what Events) {
		if what&EvTimeout != 0 {
			ev.Close()
			return
		}
		n, err := syscall.Read(fd, buf)
		if n <= 0 {
			if err != syscall.EAGAIN {
				ev.Close()
			}
			return
		}
		syscall.Write(fd, buf[:n])
	}
}

// rawClient is a loopback TCP client on raw system calls, so that a cycle
// of connect, echo and close allocates nothing in the test process either.
type rawClient struct {
	sa  syscall.SockaddrInet4
	buf [1]byte
}

func newRawClient(addr net.Addr) *rawClient {
	ta := addr.(*net.TCPAddr)
	c := &rawClient{}
	c.sa.Port = ta.Port
	copy(c.sa.Addr[:], ta.IP.To4())
	return c
}

// socket opens the client's socket, blocking, with a 5 s receive timeout.
func (c *rawClient) socket() (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	tv := syscall.Timeval{Sec: 5}
	syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	return fd, nil
}

// read is syscall.Read, again after EINTR (the runtime's preemption
// signals interrupt a blocking read).
func read(fd int, p []byte) (int, error) {
	for {
		n, err := syscall.Read(fd, p)
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// echo connects fd, sends one byte, reads its echo, and closes fd.
func (c *rawClient) echo(fd int) error {
	defer syscall.Close(fd)
	if err := syscall.Connect(fd, &c.sa); err != nil {
		return err
	}
	c.buf[0] = 'x'
	if _, err := syscall.Write(fd, c.buf[:]); err != nil {
		return err
	}
	if n, err := read(fd, c.buf[:]); n != 1 {
		return errors.Join(errors.New("no echo"), err)
	}
	return nil
}

// cycle is one accept → first message → close from the client's side.
func (c *rawClient) cycle() error {
	fd, err := c.socket()
	if err != nil {
		return err
	}
	return c.echo(fd)
}

// cycles runs n cycles, failing the test on the first error.
func (c *rawClient) cycles(t testing.TB, n int) {
	t.Helper()
	for range n {
		if err := c.cycle(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAcceptConn serves clients through a listener that makes each
// connection's object in C: each is accepted once, echoed, and closed with
// its socket by the object's Close; the peer address is there when asked.
func TestAcceptConn(t *testing.T) {
	forEachConnKind(t, func(t *testing.T, k connKind) {
		forEachBaseKind(t, func(t *testing.T, bk baseKind) {
			checkNoLeaks(t)
			b := newBaseKind(t, bk)
			l := listenTCP(t, b, nil, 0)
			accepted := make(chan connObject, 10)
			if err := k.accept(t, l, func(o connObject) { accepted <- o }); err != nil {
				t.Fatal(err)
			}
			startDispatch(t, b, atCleanup)
			for i := range 3 {
				c := dial(t, l.Addr())
				o := recv(t, accepted, "the accept callback")
				if got, want := o.RemoteAddr().String(), c.LocalAddr().String(); got != want {
					t.Errorf("connection %d: RemoteAddr = %s, want %s", i, got, want)
				}
				if o.CPtr() == nil || o.FD() < 0 {
					t.Errorf("connection %d: CPtr %v, FD %d", i, o.CPtr(), o.FD())
				}
				pingPong(t, c, 5, 100)
				fd := o.FD()
				c.(*net.TCPConn).CloseWrite()
				readEOF(t, c)
				waitFor(t, "the connection to close", func() bool { return o.FD() == -1 })
				if o.RemoteAddr() != nil || o.CPtr() != nil {
					t.Errorf("connection %d: RemoteAddr %v, CPtr %v after Close", i, o.RemoteAddr(), o.CPtr())
				}
				if err := o.Close(); !errors.Is(err, ErrClosed) {
					t.Errorf("second Close = %v, want ErrClosed", err)
				}
				_ = fd
			}
			if n := openConns(t, b); n != 0 {
				t.Errorf("%d connections open, want 0", n)
			}
		})
	})
}

// openConns counts the connections open in b's table.
func openConns(t testing.TB, b *Base) (n int) {
	t.Helper()
	if err := b.Do(func() {
		if b.conns != nil {
			n = b.conns.open
		}
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAcceptConnAllocs proves that a connection costs no allocation once
// the descriptor numbers in use have been seen: accept, the object made in
// C, the accept callback, the first message and Close. The client is on
// raw system calls, so every allocation counted is the server's.
func TestAcceptConnAllocs(t *testing.T) {
	forEachConnKind(t, func(t *testing.T, k connKind) {
		checkNoLeaks(t)
		b := newBase(t)
		l := listenTCP(t, b, nil, 0)
		if err := k.accept(t, l, func(connObject) {}); err != nil {
			t.Fatal(err)
		}
		startDispatch(t, b, atCleanup)
		c := newRawClient(l.Addr())
		c.cycles(t, 200) // the numbers in use, and the runtime's own warm-up
		var err error
		allocs := testing.AllocsPerRun(2000, func() {
			if e := c.cycle(); e != nil && err == nil {
				err = e
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if allocs != 0 {
			t.Fatalf("%v allocations per connection, want 0", allocs)
		}
	})
}

// TestCgoCallsPerConnection counts the calls between Go and C for each
// connection, accept → first message → close: one C→Go call to accept (the
// accept callback runs once per connection), one per readable socket (the
// byte, then the end of stream: a C→Go call for a buffer event, a turn of
// the loop for an event), and one Go→C call, the Close that frees the
// object and closes the socket together, besides the echo's own per
// message.
func TestCgoCallsPerConnection(t *testing.T) {
	forEachConnKind(t, func(t *testing.T, k connKind) {
		checkNoLeaks(t)
		b := newBase(t)
		l := listenTCP(t, b, nil, 0)
		var accepts atomic.Int64
		if err := k.accept(t, l, func(connObject) { accepts.Add(1) }); err != nil {
			t.Fatal(err)
		}
		startDispatch(t, b, atCleanup)
		c := newRawClient(l.Addr())
		c.cycles(t, 20)
		const n = 1000
		waitFor(t, "the warm-up connections to close", func() bool { return openConns(t, b) == 0 })
		accepts.Store(0)
		before := goToC()
		c.cycles(t, n)
		// The server closes as it sees each end of stream; the last
		// may still be on its way.
		waitFor(t, "the connections to close", func() bool { return openConns(t, b) == 0 })
		// openConns ran one call on the loop from here: no cgo call.
		per := float64(goToC()-before) / n
		t.Logf("%.3f calls from Go to C per connection", per)
		if want := k.closeCalls + k.perMessage + 2*k.perTurn; per > want+0.01 {
			t.Errorf("%.3f calls from Go to C per connection, want %v (Close's %v, the echo's %v, and %v per turn for the byte and the end of stream)", per, want, k.closeCalls, k.perMessage, k.perTurn)
		}
		if got := accepts.Load(); got != n {
			t.Errorf("accept callback ran %d times for %d connections", got, n)
		}
	})
}

// TestAcceptConnFDReuse: a connection's slot, reused by the next accept that
// gets the same descriptor number, serves the new connection only: the
// event fires with the new listener's callback, and a buffer event's
// callbacks that the last connection set are gone. Listeners of both kinds
// share the base's table, so a number serves both kinds in turn.
func TestAcceptConnFDReuse(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	type conn struct {
		who string
		obj connObject
		fd  int
	}
	accepted := make(chan conn, 1)
	fired := make(chan string, 100)
	var buf [64]byte
	evOn := func(who string) EventOptions {
		return EventOptions{
			OnAccept: func(_ *Listener, ev *Event) { accepted <- conn{who, ev, ev.FD()} },
			OnEvent: func(ev *Event, fd int, _ Events) {
				if n, _ := syscall.Read(fd, buf[:]); n <= 0 {
					ev.Close()
					return
				}
				fired <- who
			},
		}
	}
	// "bev A" sets its connections' own callbacks as it accepts them;
	// "bev B" keeps the listener's, and must never get A's.
	bevOn := func(who string) BufferEventOptions {
		o := BufferEventOptions{
			OnAccept: func(_ *Listener, be *BufferEvent) { accepted <- conn{who, be, be.FD()} },
			OnRead:   func(be *BufferEvent) { fired <- who; be.Input().Drain(be.Input().Len()) },
			OnEvent:  func(be *BufferEvent, _ BEVEvent, _ error) { be.Close() },
		}
		if who == "bev A" {
			o.OnAccept = func(_ *Listener, be *BufferEvent) {
				accepted <- conn{who, be, be.FD()}
				be.SetCallbacks(func(be *BufferEvent) {
					fired <- who + " own"
					be.Input().Drain(be.Input().Len())
				}, nil, func(be *BufferEvent, _ BEVEvent, _ error) { be.Close() })
			}
			o.OnRead = func(*BufferEvent) { fired <- who + " not own" }
		}
		return o
	}
	var ls [4]*Listener
	names := [4]string{"event A", "event B", "bev A", "bev B"}
	for i := range ls {
		ls[i] = listenTCP(t, b, nil, 0)
		var err error
		if i < 2 {
			err = ls[i].AcceptEvents(evOn(names[i]))
		} else {
			err = ls[i].AcceptBufferEvents(bevOn(names[i]))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	startDispatch(t, b, atCleanup)
	// Each client's socket is made before the connection before it
	// closes, so that the next accept takes the number that close freed.
	client, err := newRawClient(ls[0].Addr()).socket()
	if err != nil {
		t.Fatal(err)
	}
	var last conn
	same := 0
	for i := range 40 {
		// In turn: the same kind from another listener, and the other
		// kind on a number the first kind used.
		l := ls[[]int{0, 1, 0, 2, 3, 2, 1, 3}[i%8]]
		if err := syscall.Connect(client, &newRawClient(l.Addr()).sa); err != nil {
			t.Fatal(err)
		}
		c := recv(t, accepted, "the accept callback")
		if c.fd == last.fd && c.who[:3] == last.who[:3] {
			same++
			if c.obj != last.obj {
				t.Errorf("connection %d (%s) on the number of %s has a new object", i, c.who, last.who)
			}
		}
		if _, err := syscall.Write(client, []byte("x")); err != nil {
			t.Fatal(err)
		}
		want := c.who
		if want == "bev A" {
			want += " own"
		}
		if got := recv(t, fired, "the callback"); got != want {
			t.Fatalf("connection %d: callback of %q, want %q", i, got, want)
		}
		next, err := newRawClient(l.Addr()).socket()
		if err != nil {
			t.Fatal(err)
		}
		syscall.Close(client)
		client = next
		// On the loop: c.obj may already serve the next connection.
		waitFor(t, "the connection to close", func() bool { return openConns(t, b) == 0 })
		last = c
	}
	syscall.Close(client)
	select {
	case got := <-fired:
		t.Errorf("a callback of %q after the last connection", got)
	default:
	}
	if same < 10 {
		t.Errorf("only %d of 40 connections took the number and kind of the one before", same)
	}
}

// TestAcceptConnBaseClose: Base.Close closes the connections still open,
// their objects and their sockets, from another goroutine while the loop
// runs and with no loop running; the objects then report ErrClosed.
func TestAcceptConnBaseClose(t *testing.T) {
	forEachConnKind(t, func(t *testing.T, k connKind) {
		for _, running := range []bool{true, false} {
			t.Run(map[bool]string{true: "loop running", false: "no loop"}[running], func(t *testing.T) {
				checkNoLeaks(t)
				b := newBase(t)
				l := listenTCP(t, b, nil, 0)
				accepted := make(chan connObject, 100)
				if err := k.accept(t, l, func(o connObject) { accepted <- o }); err != nil {
					t.Fatal(err)
				}
				r := startDispatch(t, b, atCleanup)
				var clients []net.Conn
				var objs []connObject
				for range 20 {
					c := dial(t, l.Addr())
					pingPong(t, c, 1, 10)
					clients = append(clients, c)
					objs = append(objs, recv(t, accepted, "the accept callback"))
				}
				if !running {
					r.breakAndWait(t, b)
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
				if running {
					r.wait(t)
				}
				for _, c := range clients {
					readEOF(t, c)
				}
				for _, o := range objs {
					if err := o.Close(); !errors.Is(err, ErrClosed) {
						t.Errorf("Close after Base.Close = %v, want ErrClosed", err)
					}
					if o.FD() != -1 {
						t.Errorf("FD after Base.Close = %d", o.FD())
					}
				}
			})
		}
	})
}

// TestAcceptConnCloseConcurrently closes connections from other goroutines
// while the listener accepts more, and closes the listener meanwhile: every
// connection accepted is closed exactly once, every client served sees its
// echo and then the end of stream, and nothing leaks.
func TestAcceptConnCloseConcurrently(t *testing.T) {
	forEachConnKind(t, func(t *testing.T, k connKind) {
		checkNoLeaks(t)
		b := newBase(t)
		l := listenTCP(t, b, nil, 0)
		const clients, closers = 300, 4
		accepted := make(chan connObject, clients)
		n := 0
		if err := k.accept(t, l, func(o connObject) {
			accepted <- o
			if n++; n == clients/2 {
				go l.Close() // from another goroutine, while accepting
			}
		}); err != nil {
			t.Fatal(err)
		}
		startDispatch(t, b, atCleanup)
		var closed, served atomic.Int64
		var wg sync.WaitGroup
		for range closers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for o := range accepted {
					if err := o.Close(); err != nil {
						t.Errorf("Close = %v", err)
					}
					closed.Add(1)
				}
			}()
		}
		var cwg sync.WaitGroup
		addr := l.Addr()
		for i := range clients {
			cwg.Add(1)
			go func() {
				defer cwg.Done()
				c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
				if err != nil { // refused once the listener closed
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				// Closed at once, the server may close before it
				// echoes: a reset or EOF then, never a hang.
				if _, err := c.Write([]byte{byte(i)}); err != nil {
					return
				}
				var b [1]byte
				if n, _ := c.Read(b[:]); n == 1 {
					served.Add(1)
				}
				if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("client %d: %v", i, err)
				}
			}()
		}
		cwg.Wait()
		waitFor(t, "the listener to close", func() bool { return l.FD() == -1 })
		// Every connection accepted is handed to a closer: wait for
		// the loop to be idle, then end the closers.
		waitFor(t, "every connection to close", func() bool { return openConns(t, b) == 0 && len(accepted) == 0 })
		close(accepted)
		wg.Wait()
		t.Logf("%d connections closed, %d echoes", closed.Load(), served.Load())
		if closed.Load() < clients/2 {
			t.Errorf("%d connections accepted and closed, want at least %d", closed.Load(), clients/2)
		}
	})
}

// TestAcceptConnPanic: a panic in the accept callback closes that
// connection and reaches Dispatch; the listener serves again with the next
// Dispatch.
func TestAcceptConnPanic(t *testing.T) {
	forEachConnKind(t, func(t *testing.T, k connKind) {
		checkNoLeaks(t)
		b := newBase(t)
		l := listenTCP(t, b, nil, 0)
		var calls atomic.Int64
		if err := k.accept(t, l, func(connObject) {
			if calls.Add(1) == 1 {
				panic("boom")
			}
		}); err != nil {
			t.Fatal(err)
		}
		first := dial(t, l.Addr())
		second := dial(t, l.Addr())
		p, ok := startDispatch(t, b, atCleanup).waitPanic(t).(*CallbackPanic)
		if !ok || p.Value != "boom" {
			t.Fatalf("Dispatch panicked with %v, want a *CallbackPanic of boom", p)
		}
		readEOF(t, first)
		if n := openConns(t, b); n != 0 {
			t.Errorf("%d connections open after the panic, want 0", n)
		}
		startDispatch(t, b, atCleanup)
		pingPong(t, second, 3, 10)
	})
}

// TestAcceptConnModes switches a listener between accepting into events,
// into buffer events, with an AcceptFunc and paused, and checks that each
// connection is served the way set when it was accepted, none is accepted
// and dropped while paused, and accept errors reach the ErrorFunc in every
// mode.
func TestAcceptConnModes(t *testing.T) {
	t.Run("callbacks", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		l := listenTCP(t, b, nil, 0)
		got := make(chan string, 10)
		plain := func(_ *Listener, fd int, _ net.Addr) { got <- "AcceptFunc"; syscall.Close(fd) }
		byEvent := EventOptions{OnAccept: func(_ *Listener, ev *Event) { got <- "event"; ev.Close() }, OnEvent: func(*Event, int, Events) {}}
		byBEV := BufferEventOptions{OnAccept: func(_ *Listener, be *BufferEvent) { got <- "buffer event"; be.Close() }}
		startDispatch(t, b, atCleanup)
		var queued net.Conn
		for _, step := range []struct {
			set  func() error
			want string
		}{
			{func() error { return l.AcceptEvents(byEvent) }, "event"},
			{func() error { l.SetCallback(plain); return nil }, "AcceptFunc"},
			{func() error { return l.AcceptBufferEvents(byBEV) }, "buffer event"},
			{func() error { return l.AcceptEvents(byEvent) }, "event"},
			{func() error { l.SetCallback(nil); return nil }, ""},
			{func() error { return l.AcceptBufferEvents(byBEV) }, "buffer event"},
		} {
			if err := step.set(); err != nil {
				t.Fatal(err)
			}
			c := dial(t, l.Addr())
			if step.want == "" {
				stillQueued(t, c)
				queued = c
				continue
			}
			if queued != nil { // accepted first, the way set now
				if g := recv(t, got, "the accept callback"); g != step.want {
					t.Fatalf("queued client accepted by %s, want %s", g, step.want)
				}
				readEOF(t, queued)
				queued = nil
			}
			if g := recv(t, got, "the accept callback"); g != step.want {
				t.Fatalf("accepted by %s, want %s", g, step.want)
			}
			readEOF(t, c)
		}
		select {
		case g := <-got:
			t.Errorf("one accept too many, by %s", g)
		default:
		}
	})
	// NoDelay sets TCP_NODELAY before OnAccept runs, on TCP only: a unix
	// socket's connection is accepted as before.
	t.Run("NoDelay", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		tcp := listenTCP(t, b, nil, 0)
		unix := listenUnix(t, b, "@"+t.Name())
		startDispatch(t, b, atCleanup)
		got := make(chan int, 1)
		noDelay := func(fd int) {
			v, err := syscall.GetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
			if err != nil {
				v = -1 // a unix socket
			}
			got <- v
		}
		for _, c := range []struct {
			l       *Listener
			kind    string
			noDelay bool
			want    int
		}{
			{tcp, "event", false, 0}, {tcp, "event", true, 1},
			{tcp, "buffer event", false, 0}, {tcp, "buffer event", true, 1},
			{unix, "event", true, -1}, {unix, "buffer event", true, -1},
		} {
			var err error
			if c.kind == "event" {
				err = c.l.AcceptEvents(EventOptions{NoDelay: c.noDelay, OnEvent: func(*Event, int, Events) {},
					OnAccept: func(_ *Listener, ev *Event) { noDelay(ev.FD()); ev.Close() }})
			} else {
				err = c.l.AcceptBufferEvents(BufferEventOptions{NoDelay: c.noDelay,
					OnAccept: func(_ *Listener, be *BufferEvent) { noDelay(be.FD()); be.Close() }})
			}
			if err != nil {
				t.Fatal(err)
			}
			conn := dial(t, c.l.Addr())
			if v := recv(t, got, "OnAccept"); v != c.want {
				t.Errorf("%s %s, NoDelay %v: TCP_NODELAY %d, want %d", c.l.Addr().Network(), c.kind, c.noDelay, v, c.want)
			}
			readEOF(t, conn)
		}
	})
	t.Run("errors", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		l := notListening(t, b)
		errs := make(chan error, 10)
		l.SetErrorCallback(func(l *Listener, err error) { errs <- err; l.Disable() })
		for _, set := range []func() error{
			func() error { return l.AcceptEvents(EventOptions{OnEvent: func(*Event, int, Events) {}}) },
			func() error { return l.AcceptBufferEvents(BufferEventOptions{}) },
			func() error { l.SetCallback(func(_ *Listener, fd int, _ net.Addr) { syscall.Close(fd) }); return nil },
			func() error { return l.AcceptEvents(EventOptions{OnEvent: func(*Event, int, Events) {}}) },
		} {
			if err := set(); err != nil {
				t.Fatal(err)
			}
			if err := l.Enable(); err != nil {
				t.Fatal(err)
			}
			if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
				t.Fatal(err)
			}
			if err := recv(t, errs, "the error callback"); !errors.Is(err, syscall.EINVAL) {
				t.Errorf("error callback got %v, want EINVAL", err)
			}
		}
	})
}

// TestAcceptConnBadInput: bad options are errors, never a panic, and leave
// the listener as it was.
func TestAcceptConnBadInput(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	l := listenTCP(t, b, func(_ *Listener, fd int, _ net.Addr) { syscall.Close(fd) }, 0)
	cb := func(*Event, int, Events) {}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"nil OnEvent", l.AcceptEvents(EventOptions{})},
		{"signal bit", l.AcceptEvents(EventOptions{What: EvRead | 0x08, OnEvent: cb})},
		{"timeout bit", l.AcceptEvents(EventOptions{What: EvRead | EvTimeout, OnEvent: cb})},
		{"persist alone", l.AcceptEvents(EventOptions{What: EvPersist, OnEvent: cb})},
		{"unknown option", l.AcceptBufferEvents(BufferEventOptions{Options: 0x4000})},
		{"enable EvClosed", l.AcceptBufferEvents(BufferEventOptions{Enable: EvClosed})},
		{"negative timeout", l.AcceptBufferEvents(BufferEventOptions{ReadTimeout: -time.Second})},
		{"negative watermark", l.AcceptBufferEvents(BufferEventOptions{ReadLowWatermark: -1})},
		{"high below low", l.AcceptBufferEvents(BufferEventOptions{WriteLowWatermark: 10, WriteHighWatermark: 5})},
	} {
		var op *net.OpError
		if !errors.As(tc.err, &op) || op.Op != "accept" || op.Addr == nil {
			t.Errorf("%s: error %v, want a *net.OpError of accept with the address", tc.name, tc.err)
		}
	}
	startDispatch(t, b, atCleanup)
	readEOF(t, dial(t, l.Addr())) // still the AcceptFunc
	l.Close()
	if err := l.AcceptEvents(EventOptions{OnEvent: cb}); !errors.Is(err, ErrClosed) {
		t.Errorf("AcceptEvents on a closed listener = %v, want ErrClosed", err)
	}
	if err := l.AcceptBufferEvents(BufferEventOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("AcceptBufferEvents on a closed listener = %v, want ErrClosed", err)
	}
}

// BenchmarkAcceptConnOnLoop measures what a server does for each
// connection besides accept(2) and the connection's messages, on the loop:
// hand the accepted socket over (here a dup of one end of a socketpair,
// made in C as libevent's accept loop hands sockets on), make and arm the
// connection's event or buffer event, and close both again. "AcceptFunc+…"
// is the way without an acceptor: the AcceptFunc gets the socket and its
// address and makes the object through the binding; "AcceptEvents" and
// "AcceptBufferEvents" make it in C before the one call into Go; "C …" is
// the same libevent calls from C with no Go at all. The differences per op
// are the binding's cost per connection, without the noise of the
// kernel's accept and loopback paths.
func BenchmarkAcceptConnOnLoop(b *testing.B) {
	base, fd := loopAndSocket(b)
	onEvent := func(*Event, int, Events) {}
	onRead := func(*BufferEvent) {}
	run := func(b *testing.B, accept func(l *Listener) error) {
		l, err := NewBind(base, nil, CloseOnFree|Disabled, -1, "tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		if err := accept(l); err != nil {
			b.Fatal(err)
		}
		benchOnLoop(b, base, func(n int) error { return benchAcceptDup(l, fd, n) })
	}
	b.Run("AcceptFunc+Event", func(b *testing.B) {
		run(b, func(l *Listener) error {
			l.SetCallback(func(_ *Listener, fd int, _ net.Addr) {
				ev, err := NewEvent(base, fd, EvRead|EvPersist, onEvent)
				if err != nil {
					b.Error(err)
				} else {
					ev.Add(time.Minute)
					ev.Close()
				}
				syscall.Close(fd)
			})
			return nil
		})
	})
	b.Run("AcceptEvents", func(b *testing.B) {
		run(b, func(l *Listener) error {
			return l.AcceptEvents(EventOptions{
				Timeout:  time.Minute,
				OnAccept: func(_ *Listener, ev *Event) { ev.Close() },
				OnEvent:  onEvent,
			})
		})
	})
	b.Run("C event", func(b *testing.B) {
		benchOnLoop(b, base, func(n int) error { return ctest.ConnCycle(base.CPtr(), fd, n, false) })
	})
	b.Run("AcceptFunc+BufferEvent", func(b *testing.B) {
		run(b, func(l *Listener) error {
			l.SetCallback(func(_ *Listener, fd int, _ net.Addr) {
				be, err := NewBufferEvent(base, fd, BEVOptCloseOnFree)
				if err != nil {
					b.Error(err)
					syscall.Close(fd)
					return
				}
				be.SetCallbacks(onRead, nil, nil)
				be.Enable(EvRead)
				be.Close()
			})
			return nil
		})
	})
	b.Run("AcceptBufferEvents", func(b *testing.B) {
		run(b, func(l *Listener) error {
			return l.AcceptBufferEvents(BufferEventOptions{
				OnAccept: func(_ *Listener, be *BufferEvent) { be.Close() },
				OnRead:   onRead,
			})
		})
	})
	b.Run("C bufferevent", func(b *testing.B) {
		benchOnLoop(b, base, func(n int) error { return ctest.ConnCycle(base.CPtr(), fd, n, true) })
	})
}

// TestConnStateBytes measures what the binding keeps per open connection
// that an acceptor made, as README.md states it: on the Go side the
// connection's object and its handle (the Go heap's growth per idle
// connection, after a GC, with the connections open), and on the C side
// its slot in the table (an event's slot holds the event itself).
func TestConnStateBytes(t *testing.T) {
	const (
		handle    = 16           // an entry of the handle table, when no freed one is reused
		goEvent   = 96 + handle  // bytes of Go heap per event connection
		goBEV     = 184 + handle // per buffer event connection
		cEvent    = 144          // an event connection's slot
		cBEV      = 48           // a buffer event connection's
		conns     = 2000
		tolerance = 24 // chunks not yet full or rounded to a size class, the list of chunks
	)
	if ev, bev := connSlotBytes(); ev != cEvent || bev != cBEV {
		t.Errorf("C: event slot %d bytes, buffer event slot %d; README.md says %d and %d", ev, bev, cEvent, cBEV)
	}
	for _, tc := range []struct {
		kind connKind
		want int
	}{{connKinds[0], goEvent}, {connKinds[1], goBEV}} {
		t.Run(tc.kind.name, func(t *testing.T) {
			checkNoLeaks(t)
			b := newBase(t)
			l := listenTCP(t, b, nil, 0)
			if err := tc.kind.accept(t, l, nil); err != nil {
				t.Fatal(err)
			}
			startDispatch(t, b, atCleanup)
			c := newRawClient(l.Addr())
			clients := make([]int, 0, conns)
			defer func() {
				for _, fd := range clients {
					syscall.Close(fd)
				}
			}()
			open := func(n int) {
				// The client sockets first, so that the server's
				// descriptors are dense, as in a server of its own.
				from := len(clients)
				for range n {
					fd, err := c.socket()
					if err != nil {
						t.Fatal(err)
					}
					clients = append(clients, fd)
				}
				for _, fd := range clients[from:] {
					if err := syscall.Connect(fd, &c.sa); err != nil {
						t.Fatal(err)
					}
					if _, err := syscall.Write(fd, c.buf[:]); err != nil {
						t.Fatal(err)
					}
					if n, err := read(fd, c.buf[:]); n != 1 {
						t.Fatalf("connection %d: no echo: read = %d, %v", len(clients), n, err)
					}
				}
			}
			open(10) // the runtime's and the loop's own first allocations
			if !rssBounded {
				t.Skip("the race detector's and AddressSanitizer's builds allocate for their own ends")
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			open(conns)
			runtime.GC()
			runtime.ReadMemStats(&after)
			per := float64(after.HeapAlloc-before.HeapAlloc) / conns
			t.Logf("%.1f bytes of Go heap per open connection", per)
			if per > float64(tc.want+tolerance) {
				t.Errorf("%.1f bytes of Go heap per open connection; README.md says %d", per, tc.want)
			}
		})
	}
}

// TestAcceptConnObjectFails: when the connection's object cannot be made
// (here: the socket handed over is /dev/null, which epoll refuses), the
// socket is closed, the accept callback does not run, and the ErrorFunc
// hears of it, as of an accept that failed; the listener backs off.
func TestAcceptConnObjectFails(t *testing.T) {
	forEachConnKind(t, func(t *testing.T, k connKind) {
		checkNoLeaks(t)
		b := newBase(t)
		l := listenTCP(t, b, nil, Disabled)
		if err := k.accept(t, l, func(connObject) { t.Error("accept callback ran") }); err != nil {
			t.Fatal(err)
		}
		var got error
		l.SetErrorCallback(func(_ *Listener, err error) { got = err })
		null, err := syscall.Open("/dev/null", syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(null)
		before := openFDs(t)
		startDispatch(t, b, atCleanup)
		if err := b.Do(func() {
			if err := benchAcceptDup(l, null, 1); err != nil {
				t.Error(err)
			}
		}); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(got, syscall.EPERM) {
			t.Errorf("error callback got %v, want EPERM", got)
		}
		if n := openFDs(t); n != before {
			t.Errorf("open fds: %d, want %d: the socket was not closed", n, before)
		}
		if n := openConns(t, b); n != 0 {
			t.Errorf("%d connections open, want 0", n)
		}
	})
}

// TestAcceptConnInsideCallback: the listener closed, or switched to an
// AcceptFunc, from inside the accept callback of its acceptor, with more
// clients queued: the connection accepted stays served, and the next one
// waits for (or is refused by) the listener as it now is.
func TestAcceptConnInsideCallback(t *testing.T) {
	forEachConnKind(t, func(t *testing.T, k connKind) {
		t.Run("Close", func(t *testing.T) {
			checkNoLeaks(t)
			b := newBase(t)
			l := listenTCP(t, b, nil, 0)
			if err := k.accept(t, l, func(connObject) { l.Close() }); err != nil {
				t.Fatal(err)
			}
			first, second := dial(t, l.Addr()), dial(t, l.Addr())
			startDispatch(t, b, atCleanup)
			pingPong(t, first, 3, 10)
			second.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := second.Read(make([]byte, 1)); err == nil {
				t.Error("the second client, queued as the listener closed, was served")
			}
		})
		t.Run("SetCallback", func(t *testing.T) {
			checkNoLeaks(t)
			b := newBase(t)
			l := listenTCP(t, b, nil, 0)
			plain := make(chan int, 1)
			if err := k.accept(t, l, func(connObject) {
				l.SetCallback(func(_ *Listener, fd int, _ net.Addr) { plain <- fd; syscall.Close(fd) })
			}); err != nil {
				t.Fatal(err)
			}
			first, second := dial(t, l.Addr()), dial(t, l.Addr())
			startDispatch(t, b, atCleanup)
			pingPong(t, first, 3, 10)
			recv(t, plain, "the AcceptFunc")
			readEOF(t, second)
		})
	})
}

// TestAcceptConnStorm: goroutines switch a listener at random between
// accepting into events, into buffer events, with an AcceptFunc and paused,
// and enable and disable it, while clients keep connecting and other
// goroutines close the connections handed to them: every call returns nil,
// nothing deadlocks or crashes, and no descriptor or handle is left once
// the base is closed.
func TestAcceptConnStorm(t *testing.T) {
	forEachBaseKind(t, func(t *testing.T, kind baseKind) {
		checkNoLeaks(t)
		b := newBaseKind(t, kind)
		l := listenTCP(t, b, nil, 0)
		handed := make(chan connObject, 64)
		var accepted atomic.Int64
		take := func(o connObject) {
			accepted.Add(1)
			switch accepted.Load() % 3 {
			case 0:
				o.Close() // at once, inside the accept callback
			case 1:
				select { // to another goroutine
				case handed <- o:
				default:
					o.Close()
				}
			} // else left to the client's reset and the callbacks
		}
		byEvent := EventOptions{OnAccept: func(_ *Listener, ev *Event) { take(ev) }, OnEvent: echoEvent(make([]byte, 64))}
		byBEV := BufferEventOptions{
			OnAccept: func(_ *Listener, be *BufferEvent) { take(be) },
			OnRead:   func(be *BufferEvent) { be.EchoInput() },
			OnEvent:  func(be *BufferEvent, _ BEVEvent, _ error) { be.Close() },
		}
		plain := func(_ *Listener, fd int, _ net.Addr) { accepted.Add(1); syscall.Close(fd) }
		loop := startDispatch(t, b, atCleanup)
		stop, stormed := make(chan struct{}), make(chan struct{})
		var wg sync.WaitGroup
		var calls atomic.Int64
		for i := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := i; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					var err error
					switch n % 6 {
					case 0:
						err = l.AcceptEvents(byEvent)
					case 1:
						err = l.AcceptBufferEvents(byBEV)
					case 2:
						l.SetCallback(plain)
					case 3:
						l.SetCallback(nil)
					case 4:
						err = l.Disable()
					case 5:
						err = l.Enable()
					}
					if err != nil {
						t.Errorf("call %d: %v", n%6, err)
					}
					calls.Add(1)
				}
			}()
		}
		wg.Add(1)
		go func() { // the closer
			defer wg.Done()
			for {
				select {
				case o := <-handed:
					if err := o.Close(); err != nil && !errors.Is(err, ErrClosed) {
						t.Errorf("Close = %v", err)
					}
				case <-stop:
					return
				}
			}
		}()
		var dials atomic.Int64
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := net.Dialer{Timeout: 100 * time.Millisecond}
				for {
					select {
					case <-stop:
						return
					default:
					}
					c, err := d.Dial("tcp", l.Addr().String())
					if err != nil {
						continue
					}
					dials.Add(1)
					c.Write([]byte("x"))
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
			}()
		}
		go func() { wg.Wait(); close(stormed) }()
		time.Sleep(stormLength() / 2) // the storm's length, not synchronisation
		endStorm(t, stop, stormed)
		t.Logf("%d calls, %d dials, %d accepted", calls.Load(), dials.Load(), accepted.Load())
		if accepted.Load() == 0 {
			t.Error("nothing accepted during the storm")
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := loop.wait(t); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPooledBufferEventFields: takeBufferEvent readies a reused
// BufferEvent field by field (the header must stay, see there), so a field
// added to BufferEvent must be added there too, or a connection would
// inherit the last one's value. This list is takeBufferEvent's.
func TestPooledBufferEventFields(t *testing.T) {
	reset := []string{"object", "closeOnFree", "outFull", "connecting", "connected", "peerEOF",
		"flushing", "lingering", "ctx", "ptr", "readCb", "writeCb", "eventCb", "in", "out",
		"outHigh", "writeTimeout", "pool", "rare"}
	var have []string
	typ := reflect.TypeFor[BufferEvent]()
	for i := range typ.NumField() {
		have = append(have, typ.Field(i).Name)
	}
	if !slices.Equal(have, reset) {
		t.Errorf("BufferEvent's fields are %v; takeBufferEvent readies %v: ready the new ones there, then list them here", have, reset)
	}
}
