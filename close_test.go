package evlistener

import (
	"errors"
	"net"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func TestClose(t *testing.T) {
	t.Run("close inside the accept callback", func(t *testing.T) {
		b := newBase(t)
		calls := 0
		var fd, afterFD int
		var addr net.Addr
		var second error
		l := listenTCP(t, b, func(l *Listener, cfd int, _ net.Addr) {
			calls++
			defer syscall.Close(cfd)
			if err := l.Close(); err != nil {
				t.Error(err)
			}
			afterFD, addr, second = l.FD(), l.Addr(), l.Close()
		}, 0)
		fd = l.FD()
		laddr := l.Addr()
		c1 := dial(t, laddr)
		c2 := dial(t, laddr)
		handles := liveHandles()
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if calls != 1 {
			t.Fatalf("%d accept callbacks, want 1: none may start after Close", calls)
		}
		if afterFD != -1 || addr != nil || !errors.Is(second, ErrClosed) {
			t.Fatalf("after Close: FD() = %d, Addr() = %v, Close() = %v; want -1, nil, ErrClosed", afterFD, addr, second)
		}
		if got := liveHandles(); got != handles-1 {
			t.Fatalf("live handles %d -> %d; Close must release the listener's", handles, got)
		}
		readEOF(t, c1) // the callback closed its connection
		// The queued client was never accepted: closing the listening
		// socket resets it.
		c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("queued client: read error %v, want ECONNRESET", err)
		}
		refused(t, laddr)
		if fdOpen(fd) && sockname(fd) != nil && sockname(fd).String() == laddr.String() {
			t.Fatalf("listening fd %d still open after Dispatch returned", fd)
		}
	})

	t.Run("close another listener inside an accept callback", func(t *testing.T) {
		b := newBase(t)
		calls := 0
		var ls [2]*Listener
		cb := func(l *Listener, fd int, _ net.Addr) {
			calls++
			syscall.Close(fd)
			for _, other := range ls {
				if err := other.Close(); err != nil {
					t.Error(err)
				}
			}
		}
		ls[0] = listenTCP(t, b, cb, 0)
		ls[1] = listenTCP(t, b, cb, 0)
		// Both listening sockets are readable in the same loop pass.
		dial(t, ls[0].Addr())
		dial(t, ls[1].Addr())
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if calls != 1 {
			t.Fatalf("%d accept callbacks, want 1", calls)
		}
	})

	t.Run("close from several goroutines at once", func(t *testing.T) {
		for _, loop := range []bool{false, true} {
			b := newBase(t)
			l := listenTCP(t, b, func(_ *Listener, fd int, _ net.Addr) { syscall.Close(fd) }, 0)
			var r *running
			if loop {
				r = startDispatch(t, b, whenIdle) // the listener keeps it alive
			}
			if nils := closeAtOnce(t, 8, l.Close); nils != 1 {
				t.Fatalf("dispatch running %v: %d Close calls returned nil, want 1", loop, nils)
			}
			if loop {
				if err := r.wait(t); err != nil {
					t.Fatal(err)
				}
			}
		}
	})

	t.Run("close inside the error callback", func(t *testing.T) {
		b := newBase(t)
		l := notListening(t, b)
		calls := 0
		l.SetErrorCallback(func(l *Listener, _ error) {
			calls++
			if err := l.Close(); err != nil {
				t.Error(err)
			}
		})
		// Returning on its own shows the back-off retry was cancelled.
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if calls != 1 {
			t.Fatalf("%d error callbacks, want 1", calls)
		}
	})

	t.Run("close during a back-off pause", func(t *testing.T) {
		b := newBase(t)
		l := notListening(t, b)
		calls := make(chan struct{}, 100)
		l.SetErrorCallback(func(*Listener, error) { calls <- struct{}{} })
		r := startDispatch(t, b, whenIdle)
		recv(t, calls, "the error callback")
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
		if n := len(calls); n > 1 {
			t.Fatalf("%d error callbacks after Close", n)
		}
	})

	t.Run("without CloseOnFree the socket outlives Close", func(t *testing.T) {
		b := newBase(t)
		l, err := NewBind(b, nil, 0, -1, "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fd, addr := l.FD(), l.Addr()
		defer syscall.Close(fd)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if !fdOpen(fd) {
			t.Fatal("Close closed the socket without CloseOnFree")
		}
		dial(t, addr) // still listening: the connection waits in the backlog
	})
}

// Every public method of a closed object, closed by its own Close or by
// Base.Close, returns a *net.OpError whose Op is the method (opOf) around
// ErrClosed (which wraps net.ErrClosed), or its documented zero: FD -1,
// Addr and CPtr nil, Pending false, Enabled 0, Len 0; the callback setters
// do nothing; Base is still the base. The table must name every method of
// the four types.
func TestClosedObjects(t *testing.T) {
	// closed holds one object of each type, and an open buffer event
	// for MoveTo.
	type closed struct {
		b    *Base
		l    *Listener
		be   *BufferEvent
		ev   *Event
		open *BufferEvent
	}
	noAccept := func(_ *Listener, fd int, _ net.Addr) { syscall.Close(fd) }
	noData := func(*BufferEvent) {}
	noEvent := func(*Event, int, Events) {}
	rows := []struct {
		method string // Type.Method
		how    string // what the case adds to the method's name, if anything
		call   func(c *closed) []any
		want   func(c *closed) []any
	}{
		{method: "Listener.Close", call: func(c *closed) []any { return []any{c.l.Close()} }},
		{method: "Listener.Enable", call: func(c *closed) []any { return []any{c.l.Enable()} }},
		{method: "Listener.Disable", call: func(c *closed) []any { return []any{c.l.Disable()} }},
		{method: "Listener.SetCallback", call: func(c *closed) []any { c.l.SetCallback(noAccept); return nil }},
		{method: "Listener.SetCallback", how: "nil", call: func(c *closed) []any { c.l.SetCallback(nil); return nil }},
		{method: "Listener.SetErrorCallback", call: func(c *closed) []any { c.l.SetErrorCallback(func(*Listener, error) {}); return nil }},
		{method: "Listener.SetErrorCallback", how: "nil", call: func(c *closed) []any { c.l.SetErrorCallback(nil); return nil }},
		{method: "Listener.FD", call: func(c *closed) []any { return []any{c.l.FD()} }, want: func(*closed) []any { return []any{-1} }},
		{method: "Listener.Addr", call: func(c *closed) []any { return []any{c.l.Addr()} }, want: func(*closed) []any { return []any{net.Addr(nil)} }},
		{method: "Listener.CPtr", call: func(c *closed) []any { return []any{c.l.CPtr()} }, want: func(*closed) []any { return []any{unsafe.Pointer(nil)} }},
		{method: "Listener.Base", call: func(c *closed) []any { return []any{c.l.Base()} }, want: func(c *closed) []any { return []any{c.b} }},
		{method: "Listener.AcceptEvents", call: func(c *closed) []any { return []any{c.l.AcceptEvents(EventOptions{OnEvent: noEvent})} }},
		{method: "Listener.AcceptEvents", how: "bad options", call: func(c *closed) []any { return []any{c.l.AcceptEvents(EventOptions{})} }},
		{method: "Listener.AcceptBufferEvents", call: func(c *closed) []any { return []any{c.l.AcceptBufferEvents(BufferEventOptions{})} }},
		{method: "Listener.AcceptBufferEvents", how: "bad options", call: func(c *closed) []any {
			return []any{c.l.AcceptBufferEvents(BufferEventOptions{ReadTimeout: -1})}
		}},
		{method: "Listener.File", call: func(c *closed) []any { f, err := c.l.File(); return []any{f, err} }, want: func(*closed) []any { return []any{(*os.File)(nil), ErrClosed} }},

		{method: "BufferEvent.Close", call: func(c *closed) []any { return []any{c.be.Close()} }},
		{method: "BufferEvent.Enable", call: func(c *closed) []any { return []any{c.be.Enable(EvRead)} }},
		{method: "BufferEvent.Disable", call: func(c *closed) []any { return []any{c.be.Disable(EvRead)} }},
		{method: "BufferEvent.SetWatermark", call: func(c *closed) []any { return []any{c.be.SetWatermark(EvRead, 0, 0)} }},
		// A closed object says so before it looks at the arguments.
		{method: "BufferEvent.SetWatermark", how: "bad arguments", call: func(c *closed) []any { return []any{c.be.SetWatermark(EvRead, 5, 1)} }},
		{method: "BufferEvent.SetTimeouts", call: func(c *closed) []any { return []any{c.be.SetTimeouts(time.Second, 0)} }},
		{method: "BufferEvent.EchoInput", call: func(c *closed) []any { n, err := c.be.EchoInput(); return []any{n, err} }},
		{method: "BufferEvent.Read", call: func(c *closed) []any { n, err := c.be.Read(make([]byte, 1)); return []any{n, err} }},
		{method: "BufferEvent.Write", call: func(c *closed) []any { n, err := c.be.Write([]byte("x")); return []any{n, err} }},
		{method: "BufferEvent.SetCallbacks", call: func(c *closed) []any { c.be.SetCallbacks(noData, noData, nil); return nil }},
		{method: "BufferEvent.SetCallbacks", how: "nil", call: func(c *closed) []any { c.be.SetCallbacks(nil, nil, nil); return nil }},
		{method: "BufferEvent.Enabled", call: func(c *closed) []any { return []any{c.be.Enabled()} }, want: func(*closed) []any { return []any{Events(0)} }},
		{method: "BufferEvent.FD", call: func(c *closed) []any { return []any{c.be.FD()} }, want: func(*closed) []any { return []any{-1} }},
		{method: "BufferEvent.CPtr", call: func(c *closed) []any { return []any{c.be.CPtr()} }, want: func(*closed) []any { return []any{unsafe.Pointer(nil)} }},
		{method: "BufferEvent.CloseAfterFlush", call: func(c *closed) []any { return []any{c.be.CloseAfterFlush(time.Second)} }},
		{method: "BufferEvent.Connect", call: func(c *closed) []any { return []any{c.be.Connect("tcp", "127.0.0.1:1")} }},
		{method: "BufferEvent.Connect", how: "bad address", call: func(c *closed) []any { return []any{c.be.Connect("tcp", "")} }},
		{method: "BufferEvent.RemoteAddr", call: func(c *closed) []any { return []any{c.be.RemoteAddr()} }, want: func(*closed) []any { return []any{net.Addr(nil)} }},
		{method: "BufferEvent.Base", call: func(c *closed) []any { return []any{c.be.Base()} }, want: func(c *closed) []any { return []any{c.b} }},
		// The buffers stay reachable; the Buffer rows call their methods.
		{method: "BufferEvent.Input", call: func(c *closed) []any { return []any{c.be.Input() != nil} }, want: func(*closed) []any { return []any{true} }},
		{method: "BufferEvent.Output", call: func(c *closed) []any { return []any{c.be.Output() != nil} }, want: func(*closed) []any { return []any{true} }},

		{method: "Buffer.Len", how: "Input", call: func(c *closed) []any { return []any{c.be.Input().Len()} }, want: func(*closed) []any { return []any{0} }},
		{method: "Buffer.Len", how: "Output", call: func(c *closed) []any { return []any{c.be.Output().Len()} }, want: func(*closed) []any { return []any{0} }},
		{method: "Buffer.Read", call: func(c *closed) []any { n, err := c.be.Input().Read(make([]byte, 1)); return []any{n, err} }},
		{method: "Buffer.Write", call: func(c *closed) []any { n, err := c.be.Output().Write([]byte("x")); return []any{n, err} }},
		{method: "Buffer.MoveTo", how: "from a closed buffer", call: func(c *closed) []any {
			n, err := c.be.Input().MoveTo(c.open.Output())
			return []any{n, err}
		}},
		{method: "Buffer.MoveTo", how: "into a closed buffer", call: func(c *closed) []any {
			n, err := c.open.Input().MoveTo(c.be.Output())
			return []any{n, err}
		}},
		{method: "Buffer.ReadLine", call: func(c *closed) []any { line, ok := c.be.Input().ReadLine(EOLLF); return []any{line, ok} }, want: func(*closed) []any { return []any{[]byte(nil), false} }},
		{method: "Buffer.Peek", call: func(c *closed) []any { return []any{c.be.Input().Peek(1)} }, want: func(*closed) []any { return []any{[]byte(nil)} }},
		{method: "Buffer.Index", call: func(c *closed) []any { return []any{c.be.Input().Index([]byte("x"))} }, want: func(*closed) []any { return []any{-1} }},
		{method: "Buffer.Drain", call: func(c *closed) []any { return []any{c.be.Output().Drain(1)} }},
		{method: "Buffer.Drain", how: "negative count", call: func(c *closed) []any { return []any{c.be.Input().Drain(-1)} }},
		{method: "Buffer.MoveTo", how: "to nil", call: func(c *closed) []any {
			n, err := c.be.Input().MoveTo(nil)
			return []any{n, err}
		}},
		{method: "Buffer.AppendTo", call: func(c *closed) []any { out, err := c.be.Input().AppendTo(nil); return []any{len(out), err} }},
		{method: "Buffer.AppendN", call: func(c *closed) []any { out, err := c.be.Input().AppendN(nil, 1); return []any{len(out), err} }},
		{method: "Buffer.AppendN", how: "negative count", call: func(c *closed) []any { out, err := c.be.Input().AppendN(nil, -1); return []any{len(out), err} }},
		{method: "Buffer.AppendLine", call: func(c *closed) []any { line, ok := c.be.Input().AppendLine(nil, EOLLF); return []any{line, ok} }, want: func(*closed) []any { return []any{[]byte(nil), false} }},
		{method: "Buffer.IndexFrom", call: func(c *closed) []any { return []any{c.be.Input().IndexFrom([]byte("x"), 0)} }, want: func(*closed) []any { return []any{-1} }},
		{method: "Buffer.ReadAt", call: func(c *closed) []any { n, err := c.be.Input().ReadAt(make([]byte, 1), 0); return []any{n, err} }},
		{method: "Buffer.ReadAt", how: "negative offset", call: func(c *closed) []any { n, err := c.be.Input().ReadAt(make([]byte, 1), -1); return []any{n, err} }},

		{method: "Event.Close", call: func(c *closed) []any { return []any{c.ev.Close()} }},
		{method: "Event.Add", call: func(c *closed) []any { return []any{c.ev.Add(time.Second)} }},
		{method: "Event.Del", call: func(c *closed) []any { return []any{c.ev.Del()} }},
		{method: "Event.Active", call: func(c *closed) []any { return []any{c.ev.Active(EvTimeout)} }},
		{method: "Event.Pending", call: func(c *closed) []any { return []any{c.ev.Pending(EvRead | EvTimeout)} }, want: func(*closed) []any { return []any{false} }},
		{method: "Event.FD", call: func(c *closed) []any { return []any{c.ev.FD()} }, want: func(*closed) []any { return []any{-1} }},
		{method: "Event.CPtr", call: func(c *closed) []any { return []any{c.ev.CPtr()} }, want: func(*closed) []any { return []any{unsafe.Pointer(nil)} }},
		{method: "Event.RemoteAddr", call: func(c *closed) []any { return []any{c.ev.RemoteAddr()} }, want: func(*closed) []any { return []any{net.Addr(nil)} }},
		{method: "Event.Base", call: func(c *closed) []any { return []any{c.ev.Base()} }, want: func(c *closed) []any { return []any{c.b} }},
	}

	listed := map[string]bool{}
	for _, row := range rows {
		listed[row.method] = true
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[*Listener](), reflect.TypeFor[*BufferEvent](), reflect.TypeFor[*Buffer](), reflect.TypeFor[*Event]()} {
		for i := range typ.NumMethod() {
			if name := typ.Elem().Name() + "." + typ.Method(i).Name; !listed[name] {
				t.Errorf("%s has no row: add what it returns on a closed object", name)
			}
		}
	}

	for _, closeBy := range []string{"Close", "Base.Close"} {
		t.Run("closed by "+closeBy, func(t *testing.T) {
			for _, row := range rows {
				name := row.method
				if row.how != "" {
					name += " " + row.how
				}
				t.Run(name, func(t *testing.T) {
					checkNoLeaks(t)
					c := &closed{b: newBase(t)}
					c.l = listenTCP(t, c.b, noAccept, 0)
					addr := c.l.Addr()
					fd, _ := tcpPair(t)
					c.be = newBEV(t, c.b, fd)
					fd, _ = tcpPair(t)
					c.open = newBEV(t, c.b, fd)
					t.Cleanup(func() { c.open.Close() })
					fd, _ = tcpPair(t)
					t.Cleanup(func() { syscall.Close(fd) })
					c.ev = newEvent(t, c.b, fd, EvRead, noEvent)
					if closeBy == "Close" {
						for _, close := range []func() error{c.l.Close, c.be.Close, c.ev.Close} {
							if err := close(); err != nil {
								t.Fatal(err)
							}
						}
					} else if err := c.b.Close(); err != nil {
						t.Fatal(err)
					}
					refused(t, addr)

					got := row.call(c)
					var want []any
					if row.want != nil {
						want = row.want(c)
					}
					for i, v := range got {
						if err, ok := v.(error); ok || v == nil && row.want == nil {
							checkClosedError(t, row.method, err)
							continue
						}
						if row.want == nil {
							if v != 0 {
								t.Errorf("result %d = %v, want 0 with ErrClosed", i, v)
							}
							continue
						}
						if i >= len(want) || !reflect.DeepEqual(v, want[i]) {
							t.Errorf("result %d = %#v, want %#v", i, v, want)
						}
					}
					if row.want != nil && len(got) != len(want) {
						t.Errorf("%d results, want %d", len(got), len(want))
					}
				})
			}
		})
	}
}

// A closed base's methods fail as a closed object's do; CPtr and Method
// return nil and "". The table must name every method of Base.
func TestClosedBase(t *testing.T) {
	rows := []struct {
		method string
		call   func(b *Base) error // nil: not an error
	}{
		{"Base.Close", (*Base).Close},
		{"Base.Dispatch", (*Base).Dispatch},
		{"Base.LoopBreak", (*Base).LoopBreak},
		{"Base.LoopExit", func(b *Base) error { return b.LoopExit(0) }},
		{"Base.Do", func(b *Base) error { return b.Do(func() { t.Error("f ran on a closed base") }) }},
		{"Base.Post", func(b *Base) error { return b.Post(func() { t.Error("f ran on a closed base") }) }},
		{"Base.SetBusyPoll", func(b *Base) error { return b.SetBusyPoll(time.Millisecond) }},
		{"Base.SetBusyPollBudget", func(b *Base) error { return b.SetBusyPollBudget(1) }},
		{"Base.CPtr", nil},
		{"Base.Method", nil},
	}
	listed := map[string]bool{}
	for _, row := range rows {
		listed[row.method] = true
	}
	typ := reflect.TypeFor[*Base]()
	for i := range typ.NumMethod() {
		if name := "Base." + typ.Method(i).Name; !listed[name] {
			t.Errorf("%s has no row: add what it returns on a closed base", name)
		}
	}
	b := newBase(t)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if b.CPtr() != nil || b.Method() != "" {
		t.Errorf("closed base: CPtr() = %v, Method() = %q; want nil, \"\"", b.CPtr(), b.Method())
	}
	for _, row := range rows {
		if row.call != nil {
			t.Run(row.method, func(t *testing.T) { checkClosedError(t, row.method, row.call(b)) })
		}
	}
}

// checkClosedError fails t unless err is what method ("Type.Method") of a
// closed object returns: a *net.OpError that names the method (opOf)
// around ErrClosed, which wraps net.ErrClosed.
func checkClosedError(t *testing.T, method string, err error) {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != opOf(method) || !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("%s = %#v (%v), want a *net.OpError with Op %q around ErrClosed, which wraps net.ErrClosed", method, err, err, opOf(method))
	}
}

// opOf is the Op of the errors of method ("Type.Method"): its name in
// lower-case words ("SetWatermark": "set watermark"), but where Go's net
// has a word for the step (Connect dials, the Accept methods accept).
func opOf(method string) string {
	switch method {
	case "BufferEvent.Connect":
		return "dial"
	case "Listener.AcceptEvents", "Listener.AcceptBufferEvents":
		return "accept"
	}
	var op []byte
	for i, c := range []byte(method[strings.IndexByte(method, '.')+1:]) {
		if 'A' <= c && c <= 'Z' {
			if i > 0 {
				op = append(op, ' ')
			}
			c += 'a' - 'A'
		}
		op = append(op, c)
	}
	return string(op)
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
		switch err := recv(t, errs, "Close"); {
		case err == nil:
			nils++
		case errors.Is(err, ErrClosed):
		default:
			t.Fatalf("Close = %v", err)
		}
	}
	return nils
}
