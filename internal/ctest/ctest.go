// Package ctest is C code that shares an event_base with Go code, for the
// tests of evlistener: cgo cannot be used in _test.go files. It registers its
// own libevent timer and raw event directly with libevent, as a C library
// would, and can create and free bases itself.
package ctest

/*
#cgo pkg-config: libevent_core libevent_pthreads
#include "ctest.h"
*/
import "C"

import (
	"errors"
	"unsafe"
)

func base(p unsafe.Pointer) *C.struct_event_base { return (*C.struct_event_base)(p) }

// NewBase creates an event_base from C with event_base_new. It has locks if
// libevent's threading was set up before (evlistener.UsePthreads).
func NewBase() (unsafe.Pointer, error) {
	p := C.ctest_base_new()
	if p == nil {
		return nil, errors.New("ctest: event_base_new failed")
	}
	return unsafe.Pointer(p), nil
}

// NewBaseNoLock creates an event_base without locks
// (EVENT_BASE_FLAG_NOLOCK), like one created before evthread_use_pthreads.
func NewBaseNoLock() (unsafe.Pointer, error) {
	p := C.ctest_base_new_nolock()
	if p == nil {
		return nil, errors.New("ctest: event_base_new_with_config failed")
	}
	return unsafe.Pointer(p), nil
}

// FreeBase frees a base that NewBase or NewBaseNoLock created.
func FreeBase(p unsafe.Pointer) { C.ctest_base_free(base(p)) }

// NumEvents counts the events added to the base (pending), libevent's
// internal ones excepted.
func NumEvents(p unsafe.Pointer) int { return int(C.ctest_base_num_events(base(p))) }

// RunTimer adds a timer that fires 3 times, 1 ms apart, runs the loop from
// C until nothing is pending and returns how often the timer fired, or -1.
func RunTimer(p unsafe.Pointer) int { return int(C.ctest_run_timer(base(p))) }

// ThreadSelf returns pthread_self() of the calling thread.
func ThreadSelf() uint64 { return uint64(C.ctest_thread_self()) }

// event is what a Timer and a Reader share: a C event with a count and the
// thread of its last callback.
type event struct{ p *C.struct_ctest_event }

// Thread is pthread_self() in the event's last callback.
func (e event) Thread() uint64 { return uint64(C.ctest_event_thread(e.p)) }

// Free frees the event (a Reader's: and closes both sockets). Call it
// before the base is freed.
func (e event) Free() { C.ctest_event_free(e.p) }

// Timer is a C timer event that fires a given number of times, then leaves
// the base.
type Timer struct{ event }

// NewTimer adds a timer to the base that fires times times, every.
func NewTimer(p unsafe.Pointer, everyMicros int, times int) (*Timer, error) {
	t := C.ctest_timer_new(base(p), C.long(everyMicros), C.int(times))
	if t == nil {
		return nil, errors.New("ctest: timer: event_new or event_add failed")
	}
	return &Timer{event{t}}, nil
}

// Fired is how often the timer fired so far.
func (t *Timer) Fired() int { return int(C.ctest_event_count(t.p)) }

// Reader is a persistent C read event on one end of a socketpair. It reads
// what is written to Peer and leaves the base once it has read want bytes.
type Reader struct{ event }

// NewReader adds the read event to the base.
func NewReader(p unsafe.Pointer, want int) (*Reader, error) {
	r := C.ctest_reader_new(base(p), C.int(want))
	if r == nil {
		return nil, errors.New("ctest: reader: socketpair, event_new or event_add failed")
	}
	return &Reader{event{r}}, nil
}

// Peer is the socket to write to; Free closes it.
func (r *Reader) Peer() int { return int(C.ctest_reader_peer(r.p)) }

// Got is how many bytes the C callback read so far.
func (r *Reader) Got() int { return int(C.ctest_event_count(r.p)) }

// ConnSetup does, n times, what a C server does for a connection besides
// accept(2): event_new a persistent read event on fd, event_add it with a
// one-minute timeout, event_free it; all in C, one cgo call in all.
func ConnSetup(p unsafe.Pointer, fd, n int) error {
	if C.ctest_conn_setup(base(p), C.int(fd), C.int(n)) != 0 {
		return errors.New("ctest: event_new or event_add failed")
	}
	return nil
}

// CaptureLog counts libevent's warnings and errors, instead of letting it
// print them, until the returned function is called. warnings returns how
// many were logged since the process began, and the last one.
func CaptureLog() (warnings func() (int, string), stop func()) {
	C.ctest_log_capture(1)
	return func() (int, string) {
		var last *C.char
		n := int(C.ctest_log_warnings(&last))
		return n, C.GoString(last)
	}, func() { C.ctest_log_capture(0) }
}

// ConnCycle does, n times, what a C server does per connection besides
// accept(2), on a dup of fd standing in for the accepted socket: make and
// arm the connection's event (event_new, event_add with a one-minute
// timeout) or, with bev, its buffer event (bufferevent_socket_new, setcb,
// enable EV_READ); free it; close the socket. One cgo call in all.
func ConnCycle(p unsafe.Pointer, fd, n int, bev bool) error {
	b := C.int(0)
	if bev {
		b = 1
	}
	if C.ctest_conn_cycle(base(p), C.int(fd), C.int(n), b) != 0 {
		return errors.New("ctest: dup, event_new, event_add, bufferevent_socket_new or bufferevent_enable failed")
	}
	return nil
}

// ListenerHasLock reports whether p, a struct evconnlistener *, has a lock
// of its own (LEV_OPT_THREADSAFE with libevent's threading set up). It reads
// libevent 2.1's private struct layout.
func ListenerHasLock(p unsafe.Pointer) bool { return C.ctest_listener_has_lock(p) != 0 }
