package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// NetListener returns a net.Listener whose Accept hands out the connections
// l accepts, so that net/http and any other server written for net.Listener
// run on libevent's accept path, with its back-off on EMFILE and the like:
//
//	go base.Dispatch()
//	http.Serve(evlistener.NetListener(l, 64), handler)
//
// It sets l's accept callback and enables l; from then on l belongs to the
// returned listener, and its callback must not be replaced nor l enabled or
// disabled directly. Connections are accepted only while the loop runs:
// Dispatch must run on some goroutine (NetListener keeps that Dispatch from
// returning for lack of events while it has paused l, see below).
//
// Backpressure: when queue accepted connections wait for Accept, l is
// disabled, so further clients wait in the kernel's listen backlog (they
// connect, and are not refused); it is enabled again as soon as Accept takes
// one. queue below 1 is taken as 1.
//
// Accept blocks until a connection is there or the listener is closed, and
// returns a *net.TCPConn or *net.UnixConn (see FileConn). Close closes l
// (which closes the listening socket if l has CloseOnFree) and the
// connections still queued, and makes blocked and later Accept calls return
// an error that wraps net.ErrClosed, so that http.Server.Shutdown ends Serve
// cleanly. Closing l, or its Base, closes the returned listener too. Addr is
// l.Addr(), also after Close. Accept blocks, and must not be called from a
// callback of the base.
//
// A nil or closed l gives a listener whose Accept and Close return errors.
//
// NetListener is libevent's accept path for code written for Go's net, not
// a faster one: each connection takes about twice the system calls of
// net.Listen's Accept (see bench/README.md for what that costs), and a
// process wants one P more than it has Dispatch loops (see Base.Dispatch).
func NetListener(l *Listener, queue int) net.Listener {
	nl := &netListener{l: l, max: max(queue, 1)}
	nl.ready = sync.NewCond(&nl.mu)
	if l == nil {
		nl.closed, nl.err = true, errors.New("NetListener of a nil Listener")
		return nl
	}
	nl.network, nl.addr = l.network, l.Addr()
	if err := loopRunWith("listen", l, (*Listener).serveNet, nl); err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err // Accept and Close wrap it again
		}
		nl.closed, nl.err = true, err
	}
	return nl
}

// serveNet makes nl the listener's NetListener. It runs on the loop.
//
// nl is not an object on the base (it has no C side of its own and closes
// with l), but its keep-alive timer needs a handle for its callback: the
// listener's own timer is the back-off's.
func (l *Listener) serveNet(nl *netListener) error {
	if l.net != nil {
		return errors.New("the Listener already has a NetListener")
	}
	nl.h = newHandle(nl)
	nl.timer = C.evl_timer_new(l.base.ptr, C.uintptr_t(nl.h))
	if nl.timer == nil {
		deleteHandle(nl.h)
		return errEventNew
	}
	l.net = nl
	l.setCallback(nl.onAccept)
	return l.enable()
}

// keepAlive is how often the timer that keeps Dispatch running while l is
// paused fires; it only re-arms itself.
const keepAlive = time.Hour

type netListener struct {
	l       *Listener
	max     int
	network string
	addr    net.Addr

	mu     sync.Mutex
	ready  *sync.Cond // signalled when queue grows or closed is set
	queue  []acceptedConn
	closed bool
	err    error // why Accept fails once closed; nil means net.ErrClosed
	paused bool  // l was disabled because the queue is full

	// Owned by the loop, like the Listener's own fields.
	h      handle
	timer  *C.struct_event // pending while paused: a disabled listener alone would let Dispatch return
	timing bool
}

type acceptedConn struct {
	fd   int
	addr net.Addr
}

// onAccept is l's AcceptFunc; it runs on the loop.
func (nl *netListener) onAccept(l *Listener, fd int, addr net.Addr) {
	nl.mu.Lock()
	nl.queue = append(nl.queue, acceptedConn{fd, addr})
	full := len(nl.queue) >= nl.max && !nl.paused
	if full {
		nl.paused = true
	}
	nl.mu.Unlock()
	nl.ready.Signal()
	if full {
		// Inside the accept callback this stops libevent's accept loop at
		// once; the rest waits in the kernel backlog.
		l.disable()
		nl.timing = true
		C.evl_timer_add(nl.timer, C.int64_t(keepAlive/time.Microsecond))
	}
}

// onTimer re-arms the keep-alive timer while the listener is paused.
func (nl *netListener) onTimer() {
	if nl.timing {
		C.evl_timer_add(nl.timer, C.int64_t(keepAlive/time.Microsecond))
	}
}

// resumeNet enables l again after Accept made room in its NetListener's
// queue. It runs on the loop.
func (l *Listener) resumeNet() error {
	if nl := l.net; nl.timing {
		C.event_del(nl.timer)
		nl.timing = false
	}
	return l.enable()
}

// Accept waits for the next connection and returns it as a net.Conn.
func (nl *netListener) Accept() (net.Conn, error) {
	nl.mu.Lock()
	for len(nl.queue) == 0 && !nl.closed {
		nl.ready.Wait()
	}
	if nl.closed {
		err := nl.err
		nl.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return nil, nl.opError("accept", err)
	}
	c := nl.queue[0]
	nl.queue[0] = acceptedConn{}
	nl.queue = nl.queue[1:]
	resume := nl.paused && len(nl.queue) < nl.max
	if resume {
		nl.paused = false
	}
	nl.mu.Unlock()
	if resume {
		// The accept callback cannot run before this: l is disabled.
		loopRun("accept", nl.l, (*Listener).resumeNet)
	}
	conn, err := FileConn(c.fd)
	if err != nil {
		// As from net's own Accept: EMFILE and the like are temporary
		// (net.Error), and http.Server backs off and tries again.
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return nil, nl.opError("accept", err)
	}
	return conn, nil
}

// Close closes l and every connection still queued.
func (nl *netListener) Close() error {
	if nl.err != nil {
		return nl.opError("close", nl.err) // l is not ours
	}
	return nl.l.Close() // its errors are l's: the same op, network and address
}

// closeOnLoop runs as l closes, on the loop or with no loop running, by
// whichever of NetListener.Close, Listener.Close or Base.Close closed it.
func (nl *netListener) closeOnLoop() {
	C.event_free(nl.timer)
	nl.timer = nil
	nl.timing = false
	deleteHandle(nl.h)
	nl.mu.Lock()
	q := nl.queue
	nl.queue = nil
	nl.closed = true
	nl.mu.Unlock()
	nl.ready.Broadcast()
	for _, c := range q {
		syscall.Close(c.fd)
	}
}

// Addr returns the listener's address, l.Addr() as it was when NetListener
// was called.
func (nl *netListener) Addr() net.Addr { return nl.addr }

func (nl *netListener) opError(op string, err error) error {
	return endpoints{net: nl.network, addr: nl.addr}.opError(op, err)
}
