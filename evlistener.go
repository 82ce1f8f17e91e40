package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

import (
	"errors"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// AcceptFunc is called on the loop goroutine for each accepted connection.
// It owns fd: it must close it or hand it on. addr is the peer's address, a
// *net.TCPAddr or *net.UnixAddr that the callback may keep.
type AcceptFunc func(l *Listener, fd int, addr net.Addr)

// ErrorFunc is called on the loop goroutine when accept fails with an error
// that retrying at once would not cure. err is a *net.OpError that wraps the
// errno libevent saw (errors.Is(err, syscall.EMFILE)). By then the listener
// has already paused and will retry on its own (see Listener).
type ErrorFunc func(l *Listener, err error)

// Back-off after an accept error: the first pause, and the longest.
const (
	firstBackoff = 10 * time.Millisecond
	maxBackoff   = time.Second
)

// Listener is a libevent connection listener (struct evconnlistener).
//
// A nil AcceptFunc pauses accepting: connections wait in the kernel backlog
// until a callback is set, and none is accepted and then dropped.
//
// When accept fails with an error other than EAGAIN, EINTR or ECONNABORTED
// (EMFILE, ENFILE, ENOBUFS, ENOMEM, EINVAL, ...), where libevent 2.1 would
// retry in a busy loop, the listener stops accepting, calls the ErrorFunc once
// and tries again after a pause that starts near 10 ms and doubles up to 1 s,
// until an accept succeeds. Connections wait in the backlog meanwhile. Disable
// and Close cancel a pending retry; Enable retries at once.
type Listener struct {
	object
	network string   // "tcp" or "unix", for errors
	addr    net.Addr // its bound address
	unlink  string   // unix socket path to remove on Close

	// Owned by the loop: touched only by the goroutine that counts as the
	// loop (see Base.call).
	ptr                 *C.struct_evconnlistener
	timer               *C.struct_event // back-off retry
	cb                  AcceptFunc
	errCb               ErrorFunc
	enabled             bool // the user wants connections accepted
	backingOff          bool
	delay               time.Duration
	pausedUntilDispatch bool
	net                 *netListener  // set by NetListener; closed with the listener
	conns               *connAcceptor // set by AcceptEvents, AcceptBufferEvents; cb is nil then
}

// New wraps fd, a bound stream socket, in a listener (evconnlistener_new).
// The socket is made non-blocking. backlog > 0 is passed to listen(); a
// negative backlog means libevent's default (128); 0 means fd already
// listens. With CloseOnFree, Close closes fd; otherwise fd stays the
// caller's, also when New fails. cb may be nil (see Listener).
func New(b *Base, cb AcceptFunc, flags Flag, backlog int, fd int) (*Listener, error) {
	if b == nil {
		return nil, endpoints{}.opError("listen", errNilBase)
	}
	if fd < 0 {
		return nil, endpoints{}.opError("listen", os.NewSyscallError("evconnlistener_new", syscall.EBADF))
	}
	network, addr, err := checkListenFD(fd)
	ends := endpoints{net: network, addr: addr}
	if err != nil {
		return nil, ends.opError("listen", err)
	}
	if err := checkFlags(flags); err != nil {
		return nil, ends.opError("listen", err)
	}
	// libevent's accept loop needs a non-blocking socket; Go hands out
	// blocking ones ((*net.TCPListener).File).
	if err := syscall.SetNonblock(fd, true); err != nil {
		return nil, ends.opError("listen", os.NewSyscallError("fcntl", err))
	}
	l := newListener(cb, flags, network, addr)
	if err := newObject("listen", b, l, fd, (*Listener).open, listenArgs{flags: flags, backlog: backlog}); err != nil {
		return nil, err
	}
	return l, nil
}

// NewBind creates a socket, binds it to address and listens on it, as
// evconnlistener_new_bind does (non-blocking, SO_KEEPALIVE, and the socket
// options of flags), but with errors that name the step that failed, as
// net.Listen's do: "listen tcp 127.0.0.1:80: bind: address already in use"
// (a *net.OpError around an *os.SyscallError around the errno). network is "tcp", "tcp4", "tcp6" or "unix";
// address is as net.Listen takes it ("127.0.0.1:0", "[::1]:9876", ":9876",
// a path, "@name" for an abstract unix socket). Port 0 picks a free port, which
// Addr reports. backlog > 0 is passed to listen(), a negative backlog means
// libevent's default (128); 0 is an error, since the new socket does not
// listen yet. Without CloseOnFree the socket outlives Close and the caller
// must close FD() itself. cb may be nil (see Listener).
func NewBind(b *Base, cb AcceptFunc, flags Flag, backlog int, network, address string) (*Listener, error) {
	ends := endpoints{net: network}
	if b == nil {
		return nil, ends.opError("listen", errNilBase)
	}
	if backlog == 0 {
		return nil, ends.opError("listen", errors.New("backlog 0 means the socket already listens; NewBind needs a backlog > 0, or < 0 for the default"))
	}
	if err := checkFlags(flags); err != nil {
		return nil, ends.opError("listen", err)
	}
	ba, err := resolveSockaddr(network, address)
	if err != nil {
		return nil, ends.opError("listen", err)
	}
	ends.addr = ba.addr
	fd, err := bindSocket(ba, flags)
	if err != nil {
		return nil, ends.opError("listen", err)
	}
	if network != "unix" {
		network = "tcp"
	}
	l := newListener(cb, flags, network, ba.addr)
	if err := newObject("listen", b, l, fd, (*Listener).open, listenArgs{flags: flags, backlog: backlog}); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	if ua, ok := ba.addr.(*net.UnixAddr); ok {
		if flags&CloseOnFree != 0 && ua.Name[0] != '@' {
			l.unlink = ua.Name
		}
	}
	return l, nil
}

// newListener makes the Go side of a listener; addr is what its errors name
// until open reads the bound address.
func newListener(cb AcceptFunc, flags Flag, network string, addr net.Addr) *Listener {
	return &Listener{network: network, addr: addr, cb: cb, enabled: flags&Disabled == 0}
}

// endpoints: a listener's errors name its network and address, as those of
// a net.Listener do. Both are set before the listener is returned, and stay.
func (l *Listener) endpoints() endpoints { return endpoints{net: l.network, addr: l.addr} }

// listenArgs are the arguments of open.
type listenArgs struct {
	flags   Flag
	backlog int
}

// open creates the evconnlistener on the listener's socket
// (evconnlistener_new), which calls listen() unless backlog is 0: a
// failure is listen's. It runs on the loop.
//
// The listener gets a lock (ThreadSafe) unless its base has none
// (BaseNoLock): there, C threads cannot use the base's events anyway, so a
// lock of the listener's would guard nothing, and it costs two locks and
// unlocks per accepted connection in libevent's accept loop.
func (l *Listener) open(a listenArgs) error {
	flags := a.flags | ThreadSafe
	if l.base.noLock {
		flags &^= ThreadSafe
	}
	backlog := C.int(clampBacklog(a.backlog))
	p, errno := C.evl_listener_new(l.base.ptr, C.uintptr_t(l.h), cbArg(l.cb), C.uint(flags), backlog, C.int(l.fd))
	if p == nil {
		return os.NewSyscallError("listen", errnoOr(errno, syscall.EINVAL))
	}
	l.ptr = p
	l.fd = int(C.evconnlistener_get_fd(p))
	// The bound address, with port 0 resolved; a unix socket keeps the
	// one it was given: getsockname loses the '@' of abstract names.
	if _, unix := l.addr.(*net.UnixAddr); !unix {
		if a := sockname(l.fd); a != nil {
			l.addr = a
		}
	}
	l.opened(l, unsafe.Pointer(p))
	return nil
}

func cbArg(cb AcceptFunc) C.int {
	if cb == nil {
		return 0
	}
	return 1
}

func clampBacklog(backlog int) int {
	const maxInt32 = 1<<31 - 1
	if backlog > maxInt32 {
		return maxInt32
	}
	if backlog < 0 {
		return -1
	}
	return backlog
}

func checkFlags(flags Flag) error {
	if rest := flags &^ knownFlags; rest != 0 {
		return errors.New("unknown listener flags " + rest.String())
	}
	return nil
}

func errnoOr(err error, def syscall.Errno) syscall.Errno {
	if errno, ok := err.(syscall.Errno); ok && errno != 0 {
		return errno
	}
	return def
}

// checkListenFD makes sure fd is a stream socket and tells its network and
// address.
func checkListenFD(fd int) (string, net.Addr, error) {
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil {
		return "", nil, os.NewSyscallError("getsockopt", err)
	}
	addr := sockname(fd)
	network := "tcp"
	if _, ok := addr.(*net.UnixAddr); ok {
		network = "unix"
	}
	if typ != syscall.SOCK_STREAM {
		return network, addr, errors.New("not a stream socket")
	}
	return network, addr, nil
}

// Close frees the listener (evconnlistener_free). Once it returns no
// callback of the listener starts, and with CloseOnFree the listening socket
// is closed (when called inside the listener's own callback, as that callback
// returns), also when called inside the listener's callbacks. Later calls
// fail with ErrClosed.
func (l *Listener) Close() error { return loopRun("close", l, (*Listener).close) }

func (l *Listener) close() error {
	l.closed.Store(true)
	if l.timer != nil {
		C.event_free(l.timer)
		l.timer = nil
	}
	// Inside the listener's own callback libevent defers the destruction
	// to the callback's return and makes no further call (listener.c
	// refcount), so the handle can go now.
	C.evconnlistener_free(l.ptr)
	l.ptr = nil
	l.conns.free()
	l.conns = nil
	if l.unlink != "" {
		syscall.Unlink(l.unlink)
	}
	l.release()
	l.cb, l.errCb = nil, nil
	if nl := l.net; nl != nil {
		l.net = nil
		nl.closeOnLoop()
	}
	return nil
}

// Enable resumes accepting (evconnlistener_enable), at once also when a
// back-off pause is pending.
func (l *Listener) Enable() error { return loopRun("enable", l, (*Listener).enable) }

func (l *Listener) enable() error {
	l.enabled = true
	l.pausedUntilDispatch = false
	l.cancelBackoff()
	if l.hasCallback() && C.evconnlistener_enable(l.ptr) != 0 {
		return errors.New("evconnlistener_enable failed")
	}
	return nil
}

// Disable stops accepting (evconnlistener_disable); connections wait in the
// kernel backlog. Called inside the accept callback it stops the accept
// loop at once.
func (l *Listener) Disable() error { return loopRun("disable", l, (*Listener).disable) }

func (l *Listener) disable() error {
	l.enabled = false
	l.pausedUntilDispatch = false
	l.cancelBackoff()
	if C.evconnlistener_disable(l.ptr) != 0 {
		return errors.New("evconnlistener_disable failed")
	}
	return nil
}

// SetCallback replaces the accept callback (evconnlistener_set_cb). nil
// pauses accepting, without accepting and dropping a connection as
// libevent's set_cb(NULL) would. On a closed listener it does nothing: it
// has no error result, and there is nothing left to call back.
func (l *Listener) SetCallback(cb AcceptFunc) {
	loopRunWith("set callback", l, (*Listener).setCallback, cb)
}

func (l *Listener) setCallback(cb AcceptFunc) error {
	had, conns := l.hasCallback(), l.conns
	l.cb, l.conns = cb, nil
	defer conns.free() // after libevent has the new callback
	switch {
	case cb == nil && had:
		// set_cb(NULL) alone leaves the event registered and libevent
		// would accept and close the next connection: take the event
		// out first. libevent's enabled flag must stay clear too: inside
		// the accept callback, listener_read_cb goes on accepting while
		// it is set, and closes what it accepts with no callback.
		C.evconnlistener_disable(l.ptr)
		C.evl_listener_set_cb(l.ptr, C.uintptr_t(l.h), 0)
	case cb != nil && (!had || conns != nil):
		C.evl_listener_set_cb(l.ptr, C.uintptr_t(l.h), 1)
		if l.active() {
			C.evconnlistener_enable(l.ptr)
		}
	}
	return nil
}

// active reports whether libevent's side should be enabled now. It never
// is without a callback (see setCallback).
func (l *Listener) active() bool {
	return l.hasCallback() && l.enabled && !l.backingOff && !l.pausedUntilDispatch
}

// SetErrorCallback sets the callback for accept errors
// (evconnlistener_set_error_cb); nil removes it. The back-off happens either
// way. On a closed listener it does nothing, as SetCallback.
func (l *Listener) SetErrorCallback(cb ErrorFunc) {
	loopRunWith("set error callback", l, (*Listener).setErrorCallback, cb)
}

func (l *Listener) setErrorCallback(cb ErrorFunc) error {
	l.errCb = cb
	return nil
}

// Addr returns the address the listener is bound to, with port 0 resolved,
// or nil once the listener is closed.
func (l *Listener) Addr() net.Addr {
	if l.closed.Load() {
		return nil
	}
	return l.addr
}

// onAccept runs on the loop for each accepted connection.
func (l *Listener) onAccept(fd int, sa unsafe.Pointer, n int) {
	cb := l.cb
	if cb == nil {
		// Unreachable: libevent calls back only while a callback is
		// set. Nothing can take the socket, so do not leak it.
		syscall.Close(fd)
		return
	}
	l.delay = 0
	addr := sockaddrToAddr(sa, n)
	if !l.base.callback(func() { cb(l, fd, addr) }) {
		// It panicked (or a callback before it did, and the loop is
		// stopping): the socket is nobody's now.
		syscall.Close(fd)
		if !l.closed.Load() {
			l.pauseUntilDispatch()
		}
		return
	}
	if l.base.breakOnLoop && !l.closed.Load() {
		// The callback, or work handed to the loop as it ended, called
		// LoopBreak or Base.Close. libevent breaks its loop only
		// between events, and its accept loop would go on taking every
		// queued connection first.
		l.pauseUntilDispatch()
	}
}

// onAcceptError runs on the loop when accept failed with errno.
func (l *Listener) onAcceptError(errno syscall.Errno) {
	switch errno {
	case syscall.EAGAIN, syscall.EINTR, syscall.ECONNABORTED:
		return
	}
	if l.closed.Load() {
		return
	}
	// libevent 2.1 leaves the listener enabled after an accept error; the
	// socket stays readable and the loop would spin at full CPU (about
	// 180,000 error callbacks per 100 ms on EMFILE). Pause, retry later.
	C.evconnlistener_disable(l.ptr)
	l.delay = min(max(2*l.delay, firstBackoff), maxBackoff)
	if l.timer == nil {
		l.timer = C.evl_timer_new(l.base.ptr, C.uintptr_t(l.h))
	}
	l.backingOff = true
	C.evl_timer_add(l.timer, C.int64_t(l.delay/time.Microsecond))
	cb := l.errCb
	if cb == nil {
		return
	}
	err := l.endpoints().opError("accept", os.NewSyscallError("accept", errno))
	if !l.base.callback(func() { cb(l, err) }) && !l.closed.Load() {
		l.pauseUntilDispatch()
	}
}

// onTimer ends a back-off pause.
func (l *Listener) onTimer() {
	if l.closed.Load() || !l.backingOff {
		return
	}
	l.backingOff = false
	if l.active() {
		C.evconnlistener_enable(l.ptr)
	}
}

func (l *Listener) cancelBackoff() {
	if l.backingOff {
		C.event_del(l.timer)
		l.backingOff = false
	}
}

// pauseUntilDispatch stops libevent's accept loop now (it checks the
// enabled flag after each callback) and keeps the listener paused until the
// next Dispatch starts.
func (l *Listener) pauseUntilDispatch() {
	C.evconnlistener_disable(l.ptr)
	l.pausedUntilDispatch = true
	l.base.resumeOnDispatch(l.resumePaused)
}

func (l *Listener) resumePaused() {
	if l.closed.Load() || !l.pausedUntilDispatch {
		return
	}
	l.pausedUntilDispatch = false
	if l.active() {
		C.evconnlistener_enable(l.ptr)
	}
}

// bindSocket makes the socket NewBind listens on, step by step as
// evconnlistener_new_bind does, so that an error can name its step
// (socket, setsockopt, bind).
func bindSocket(ba *sockaddr, flags Flag) (int, error) {
	family := int(ba.raw.Addr.Family)
	typ := syscall.SOCK_STREAM | syscall.SOCK_NONBLOCK
	if flags&CloseOnExec != 0 {
		typ |= syscall.SOCK_CLOEXEC
	}
	fd, err := syscall.Socket(family, typ, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	opts := []struct {
		on          bool
		level, name int
	}{
		{true, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE}, // as libevent 2.1 always does
		{flags&Reuseable != 0, syscall.SOL_SOCKET, syscall.SO_REUSEADDR},
		{flags&ReuseablePort != 0, syscall.SOL_SOCKET, soReusePort},
		{flags&DeferredAccept != 0, syscall.IPPROTO_TCP, tcpDeferAccept},
		{flags&BindIPv6Only != 0, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY},
	}
	for _, o := range opts {
		if !o.on || o.name < 0 {
			continue
		}
		if err := syscall.SetsockoptInt(fd, o.level, o.name, 1); err != nil {
			syscall.Close(fd)
			return -1, os.NewSyscallError("setsockopt", err)
		}
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&ba.raw)), uintptr(ba.len)); errno != 0 {
		syscall.Close(fd)
		return -1, os.NewSyscallError("bind", errno)
	}
	return fd, nil
}
