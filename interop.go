package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Interop: sharing the loop with C code (UsePthreads, FromCPtr) and with
// Go's net (FileConn). The CPtr methods live with their types (object.go,
// base.go), NetListener in netlistener.go.

var (
	pthreadsOnce sync.Once
	pthreadsErr  error
)

// UsePthreads installs libevent's pthread locking (evthread_use_pthreads).
// NewBase calls it; C code that creates event bases before any Go code runs
// must call it first, or those bases have no locks for C's own threads. The
// binding itself does not rely on them (see BaseNoLock). It is safe to call
// more than once and from any goroutine.
func UsePthreads() error {
	pthreadsOnce.Do(func() {
		if C.evthread_use_pthreads() != 0 {
			pthreadsErr = endpoints{}.opError("use pthreads", errors.New("evthread_use_pthreads failed"))
		}
	})
	return pthreadsErr
}

// FromCPtr adopts p, a struct event_base * created by C code in the same
// program. Close on the returned Base closes what Go opened on it and frees
// Go's own internal event, but leaves the event_base to its owner, who frees
// it (event_base_free) only after Close has returned.
//
// The Go side needs no libevent locks: while Dispatch runs, calls from other
// goroutines are handed to the loop thread through the binding's own
// wake-up. C code that uses the base from threads of its own needs them: it
// must have been created after libevent's threading was set up (UsePthreads,
// or evthread_use_pthreads from C before any base exists, NewBase's
// included). libevent offers no way to check this afterwards.
//
// Run the loop either with Dispatch or from C, not both. While C runs it
// (event_base_dispatch from C), Go callbacks run on C's thread, and methods
// of Go objects on the base must be called from those callbacks or while the
// loop is stopped: a call from another goroutine would run on that thread
// and can deadlock libevent 2.1 (issue #1224).
//
// FromCPtr returns an error for nil, and for a base that already has an open
// Base (from NewBase or FromCPtr): two Bases would run two loops on it.
func FromCPtr(p unsafe.Pointer) (*Base, error) {
	const op = "from cptr"
	if p == nil {
		return nil, endpoints{}.opError(op, errors.New("nil event_base"))
	}
	// No UsePthreads here: the base's locking was fixed when C created
	// it, and evthread_use_pthreads after a base exists fails when C set
	// other lock callbacks, and aborts the process in libevent's debug mode.
	b, err := adoptBase((*C.struct_event_base)(p), false)
	if err != nil {
		return nil, endpoints{}.opError(op, err)
	}
	return b, nil
}

// FileConn turns fd, a connected socket such as the one an AcceptFunc
// receives, into a net.Conn: a *net.TCPConn, *net.UnixConn or whatever
// net.FileConn makes of it, served by Go's own poller from then on. FileConn
// takes ownership of fd in every case: on success the net.Conn holds the only
// descriptor of the socket (net.FileConn works on a duplicate, so fd itself is
// closed before FileConn returns), and on failure fd is closed too. The
// caller must not use or close fd afterwards.
//
// Errors are *net.OpError values as net.FileConn returns them, wrapping the
// errno (errors.Is(err, syscall.ENOTSOCK)). It may be called from any
// goroutine, including from an AcceptFunc.
func FileConn(fd int) (net.Conn, error) {
	if fd < 0 {
		return nil, &net.OpError{Op: "file", Net: "file+net", Err: os.NewSyscallError("fcntl", syscall.EBADF)}
	}
	f := os.NewFile(uintptr(fd), "evlistener")
	c, err := net.FileConn(f)
	// Closes fd: the conn, if any, has its own duplicate.
	f.Close()
	return c, err
}
