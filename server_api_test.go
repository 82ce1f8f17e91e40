package evlistener

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What a real server needs beyond accept: lines, back-pressure,
// flush-then-close and the client side.

// readingBEV returns a buffer event that reads, on a running base, and its
// peer.
func readingBEV(t *testing.T) (*BufferEvent, *net.TCPConn) {
	t.Helper()
	b := newBase(t)
	be, peer := bevPair(t, b)
	be.Enable(EvRead)
	startDispatch(t, b, atCleanup)
	return be, peer
}

func TestBufferReadLine(t *testing.T) {
	be, peer := readingBEV(t)
	in := be.Input()
	// The test reads from its own goroutine: every call is handed to the
	// loop.
	feed := func(s string) {
		t.Helper()
		want := in.Len() + len(s)
		peer.Write([]byte(s))
		waitFor(t, "the input", func() bool { return in.Len() >= want })
	}
	feed("one\r\ntwo\nthr")
	for _, tc := range []struct {
		style EOLStyle
		want  string
		ok    bool
	}{
		{EOLCRLFStrict, "one", true},
		{EOLCRLFStrict, "", false}, // "two\n" has no CR LF
		{EOLLF, "two", true},
		{EOLCRLF, "", false}, // "thr": no whole line
	} {
		line, ok := in.ReadLine(tc.style)
		if ok != tc.ok || string(line) != tc.want {
			t.Fatalf("ReadLine(%v) = %q, %v; want %q, %v", tc.style, line, ok, tc.want, tc.ok)
		}
	}
	if got := string(in.Peek(100)); got != "thr" {
		t.Fatalf("after the partial ReadLine the buffer holds %q, want the partial line kept", got)
	}
	feed("ee\n\nlast\x00")
	if i := in.Index([]byte("\n\n")); i != 5 {
		t.Fatalf("Index = %d, want 5", i)
	}
	if i := in.Index([]byte("nope")); i != -1 {
		t.Fatalf("Index of an absent sep = %d, want -1", i)
	}
	if got := string(in.Peek(2)); got != "th" {
		t.Fatalf("Peek(2) = %q", got)
	}
	for _, want := range []string{"three", ""} {
		line, ok := in.ReadLine(EOLCRLF)
		if !ok || string(line) != want || line == nil {
			t.Fatalf("ReadLine = %q (nil %v), %v; want %q, a non-nil line", line, line == nil, ok, want)
		}
	}
	if line, ok := in.ReadLine(EOLNUL); !ok || string(line) != "last" {
		t.Fatalf("ReadLine(EOLNUL) = %q, %v", line, ok)
	}
	if in.Len() != 0 || in.Peek(10) != nil {
		t.Fatalf("buffer holds %d bytes after every line, want none", in.Len())
	}
	if _, ok := in.ReadLine(EOLStyle(99)); ok {
		t.Fatal("ReadLine with an unknown style returned ok")
	}
	be.Close()
	if line, ok := in.ReadLine(EOLLF); ok || line != nil || in.Index([]byte("x")) != -1 || in.Peek(1) != nil {
		t.Fatal("a closed buffer returned data")
	}
}

// A connection whose output passes the write high watermark reports
// BEVEventOutputFull once; its write callback tells when it drained; a later
// rise is reported again.
func TestOutputBackPressure(t *testing.T) {
	checkNoLeaks(t)
	const high = 256 << 10
	drained := make(chan struct{}, 1)
	b, be, peer, full := backPressured(t, high, func(*BufferEvent) {
		select { // each drain to the low watermark calls it
		case drained <- struct{}{}:
		default:
		}
	})
	// One Write takes the output past high at once, whatever the socket
	// takes meanwhile.
	chunk := make([]byte, 4*high)
	rand.Read(chunk)
	if _, err := be.Write(chunk); err != nil {
		t.Fatal(err)
	}
	if what := recv(t, full, "BEVEventOutputFull"); what != BEVEventWriting|BEVEventOutputFull {
		t.Fatalf("event %v, want Writing|OutputFull", what)
	}
	// The peer has not read: the output is still above high, and a
	// Write while it is reports nothing new.
	if n := be.Output().Len(); n <= high {
		t.Fatalf("output %d bytes with an unread peer, want above %d (socket buffers too big for the test)", n, high)
	}
	be.Write(chunk[:1])
	got := make([]byte, len(chunk)+1)
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	recv(t, drained, "the write callback once the output drained")
	b.Do(func() {}) // anything the loop queued meanwhile has run
	if len(full) != 0 {
		t.Fatalf("OutputFull reported %d more times while the output stayed above high", len(full))
	}
	// Above high again: reported again.
	be.Write(chunk)
	recv(t, full, "the second BEVEventOutputFull")
	be.Close()
}

// Each style ends a line where evbuffer_readln does, and the terminator,
// all of it, is dropped.
func TestBufferReadLineStyles(t *testing.T) {
	be, peer := readingBEV(t)
	in := be.Input()
	for _, tc := range []struct {
		style      EOLStyle
		in         string
		line, rest string
	}{
		{EOLCRLF, "a\r\nb", "a", "b"},
		{EOLCRLF, "a\nb", "a", "b"},
		{EOLCRLF, "a\rb\n", "a\rb", ""},
		{EOLCRLFStrict, "a\r\nb", "a", "b"},
		{EOLCRLFStrict, "a\nb\r\n", "a\nb", ""},
		{EOLLF, "a\r\nb", "a\r", "b"},
		{EOLAny, "a\r\n\r\nb", "a", "b"},
		{EOLAny, "\n\ra\n", "", "a\n"},
		{EOLNUL, "a\x00b\n", "a", "b\n"},
	} {
		in.Drain(in.Len())
		peer.Write([]byte(tc.in))
		waitFor(t, "the input", func() bool { return in.Len() >= len(tc.in) })
		line, ok := in.ReadLine(tc.style)
		if rest := string(in.Peek(100)); !ok || string(line) != tc.line || rest != tc.rest {
			t.Errorf("ReadLine(%v) of %q = %q, %v, leaving %q; want %q, true, leaving %q", tc.style, tc.in, line, ok, rest, tc.line, tc.rest)
		}
	}
}

// The end of each buffer that only libevent moves answers with an error
// that says so.
func TestBufferFrozenEnds(t *testing.T) {
	b := newBase(t)
	fd, _ := tcpPair(t)
	be := newBEV(t, b, fd) // writing not enabled: the output stays
	in, out := be.Input(), be.Output()
	if _, err := out.Write([]byte("line\n")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		call string
		err  error
		want error
	}{
		{"Input().Write", second(in.Write([]byte("x"))), ErrInputEnd},
		{"Output().MoveTo(Input())", second(out.MoveTo(in)), ErrInputEnd},
		{"Output().Read", second(out.Read(make([]byte, 4))), ErrOutputFront},
		{"Output().Drain", out.Drain(1), ErrOutputFront},
		{"Output().AppendTo", second(out.AppendTo(nil)), ErrOutputFront},
		{"Output().AppendN", second(out.AppendN(nil, 1)), ErrOutputFront},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s = %v, want %v", tc.call, tc.err, tc.want)
		}
	}
	if line, ok := out.ReadLine(EOLLF); ok || line != nil {
		t.Errorf("Output().ReadLine = %q, %v; want nil, false", line, ok)
	}
	if line, ok := out.AppendLine(nil, EOLLF); ok || line != nil {
		t.Errorf("Output().AppendLine = %q, %v; want nil, false", line, ok)
	}
	if got, i := string(out.Peek(10)), out.Index([]byte("\n")); got != "line\n" || i != 4 {
		t.Errorf("Output().Peek, Index = %q, %d; want the output untouched and readable", got, i)
	}
	p := make([]byte, 3)
	if n, err := out.ReadAt(p, 1); n != 3 || err != nil || string(p) != "ine" || out.IndexFrom([]byte("\n"), 2) != 4 {
		t.Errorf("Output().ReadAt(3 bytes, 1), IndexFrom = %q, %v; want the output readable from an offset", p[:n], err)
	}
}

func second[T any](_ T, err error) error { return err }

func TestCloseAfterFlush(t *testing.T) {
	// flushing runs a buffer event with out in its output, calls setup,
	// then CloseAfterFlush(timeout); it returns the socket and its peer.
	flushing := func(t *testing.T, out []byte, timeout time.Duration, setup func(*BufferEvent, *net.TCPConn)) (int, *net.TCPConn) {
		t.Helper()
		checkNoLeaks(t)
		b := newBase(t)
		fd, peer := tcpPair(t)
		be := newBEV(t, b, fd)
		if setup != nil {
			setup(be, peer)
		}
		be.Write(out)
		startDispatch(t, b, atCleanup)
		if err := be.CloseAfterFlush(timeout); err != nil {
			t.Fatal(err)
		}
		return fd, peer
	}
	// readAll reads peer to EOF and fails unless it got exactly want.
	readAll := func(t *testing.T, peer *net.TCPConn, want []byte) {
		t.Helper()
		peer.SetReadDeadline(time.Now().Add(20 * time.Second))
		if got, err := io.ReadAll(peer); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("peer read %d of %d bytes, then %v; want all, then EOF", len(got), len(want), err)
		}
	}
	// sendUntilReset writes to peer until a write fails, or until stop,
	// when it shuts down its sending side; the goroutine reports on the
	// channel returned as it ends.
	sendUntilReset := func(peer *net.TCPConn, stop <-chan struct{}) <-chan error {
		ended := make(chan error, 1)
		go func() {
			chunk := make([]byte, 1024)
			for {
				select {
				case <-stop:
					ended <- peer.CloseWrite()
					return
				default:
				}
				if _, err := peer.Write(chunk); err != nil {
					ended <- err
					return
				}
			}
		}()
		return ended
	}
	random := func(n int) []byte {
		p := make([]byte, n)
		rand.Read(p)
		return p
	}

	t.Run("everything written, then closed", func(t *testing.T) {
		data := random(4 << 20)
		var be *BufferEvent
		_, peer := flushing(t, data, 0, func(b *BufferEvent, _ *net.TCPConn) { be = b })
		if err := be.Close(); !errors.Is(err, ErrClosed) || be.FD() != -1 {
			t.Fatalf("after CloseAfterFlush: Close = %v, FD = %d; want ErrClosed, -1", err, be.FD())
		}
		readAll(t, peer, data)
	})
	t.Run("the deadline closes what could not go", func(t *testing.T) {
		fd, peer := flushing(t, make([]byte, 64<<20), 50*time.Millisecond, nil) // far more than the socket buffers take
		// The peer never reads until the socket closes: then it reads
		// less than was written, and a reset or EOF.
		waitFor(t, "the socket to close at the deadline", func() bool { return !fdOpen(fd) })
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.Copy(io.Discard, peer)
		if n >= 64<<20 {
			t.Fatalf("peer read all %d bytes: the deadline did not cut the flush", n)
		}
	})
	t.Run("to a peer still sending: every byte arrives, then EOF", func(t *testing.T) {
		// Closing with input unread makes the kernel send a reset, which
		// discards what the peer has not read yet: the flush shuts down
		// the sending side and reads to the peer's EOF first.
		data := random(4 << 20)
		stop := make(chan struct{})
		var ended <-chan error
		fd, peer := flushing(t, data, 0, func(be *BufferEvent, peer *net.TCPConn) {
			be.Enable(EvRead)
			ended = sendUntilReset(peer, stop)
		})
		readAll(t, peer, data)
		close(stop)
		// Its writes may fail once it has everything: a peer that paused
		// had nothing left to lose (see lingerCheck).
		recv(t, ended, "the peer's writer")
		waitFor(t, "the socket to close after the peer's EOF", func() bool { return !fdOpen(fd) })
	})
	t.Run("a quiet peer: EOF after the output, closed once all is acknowledged", func(t *testing.T) {
		fd, peer := flushing(t, []byte("bye"), time.Hour, nil)
		readAll(t, peer, []byte("bye"))
		// Not an hour: a peer that sends nothing is not waited for.
		waitFor(t, "the socket to close", func() bool { return !fdOpen(fd) })
	})
	t.Run("a peer that does not take the output: the deadline ends the linger", func(t *testing.T) {
		// All of it fits in the kernel's send queue, so the linger
		// starts, but little fits in the peer's: the peer never
		// acknowledges it all.
		out := random(256 << 10)
		fd, _ := flushing(t, out, 100*time.Millisecond, func(be *BufferEvent, peer *net.TCPConn) {
			syscall.SetsockoptInt(be.FD(), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 1<<20)
			peer.SetReadBuffer(4 << 10)
		})
		waitFor(t, "the socket to close at the deadline", func() bool { return !fdOpen(fd) })
		// The kernel goes on sending what it holds: a close with nothing
		// unread is no reset.
	})
	t.Run("writes down to empty, whatever the write low watermark", func(t *testing.T) {
		data := random(4 << 20)
		_, peer := flushing(t, data, 0, func(be *BufferEvent, _ *net.TCPConn) {
			if err := be.SetWatermark(EvWrite, 1<<20, 0); err != nil {
				t.Fatal(err)
			}
		})
		readAll(t, peer, data)
	})
	t.Run("during a pending connect: the output goes once connected", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		ln := listen(t)
		be, err := NewBufferEvent(b, -1, BEVOptCloseOnFree)
		if err != nil {
			t.Fatal(err)
		}
		// As a user writes it: all before Dispatch, on this goroutine.
		if err := errors.Join(be.Connect("tcp", ln.Addr().String()), be.Enable(EvRead|EvWrite)); err != nil {
			t.Fatal(err)
		}
		be.Write([]byte("hello"))
		if err := be.CloseAfterFlush(0); err != nil {
			t.Fatal(err)
		}
		startDispatch(t, b, atCleanup)
		c := acceptConn(t, ln)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, err := io.ReadAll(c); err != nil || string(got) != "hello" {
			t.Fatalf("peer read %q, %v; want \"hello\", then EOF", got, err)
		}
	})
	t.Run("Base.Close ends a flush", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		fd, _ := tcpPair(t)
		be := newBEV(t, b, fd)
		be.Write(make([]byte, 64<<20))
		if err := be.CloseAfterFlush(0); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if fdOpen(fd) {
			t.Fatal("the socket of a flushing buffer event survived Base.Close")
		}
	})
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
