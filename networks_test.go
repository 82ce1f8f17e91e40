package evlistener

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestNetworks(t *testing.T) {
	// serveOnce accepts one client, checks its address type, writes
	// "hi" and closes; then disables the listener.
	serveOnce := func(t *testing.T, peer *net.Addr) AcceptFunc {
		return func(l *Listener, fd int, addr net.Addr) {
			*peer = addr
			syscall.Write(fd, []byte("hi"))
			syscall.Close(fd)
			l.Disable()
		}
	}

	t.Run("unix socket path, removed on Close with CloseOnFree", func(t *testing.T) {
		b := newBase(t)
		path := t.TempDir() + "/s"
		var peer net.Addr
		l, err := NewBind(b, serveOnce(t, &peer), CloseOnFree, -1, "unix", path)
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, l)
		if a, ok := l.Addr().(*net.UnixAddr); !ok || a.Name != path || a.Net != "unix" {
			t.Fatalf("Addr() = %#v", l.Addr())
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("stat %s: %v, %v", path, fi, err)
		}
		c := dial(t, l.Addr())
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if _, ok := peer.(*net.UnixAddr); !ok {
			t.Fatalf("peer address %#v, want *net.UnixAddr", peer)
		}
		if got := readAll(t, c); got != "hi" {
			t.Fatalf("client read %q", got)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket file after Close: %v", err)
		}
	})

	t.Run("unix socket path in use", func(t *testing.T) {
		b := newBase(t)
		path := t.TempDir() + "/s"
		l := listenUnix(t, b, path)
		_, err := NewBind(b, nil, CloseOnFree, -1, "unix", path)
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("second bind on %s: %v, want EADDRINUSE", path, err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("a failed bind removed the socket of %v: %v", l.Addr(), err)
		}
	})

	t.Run("abstract unix socket", func(t *testing.T) {
		b := newBase(t)
		name := fmt.Sprintf("@evlistener-test-%d-%d", os.Getpid(), time.Now().UnixNano())
		var peer net.Addr
		l, err := NewBind(b, serveOnce(t, &peer), CloseOnFree, -1, "unix", name)
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, l)
		if l.Addr().String() != name {
			t.Fatalf("Addr() = %q, want %q", l.Addr(), name)
		}
		c := dial(t, l.Addr())
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, c); got != "hi" {
			t.Fatalf("client read %q", got)
		}
		addr := l.Addr()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		refused(t, addr)
	})

	t.Run("IPv6 loopback", func(t *testing.T) {
		b := newBase(t)
		var peer net.Addr
		l, err := NewBind(b, serveOnce(t, &peer), CloseOnFree, -1, "tcp6", "[::1]:0")
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, l)
		la, ok := l.Addr().(*net.TCPAddr)
		if !ok || !la.IP.Equal(net.IPv6loopback) || la.Port == 0 {
			t.Fatalf("Addr() = %v", l.Addr())
		}
		c := dial(t, l.Addr())
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if pa, ok := peer.(*net.TCPAddr); !ok || !pa.IP.Equal(net.IPv6loopback) || pa.Port != c.LocalAddr().(*net.TCPAddr).Port {
			t.Fatalf("peer address %v, client %v", peer, c.LocalAddr())
		}
		if got := readAll(t, c); got != "hi" {
			t.Fatalf("client read %q", got)
		}
	})

	t.Run("IPv4 peer address", func(t *testing.T) {
		b := newBase(t)
		var peer net.Addr
		l := listenTCP(t, b, serveOnce(t, &peer), 0)
		c := dial(t, l.Addr())
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if peer.String() != c.LocalAddr().String() {
			t.Fatalf("peer address %v, client %v", peer, c.LocalAddr())
		}
	})
}

func listenUnix(t testing.TB, b *Base, path string) *Listener {
	t.Helper()
	l, err := NewBind(b, nil, CloseOnFree, -1, "unix", path)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, l)
	return l
}

func TestBacklog(t *testing.T) {
	somaxconn := 4096
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		fmt.Sscan(string(b), &somaxconn)
	}
	for _, tc := range []struct {
		backlog, want int
	}{
		{-1, 128}, // libevent's default
		{-5, 128},
		{7, 7},
		{1 << 40, somaxconn}, // must not wrap around to 0 in the C int
	} {
		t.Run(fmt.Sprintf("NewBind backlog %d", tc.backlog), func(t *testing.T) {
			b := newBase(t)
			l, err := NewBind(b, nil, CloseOnFree, tc.backlog, "tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			closeAtEnd(t, l)
			if got := listenBacklog(t, l.Addr().(*net.TCPAddr)); got != tc.want {
				t.Fatalf("listen backlog %d, want %d", got, tc.want)
			}
		})
	}

	t.Run("NewBind backlog 0 is an error that says why", func(t *testing.T) {
		b := newBase(t)
		checkNoLeaks(t)
		l, err := NewBind(b, nil, CloseOnFree, 0, "tcp", "127.0.0.1:0")
		if err == nil {
			l.Close()
			t.Fatal("NewBind with backlog 0 succeeded")
		}
		if !strings.Contains(err.Error(), "backlog") {
			t.Fatalf("error %q does not mention the backlog", err)
		}
	})

	// New with backlog 0 calls no listen(): the socket keeps the
	// backlog it listens with. A backlog > 0 calls listen() again.
	for _, tc := range []struct{ backlog, want int }{{0, 3}, {9, 9}, {-1, 128}} {
		t.Run(fmt.Sprintf("New backlog %d on a listening socket", tc.backlog), func(t *testing.T) {
			b := newBase(t)
			fd := listeningSocket(t, 3)
			n := 0
			l, err := New(b, func(l *Listener, cfd int, _ net.Addr) {
				n++
				syscall.Close(cfd)
				l.Disable()
			}, CloseOnFree, tc.backlog, fd)
			if err != nil {
				syscall.Close(fd)
				t.Fatal(err)
			}
			closeAtEnd(t, l)
			if got := listenBacklog(t, l.Addr().(*net.TCPAddr)); got != tc.want {
				t.Fatalf("listen backlog %d, want %d", got, tc.want)
			}
			dial(t, l.Addr())
			if err := startDispatch(t, b, whenIdle).wait(t); err != nil || n != 1 {
				t.Fatalf("Dispatch = %v with %d accepts", err, n)
			}
		})
	}
}

// New takes a socket that net.Listen made, through File's dup.
func TestNewFromNetListener(t *testing.T) {
	for _, backlog := range []int{0, -1} {
		t.Run(fmt.Sprintf("backlog %d", backlog), func(t *testing.T) {
			b := newBase(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f, err := ln.(*net.TCPListener).File()
			ln.Close() // the dup keeps the socket listening
			if err != nil {
				t.Fatal(err)
			}
			fd, err := syscall.Dup(int(f.Fd())) // Fd made it blocking
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			var peer net.Addr
			l, err := New(b, func(l *Listener, cfd int, addr net.Addr) {
				peer = addr
				syscall.Write(cfd, []byte("hi"))
				syscall.Close(cfd)
				l.Disable()
			}, CloseOnFree, backlog, fd)
			if err != nil {
				syscall.Close(fd)
				t.Fatal(err)
			}
			closeAtEnd(t, l)
			if l.FD() != fd || l.Addr().String() != ln.Addr().String() {
				t.Fatalf("FD() = %d, Addr() = %v; want %d, %v", l.FD(), l.Addr(), fd, ln.Addr())
			}
			if nonblock, _, _ := fdModes(fd); !nonblock {
				t.Fatal("New left the socket blocking; libevent's accept loop would block in accept()")
			}
			c := dial(t, l.Addr())
			if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, c); got != "hi" || peer.String() != c.LocalAddr().String() {
				t.Fatalf("client read %q; peer %v, client %v", got, peer, c.LocalAddr())
			}
			addr := l.Addr()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			refused(t, addr) // CloseOnFree closed the dup, the last reference
		})
	}
}

// listenBacklog asks the kernel, through sock_diag as `ss -l` does, for the
// accept-queue limit of the IPv4 TCP listener bound to addr.
func listenBacklog(t testing.TB, addr *net.TCPAddr) int {
	t.Helper()
	const (
		netlinkSockDiag   = 4
		sockDiagByFamily  = 20
		tcpListen         = 10
		nlmsgHdrLen       = 16
		inetDiagReqV2Len  = 56
		inetDiagMsgSport  = 4  // offset of id.idiag_sport
		inetDiagMsgWqueue = 60 // offset of idiag_wqueue: sk_max_ack_backlog
	)
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, netlinkSockDiag)
	if err != nil {
		t.Fatal(os.NewSyscallError("socket", err))
	}
	defer syscall.Close(fd)
	req := make([]byte, nlmsgHdrLen+inetDiagReqV2Len)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1)
	req[16] = syscall.AF_INET
	req[17] = syscall.IPPROTO_TCP
	ne.PutUint32(req[20:], 1<<tcpListen)
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		t.Fatal(os.NewSyscallError("sendto", err))
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatal(os.NewSyscallError("recvfrom", err))
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				t.Fatalf("no TCP listener on %v in sock_diag", addr)
			case syscall.NLMSG_ERROR:
				t.Fatalf("sock_diag: %v", syscall.Errno(-int32(ne.Uint32(m.Data))))
			}
			if len(m.Data) < inetDiagMsgWqueue+4 {
				continue
			}
			if int(binary.BigEndian.Uint16(m.Data[inetDiagMsgSport:])) == addr.Port {
				return int(ne.Uint32(m.Data[inetDiagMsgWqueue:]))
			}
		}
	}
}
