package evlistener

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"

	"github.com/evlistener/evlistener/internal/ctest"
)

func TestFlagString(t *testing.T) {
	for _, tc := range []struct {
		f    Flag
		want string
	}{
		{0, "0"},
		{LeaveSocketsBlocking, "LeaveSocketsBlocking"},
		{CloseOnFree, "CloseOnFree"},
		{CloseOnExec, "CloseOnExec"},
		{Reuseable, "Reuseable"},
		{ThreadSafe, "ThreadSafe"},
		{Disabled, "Disabled"},
		{DeferredAccept, "DeferredAccept"},
		{ReuseablePort, "ReuseablePort"},
		{BindIPv6Only, "BindIPv6Only"},
		{CloseOnFree | Reuseable, "CloseOnFree|Reuseable"},
		{Reuseable | CloseOnFree, "CloseOnFree|Reuseable"}, // bit order, not call order
		{1<<9 - 1, "LeaveSocketsBlocking|CloseOnFree|CloseOnExec|Reuseable|ThreadSafe|Disabled|DeferredAccept|ReuseablePort|BindIPv6Only"},
		{1 << 9, "0x200"}, // LEV_OPT_BIND_IPV4_AND_IPV6 is libevent 2.2 only
		{CloseOnFree | 1<<12 | 1<<9, "CloseOnFree|0x1200"},
		{^Flag(0), "LeaveSocketsBlocking|CloseOnFree|CloseOnExec|Reuseable|ThreadSafe|Disabled|DeferredAccept|ReuseablePort|BindIPv6Only|0x" + strconv.FormatUint(uint64(^Flag(0)>>9<<9), 16)},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("Flag(%#x).String() = %q, want %q", uint(tc.f), got, tc.want)
		}
	}
}

// Each set's constants come from libevent's headers; what a typo there
// (two constants from one macro) or a constant without a name would break:
// every named bit is one bit of its own, and the set of known bits is
// exactly the named ones.
func TestBitSets(t *testing.T) {
	check := func(set string, known uint64, bits []uint64) {
		t.Helper()
		var seen uint64
		for _, b := range bits {
			if b == 0 || b&(b-1) != 0 {
				t.Errorf("%s: %#x is not a single bit", set, b)
			}
			if seen&b != 0 {
				t.Errorf("%s: bit %#x named twice", set, b)
			}
			seen |= b
		}
		if seen != known {
			t.Errorf("%s: named bits %#x, known bits %#x", set, seen, known)
		}
	}
	check("Flag", uint64(knownFlags), namedBits(flagNames))
	check("BaseFlag", uint64(knownBaseFlags), namedBits(baseFlagNames))
	check("BEVOption", uint64(knownBEVOptions), namedBits(bevOptionNames))
	check("Events", uint64(knownEvents), namedBits(eventNames))
	var bevKnown BEVEvent = BEVEventReading | BEVEventWriting | BEVEventEOF | BEVEventError | BEVEventTimeout | BEVEventConnected | BEVEventOutputFull
	check("BEVEvent", uint64(bevKnown), namedBits(bevEventNames))
	for _, tc := range []struct {
		s, want string
	}{
		{BaseNoLock.String(), "BaseNoLock"},
		{(BaseNoLock | BasePreciseTimer | 0x400).String(), "BaseNoLock|BasePreciseTimer|0x400"},
		{(BEVOptCloseOnFree | BEVOptDeferCallbacks).String(), "BEVOptCloseOnFree|BEVOptDeferCallbacks"},
		{(BEVEventReading | BEVEventEOF).String(), "BEVEventReading|BEVEventEOF"},
		{Events(-1).String(), "EvTimeout|EvRead|EvWrite|EvPersist|EvET|EvClosed|0xff48"},
		{Events(0).String(), "0"},
	} {
		if tc.s != tc.want {
			t.Errorf("String() = %q, want %q", tc.s, tc.want)
		}
	}
}

func namedBits[T bits](names []bitName[T]) []uint64 {
	var out []uint64
	for _, n := range names {
		out = append(out, uint64(n.bit))
	}
	return out
}

// What each flag does to the sockets, checked on the sockets themselves.
func TestFlagEffects(t *testing.T) {
	// Accepted sockets: O_NONBLOCK unless LeaveSocketsBlocking,
	// FD_CLOEXEC with CloseOnExec; checked inside the callback.
	for _, tc := range []struct {
		flags              Flag
		nonblock, cloexec  bool
		listenCloexecCheck bool
	}{
		{0, true, false, false},
		{LeaveSocketsBlocking, false, false, false},
		{CloseOnExec, true, true, true},
		{LeaveSocketsBlocking | CloseOnExec, false, true, true},
	} {
		name := "accepted socket with " + tc.flags.String()
		if tc.flags == 0 {
			name = "accepted socket by default"
		}
		t.Run(name, func(t *testing.T) {
			b := newBase(t)
			var nonblock, cloexec bool
			var modeErr error
			l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
				nonblock, cloexec, modeErr = fdModes(fd)
				syscall.Close(fd)
				l.Disable()
			}, tc.flags)
			dial(t, l.Addr())
			if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
				t.Fatal(err)
			}
			if modeErr != nil {
				t.Fatal(modeErr)
			}
			if nonblock != tc.nonblock || cloexec != tc.cloexec {
				t.Fatalf("accepted fd: O_NONBLOCK %v, FD_CLOEXEC %v; want %v, %v", nonblock, cloexec, tc.nonblock, tc.cloexec)
			}
			lnb, lce, err := fdModes(l.FD())
			if err != nil {
				t.Fatal(err)
			}
			if !lnb {
				t.Fatal("listening socket is blocking")
			}
			if tc.listenCloexecCheck && !lce {
				t.Fatal("listening socket lacks FD_CLOEXEC with CloseOnExec")
			}
		})
	}

	// A flag that is a socket option sets it; without the flag it is
	// off. BindIPv6Only's socket is on the unspecified address, where it
	// decides whether IPv4 clients reach it.
	for _, tc := range []struct {
		flags            Flag
		option           string
		network, address string
		level, opt       int
	}{
		{Reuseable, "SO_REUSEADDR", "tcp", "127.0.0.1:0", syscall.SOL_SOCKET, syscall.SO_REUSEADDR},
		{ReuseablePort, "SO_REUSEPORT", "tcp", "127.0.0.1:0", syscall.SOL_SOCKET, soReusePort},
		{DeferredAccept, "TCP_DEFER_ACCEPT", "tcp", "127.0.0.1:0", syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT},
		{BindIPv6Only, "IPV6_V6ONLY", "tcp6", "[::]:0", syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY},
	} {
		t.Run(tc.flags.String()+" sets "+tc.option, func(t *testing.T) {
			b := newBase(t)
			for _, flags := range []Flag{0, tc.flags} {
				l, err := NewBind(b, nil, CloseOnFree|flags, -1, tc.network, tc.address)
				if err != nil {
					t.Fatal(err)
				}
				closeAtEnd(t, l)
				if got := sockoptInt(t, l.FD(), tc.level, tc.opt); (got != 0) != (flags != 0) {
					t.Errorf("with flags %v: %s = %d", flags, tc.option, got)
				}
			}
		})
	}

	t.Run("ReuseablePort lets two listeners share a port", func(t *testing.T) {
		b := newBase(t)
		l1 := listenTCP(t, b, nil, ReuseablePort)
		l2, err := NewBind(b, nil, CloseOnFree|ReuseablePort, -1, "tcp", l1.Addr().String())
		if err != nil {
			t.Fatalf("second listener on %v: %v", l1.Addr(), err)
		}
		closeAtEnd(t, l2)
		if l1.Addr().String() != l2.Addr().String() {
			t.Fatalf("addresses %v and %v", l1.Addr(), l2.Addr())
		}
	})

	t.Run("Reuseable alone does not share a port", func(t *testing.T) {
		b := newBase(t)
		l1 := listenTCP(t, b, nil, Reuseable)
		l2, err := NewBind(b, nil, CloseOnFree|Reuseable, -1, "tcp", l1.Addr().String())
		if err == nil {
			l2.Close()
			t.Fatalf("second listener on %v succeeded", l1.Addr())
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("error %v, want EADDRINUSE", err)
		}
	})

	t.Run("DeferredAccept accepts a client once it has sent data", func(t *testing.T) {
		b := newBase(t)
		// The kernel reports a client only once it has sent data,
		// so the callback finds the data already there.
		var got []byte
		var readErr error
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			buf := make([]byte, 8)
			n, err := syscall.Read(fd, buf)
			got, readErr = buf[:max(n, 0)], err
			syscall.Close(fd)
			l.Disable()
		}, DeferredAccept)
		c := dial(t, l.Addr())
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if readErr != nil || string(got) != "hi" {
			t.Fatalf("read in the callback = %q, %v; want the client's data at accept", got, readErr)
		}
	})

	t.Run("Disabled creates the listener disabled", func(t *testing.T) {
		b := newBase(t)
		n := 0
		l := listenOnce(t, b, Disabled, &n)
		c := dial(t, l.Addr())
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil { // nothing pending
			t.Fatal(err)
		}
		stillQueued(t, c)
		if err := l.Enable(); err != nil {
			t.Fatal(err)
		}
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d accepts after Enable, want 1", n)
		}
		readEOF(t, c)
	})

	t.Run("BindIPv6Only keeps IPv4 clients out", func(t *testing.T) {
		b := newBase(t)
		for _, flags := range []Flag{0, BindIPv6Only} {
			// On the unspecified address, so that IPv4 clients can
			// reach a dual-stack socket; dialled on loopback only.
			l, err := NewBind(b, func(l *Listener, fd int, _ net.Addr) {
				syscall.Close(fd)
				l.Disable()
			}, CloseOnFree|flags, -1, "tcp6", "[::]:0")
			if err != nil {
				t.Fatal(err)
			}
			closeAtEnd(t, l)
			v4 := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: l.Addr().(*net.TCPAddr).Port}
			if flags != 0 {
				refused(t, v4)
			} else {
				dial(t, v4)
				if err := startDispatch(t, b, whenIdle).wait(t); err != nil {
					t.Fatal(err)
				}
			}
		}
	})

	// A listener has a lock of its own unless its base has none: on a
	// BaseNoLock base it would guard nothing, and libevent's accept loop
	// takes it twice per connection.
	t.Run("a listener has a lock unless its base has none", func(t *testing.T) {
		for _, c := range []struct {
			flags BaseFlag
			lock  bool
		}{{0, true}, {BaseNoLock, false}} {
			b := newBaseKind(t, baseKind{flags: c.flags})
			for _, f := range []Flag{0, ThreadSafe} {
				l := listenTCP(t, b, func(*Listener, int, net.Addr) {}, f)
				if got := ctest.ListenerHasLock(l.CPtr()); got != c.lock {
					t.Errorf("base flags %v, listener flags %v: lock %v, want %v", c.flags, f, got, c.lock)
				}
			}
		}
	})

	t.Run("ThreadSafe is accepted and changes nothing", func(t *testing.T) {
		b := newBase(t)
		n := 0
		l := listenOnce(t, b, ThreadSafe, &n)
		dial(t, l.Addr())
		if err := startDispatch(t, b, whenIdle).wait(t); err != nil || n != 1 {
			t.Fatalf("Dispatch = %v with %d accepts", err, n)
		}
	})
}
