package evlistener

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
)

// Bad input returns an error shaped like net's, never a panic, and leaks
// no descriptor.
func TestBadInput(t *testing.T) {
	b := newBase(t)
	closed, err := NewBase()
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	pipe := make([]int, 2)
	if err := syscall.Pipe2(pipe, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(pipe[0])
	defer syscall.Close(pipe[1])
	udp, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(udp)
	pair := socketpair(t)
	defer syscall.Close(pair[0])
	defer syscall.Close(pair[1])
	taken := listenTCP(t, b, nil, 0)
	long := "/tmp/" + strings.Repeat("x", 200)
	cb := func(_ *Listener, fd int, _ net.Addr) { syscall.Close(fd) }

	bind := func(b *Base, flags Flag, backlog int, network, address string) func() (*Listener, error) {
		return func() (*Listener, error) { return NewBind(b, cb, flags, backlog, network, address) }
	}
	wrap := func(b *Base, flags Flag, backlog, fd int) func() (*Listener, error) {
		return func() (*Listener, error) { return New(b, cb, flags, backlog, fd) }
	}
	for _, tc := range []struct {
		name string
		call func() (*Listener, error)
		net  string // the OpError's Net, if it must have one
		addr string // the OpError's Addr, if it must have one
		is   error  // what errors.Is must find, if anything
		msg  string // what Error() must mention
	}{
		{name: "NewBind nil base", call: bind(nil, 0, -1, "tcp", "127.0.0.1:0"), msg: "nil base"},
		{name: "New nil base", call: wrap(nil, 0, 0, pair[0]), msg: "nil base"},
		{name: "closed base", call: bind(closed, CloseOnFree, -1, "tcp", "127.0.0.1:0"), is: ErrClosed},
		{name: "New on a closed base", call: wrap(closed, 0, 0, pair[0]), is: ErrClosed},
		{name: "unknown network", call: bind(b, 0, -1, "udp", "127.0.0.1:0"), net: "udp", msg: "udp"},
		{name: "empty network", call: bind(b, 0, -1, "", "127.0.0.1:0"), msg: "network"},
		{name: "address without port", call: bind(b, 0, -1, "tcp", "127.0.0.1"), net: "tcp", msg: "port"},
		{name: "bad IP", call: bind(b, 0, -1, "tcp", "1.2.3.4.5:80"), net: "tcp"},
		{name: "too many colons", call: bind(b, 0, -1, "tcp", "127.0.0.1:80:80"), net: "tcp", msg: "colons"},
		{name: "unknown service", call: bind(b, 0, -1, "tcp", "127.0.0.1:no-such-service"), net: "tcp", msg: "port"},
		{name: "unclosed bracket", call: bind(b, 0, -1, "tcp6", "[::1:80"), net: "tcp6"},
		{name: "unresolvable host", call: bind(b, 0, -1, "tcp", "no-such-host..invalid:80"), net: "tcp"},
		{name: "port out of range", call: bind(b, 0, -1, "tcp", "127.0.0.1:65536"), net: "tcp"},
		{name: "negative port", call: bind(b, 0, -1, "tcp", "127.0.0.1:-1"), net: "tcp"},
		{name: "IPv6 address on tcp4", call: bind(b, 0, -1, "tcp4", "[::1]:0"), net: "tcp4"},
		{name: "port in use", call: bind(b, 0, -1, "tcp", taken.Addr().String()), net: "tcp", addr: taken.Addr().String(), is: syscall.EADDRINUSE},
		{name: "address not local", call: bind(b, 0, -1, "tcp", "192.0.2.1:0"), net: "tcp", addr: "192.0.2.1:0", is: syscall.EADDRNOTAVAIL},
		{name: "empty unix path", call: bind(b, 0, -1, "unix", ""), net: "unix"},
		{name: "unix path too long", call: bind(b, 0, -1, "unix", long), net: "unix", msg: "long"},
		{name: "unix path with NUL", call: bind(b, 0, -1, "unix", "/tmp/a\x00b"), net: "unix"},
		{name: "unix path in a missing directory", call: bind(b, 0, -1, "unix", "/nonexistent/dir/s"), net: "unix", is: syscall.ENOENT},
		{name: "NewBind backlog 0", call: bind(b, 0, 0, "tcp", "127.0.0.1:0"), net: "tcp", msg: "backlog"},
		{name: "NewBind unknown flags", call: bind(b, 1<<9, -1, "tcp", "127.0.0.1:0"), net: "tcp", msg: "0x200"},
		{name: "New unknown flags", call: wrap(b, CloseOnFree|1<<20, -1, listeningSocketFor(t)), net: "tcp", msg: "0x100000"},
		{name: "New fd -1", call: wrap(b, 0, -1, -1), is: syscall.EBADF},
		{name: "New closed fd", call: wrap(b, 0, -1, closedFD(t)), is: syscall.EBADF},
		{name: "New pipe fd", call: wrap(b, 0, -1, pipe[0]), is: syscall.ENOTSOCK},
		{name: "New datagram socket", call: wrap(b, 0, -1, udp), msg: "stream"},
		{name: "New connected socket", call: wrap(b, CloseOnFree, -1, pair[0]), net: "unix", is: syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			var l *Listener
			var err error
			func() {
				defer func() {
					if v := recover(); v != nil {
						t.Fatalf("panicked: %v", v)
					}
				}()
				l, err = tc.call()
			}()
			if err == nil {
				l.Close()
				t.Fatal("no error")
			}
			t.Log(err)
			if l != nil {
				t.Fatalf("a listener with the error %v", err)
			}
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "listen" {
				t.Fatalf("error %#v (%v), want a *net.OpError for listen", err, err)
			}
			if tc.net != "" && oe.Net != tc.net {
				t.Errorf("Net = %q, want %q", oe.Net, tc.net)
			}
			if tc.addr != "" && (oe.Addr == nil || oe.Addr.String() != tc.addr) {
				t.Errorf("Addr = %v, want %s", oe.Addr, tc.addr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
	// A failed New leaves the caller's socket open, CloseOnFree or not.
	if !fdOpen(pair[0]) {
		t.Fatal("a failed New closed the caller's socket")
	}
}

// listeningSocketFor returns a listening socket closed when the test ends.
func listeningSocketFor(t *testing.T) int {
	fd := listeningSocket(t, 1)
	t.Cleanup(func() { syscall.Close(fd) })
	return fd
}

// closedFD returns a descriptor number that is not open.
func closedFD(t *testing.T) int {
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	return fd
}
