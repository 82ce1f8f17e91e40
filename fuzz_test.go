package evlistener

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/evlistener/evlistener/internal/ctest"
)

// Fuzzing of what users pass at creation: NewBind's network and address
// strings, and the flags, backlog and socket state that New and NewBind
// take. Whatever the input, the call returns an error or a listener that
// accepts; nothing panics, hangs or leaves a descriptor or handle behind.
// The seed corpus is in testdata/fuzz; `make fuzz` explores from it.

// fuzzAcceptWait bounds how long a probe waits for a connection that must
// be accepted.
const fuzzAcceptWait = 5 * time.Second

func FuzzNewBind(f *testing.F) {
	dir := f.TempDir() // socket files; each input must leave it empty
	f.Fuzz(func(t *testing.T, network, address string) {
		bind, ok := fuzzBindable(network, address, dir)
		checkNoLeaks(t)
		b, err := NewBase()
		if err != nil {
			t.Fatal(err)
		}
		bound := false
		if ok {
			l, err := NewBind(b, nil, CloseOnFree, -1, network, bind)
			if err == nil {
				bound = true
				probeListener(t, b, l, 0)
				closeListener(t, l)
			} else {
				checkListenError(t, err)
			}
		} else if bind != "" {
			// Resolvable but not to be bound here: the parse must not
			// panic, and NewBind must agree with it where it fails.
			if _, rerr := resolveSockaddr(network, bind); rerr != nil {
				l, err := NewBind(b, nil, CloseOnFree, -1, network, bind)
				if err == nil {
					l.Close()
					t.Fatalf("NewBind(%q, %q) succeeded where resolveSockaddr failed: %v", network, bind, rerr)
				}
				checkListenError(t, err)
			}
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if network == "unix" && bound && !strings.HasPrefix(bind, "@") {
			if _, err := os.Lstat(bind); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket file %q still there after Close with CloseOnFree (%v)", bind, err)
			}
		}
	})
}

// fuzzBindable decides what a fuzz input may do on this machine. It returns
// the address to bind and true when binding it is harmless: a loopback TCP
// address with port 0, an abstract unix name, or a plain unix file name,
// which is put in dir. Otherwise it returns the address for resolveSockaddr
// alone, or "" when even resolving could leave the machine: host names
// would go to DNS.
func fuzzBindable(network, address, dir string) (string, bool) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		host, port, err := net.SplitHostPort(address)
		if err == nil && host != "" && host != "localhost" {
			ip, _, _ := strings.Cut(host, "%")
			if net.ParseIP(ip) == nil {
				return "", false
			}
		}
		if err != nil || port != "0" {
			return address, false
		}
		ba, err := resolveSockaddr(network, address)
		if err != nil {
			return address, false
		}
		return address, ba.addr.(*net.TCPAddr).IP.IsLoopback()
	case "unix":
		if strings.HasPrefix(address, "@") {
			return address, true
		}
		if address == "" || address == "." || address == ".." || strings.ContainsRune(address, '/') {
			return address, false
		}
		return filepath.Join(dir, address), true
	}
	return address, false
}

func FuzzListenerOptions(f *testing.F) {
	f.Fuzz(func(t *testing.T, useNew bool, flags uint, backlog int, listening, ipv6 bool) {
		// Bits 0-8 are libevent 2.1's flags and bit 9 the first it
		// lacks (2.2's LEV_OPT_BIND_IPV4_AND_IPV6); higher bits would
		// only test the same rejection again.
		flag := Flag(flags) & (knownFlags<<1 | 1)
		ipv6 = ipv6 && supportsIPv6()
		checkNoLeaks(t)
		b, err := NewBase()
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
		}()

		var l *Listener
		fd := -1
		if useNew {
			fd = fuzzSocket(t, ipv6, listening)
			l, err = New(b, nil, flag, backlog, fd)
		} else {
			addr := "127.0.0.1:0"
			if ipv6 {
				addr = "[::1]:0"
			}
			l, err = NewBind(b, nil, flag, backlog, "tcp", addr)
		}
		wantErr := ""
		switch {
		case flag&^knownFlags != 0:
			wantErr = "unknown flags"
		case backlog == 0 && !useNew:
			wantErr = "NewBind with backlog 0"
		case flag&BindIPv6Only != 0 && !useNew && !ipv6:
			wantErr = "IPV6_V6ONLY on an IPv4 socket" // ENOPROTOOPT
		}
		if wantErr != "" {
			if err == nil {
				l.Close()
				t.Fatalf("%s: no error", wantErr)
			}
			checkListenError(t, err)
			if fd >= 0 && !fdOpen(fd) {
				t.Fatalf("%s: New closed the caller's socket", wantErr)
			}
			syscall.Close(fd)
			return
		}
		if err != nil {
			syscall.Close(fd)
			t.Fatalf("New=%v flags %v backlog %d: %v", useNew, flag, backlog, err)
		}
		if useNew && backlog == 0 && !listening {
			probeNotListening(t, b, l, flag)
		} else {
			if !useNew {
				checkBindOptions(t, l.FD(), flag, ipv6)
			}
			probeListener(t, b, l, flag)
		}
		lfd := l.FD()
		closeListener(t, l)
		if open := fdOpen(lfd); open == (flag&CloseOnFree != 0) {
			t.Errorf("flags %v: listening socket open after Close: %v", flag, open)
		}
		if flag&CloseOnFree == 0 {
			syscall.Close(lfd) // the caller's, as documented
		}
	})
}

// fuzzSocket returns a bound loopback TCP socket for New, listening or not.
func fuzzSocket(t *testing.T, ipv6, listening bool) int {
	t.Helper()
	family := syscall.AF_INET
	var sa syscall.Sockaddr = &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if ipv6 {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Addr: [16]byte{15: 1}}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if listening {
		if err := syscall.Listen(fd, 16); err != nil {
			syscall.Close(fd)
			t.Fatal(err)
		}
	}
	return fd
}

// checkListenError checks the shape every creation error has: a
// *net.OpError for "listen".
func checkListenError(t *testing.T, err error) {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "listen" {
		t.Fatalf("error %v (%T) is not a listen *net.OpError", err, err)
	}
}

// checkBindOptions checks the socket options NewBind sets from flags.
func checkBindOptions(t *testing.T, fd int, flags Flag, ipv6 bool) {
	t.Helper()
	checks := []struct {
		name       string
		level, opt int
		flag       Flag
		ipv6       bool // an IPv6 option, and only set-when-asked is portable:
		// gVisor reports IPV6_V6ONLY on a socket bound to ::1 either way
	}{
		{"SO_REUSEADDR", syscall.SOL_SOCKET, syscall.SO_REUSEADDR, Reuseable, false},
		{"SO_REUSEPORT", syscall.SOL_SOCKET, 0xf, ReuseablePort, false},
		{"TCP_DEFER_ACCEPT", syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, DeferredAccept, false},
		{"IPV6_V6ONLY", syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, BindIPv6Only, true},
	}
	for _, c := range checks {
		want := flags&c.flag != 0
		if c.ipv6 && (!ipv6 || !want) {
			continue
		}
		if got := sockoptInt(t, fd, c.level, c.opt) != 0; got != want {
			t.Errorf("flags %v: %s is %v, want %v", flags, c.name, got, want)
		}
	}
	_, cloexec, err := fdModes(fd)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cloexec, flags&CloseOnExec != 0; got != want {
		t.Errorf("flags %v: listening socket close-on-exec %v, want %v", flags, got, want)
	}
}

// acceptedSocket is what a probe's accept callback saw.
type acceptedSocket struct {
	addr              net.Addr
	nonblock, cloexec bool
	err               error
}

// probeListener checks that l accepts: a client connects and sends a byte
// (DeferredAccept reports connections only then), the listener is enabled
// if it was created disabled, and Dispatch runs until the callback has the
// socket, whose modes must follow flags.
func probeListener(t *testing.T, b *Base, l *Listener, flags Flag) {
	t.Helper()
	addr := l.Addr()
	if addr == nil {
		t.Fatal("Addr() is nil on an open listener")
	}
	if ta, ok := addr.(*net.TCPAddr); ok && ta.Port == 0 {
		t.Fatalf("Addr() %v has port 0", addr)
	}
	c, err := net.DialTimeout(addr.Network(), addr.String(), fuzzAcceptWait)
	if err != nil {
		t.Fatalf("dial %v: %v", addr, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	var got []acceptedSocket
	l.SetCallback(func(l *Listener, fd int, peer net.Addr) {
		a := acceptedSocket{addr: peer}
		a.nonblock, a.cloexec, a.err = fdModes(fd)
		got = append(got, a)
		syscall.Close(fd)
		l.Base().LoopBreak()
	})
	dispatchProbe(t, b, l, flags)
	if len(got) != 1 {
		t.Fatalf("listener %v (flags %v): %d connections accepted within %v, want 1", addr, flags, len(got), fuzzAcceptWait)
	}
	a := got[0]
	if a.err != nil {
		t.Fatalf("accepted socket: %v", a.err)
	}
	if a.addr == nil || a.addr.Network() != addr.Network() {
		t.Errorf("peer address %v (%T) for a %s listener", a.addr, a.addr, addr.Network())
	}
	if want := flags&LeaveSocketsBlocking == 0; a.nonblock != want {
		t.Errorf("flags %v: accepted socket non-blocking %v, want %v", flags, a.nonblock, want)
	}
	if want := flags&CloseOnExec != 0; a.cloexec != want {
		t.Errorf("flags %v: accepted socket close-on-exec %v, want %v", flags, a.cloexec, want)
	}
}

// probeNotListening checks a listener whose socket New was told already
// listens, but does not: clients are refused, and the accept that fails
// (EINVAL) reaches the error callback and ends in a back-off, not a hang.
func probeNotListening(t *testing.T, b *Base, l *Listener, flags Flag) {
	t.Helper()
	c, err := net.DialTimeout("tcp", l.Addr().String(), fuzzAcceptWait)
	if err == nil {
		c.Close()
		t.Fatalf("dial %v: connected to a socket that does not listen", l.Addr())
	}
	var errs []error
	l.SetCallback(func(l *Listener, fd int, addr net.Addr) {
		syscall.Close(fd)
		t.Errorf("accepted a connection from %v on a socket that does not listen", addr)
	})
	l.SetErrorCallback(func(l *Listener, err error) {
		errs = append(errs, err)
		l.Base().LoopBreak()
	})
	dispatchProbe(t, b, l, flags)
	if len(errs) != 1 || !errors.Is(errs[0], syscall.EINVAL) {
		t.Fatalf("error callbacks %v, want one EINVAL", errs)
	}
}

// dispatchProbe enables l if flags left it disabled and runs b's loop on
// this goroutine (each input of a fuzz target runs one: a goroutine and a
// wait for it to start would cost more than the probe) until a callback
// ends it with LoopBreak, for fuzzAcceptWait at most.
func dispatchProbe(t *testing.T, b *Base, l *Listener, flags Flag) {
	t.Helper()
	if flags&Disabled != 0 {
		if err := l.Enable(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.LoopExit(fuzzAcceptWait); err != nil {
		t.Fatal(err)
	}
	if err := b.Dispatch(); err != nil {
		t.Fatal(err)
	}
}

// closeListener closes l and checks what a closed listener reports.
func closeListener(t *testing.T, l *Listener) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
	if fd, addr := l.FD(), l.Addr(); fd != -1 || addr != nil {
		t.Errorf("closed listener: FD() %d, Addr() %v; want -1, nil", fd, addr)
	}
}

// FuzzSockaddrToAddr feeds the copy of the peer address that every accept
// makes arbitrary bytes, in C memory of exactly the length libevent would
// report: it must never read past it (make asan and make fuzz run this
// under AddressSanitizer), and what it returns must say what the bytes say.
func FuzzSockaddrToAddr(f *testing.F) {
	f.Fuzz(func(t *testing.T, sa []byte) {
		var got net.Addr
		ctest.WithCBytes(sa, func(p unsafe.Pointer) { got = sockaddrToAddr(p, len(sa)) })
		if len(sa) < 2 {
			if got != nil {
				t.Fatalf("%d bytes gave %v", len(sa), got)
			}
			return
		}
		family := binary.NativeEndian.Uint16(sa)
		switch a := got.(type) {
		case nil:
			if family == syscall.AF_UNIX ||
				family == syscall.AF_INET && len(sa) >= syscall.SizeofSockaddrInet4 ||
				family == syscall.AF_INET6 && len(sa) >= syscall.SizeofSockaddrInet6 {
				t.Fatalf("family %d, %d bytes: no address", family, len(sa))
			}
		case *net.TCPAddr:
			var ip []byte
			switch family {
			case syscall.AF_INET:
				ip = sa[4:8]
			case syscall.AF_INET6:
				ip = sa[8:24]
			default:
				t.Fatalf("family %d gave %v", family, a)
			}
			if port := int(binary.BigEndian.Uint16(sa[2:])); !bytes.Equal(a.IP, ip) || a.Port != port {
				t.Fatalf("%x: got %v, want IP %x port %d", sa, a, ip, port)
			}
		case *net.UnixAddr:
			if family != syscall.AF_UNIX {
				t.Fatalf("family %d gave %v", family, a)
			}
			path := sa[2:min(len(sa), 2+108)]
			want := string(path)
			if len(path) > 0 && path[0] == 0 {
				want = "@" + string(path[1:])
			}
			if i := strings.IndexByte(want, 0); i >= 0 {
				want = want[:i]
			}
			if a.Name != want {
				t.Fatalf("%x: got %q, want %q", sa, a.Name, want)
			}
		default:
			t.Fatalf("%T", got)
		}
	})
}
