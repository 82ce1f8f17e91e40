package evlistener

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"unsafe"
)

// connKind is one way of accepting with the connection's object made in C;
// the tests run on both.
type connKind struct {
	name string
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
	{"Event", func(t testing.TB, l *Listener, onAccept func(connObject)) error {
		opts := EventOptions{OnEvent: echoEvent(make([]byte, 4096))}
		if onAccept != nil {
			opts.OnAccept = func(_ *Listener, ev *Event) { onAccept(ev) }
		}
		return l.AcceptEvents(opts)
	}},
	{"BufferEvent", func(t testing.TB, l *Listener, onAccept func(connObject)) error {
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
	if n, err := syscall.Read(fd, c.buf[:]); n != 1 {
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
			dispatching(t, b)
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
				if err := o.Close(); err != ErrClosed {
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
