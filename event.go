package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

import (
	"errors"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// EventFunc is called on the loop goroutine when an Event fires
// (event_callback_fn). fd is the event's file descriptor (-1 for a timer);
// what says why it fired: EvTimeout, EvRead, EvWrite or EvClosed.
type EventFunc func(ev *Event, fd int, what Events)

// Event is a libevent event (struct event): a file descriptor to watch, a
// timer, or both, with a Go callback. Its methods run libevent on the loop
// thread, where libevent 2.1 can do them safely (event_del waits for a
// running callback), while the caller waits.
//
// An Event never closes its file descriptor. It holds libevent and Go
// resources until Close, also after a non-persistent event fired; Base.Close
// closes the events still open on the base.
type Event struct {
	object

	// Owned by the loop (see Base.call).
	ptr  *C.struct_event
	cb   EventFunc
	pool *connTable // for a connection's event (AcceptEvents): its table
}

// NewEvent creates an event on fd (event_new). what holds the conditions to
// wait for (EvRead, EvWrite, EvClosed), EvPersist to stay pending after
// firing, and EvET for edge-triggered notification. With fd -1 and no
// condition it is a timer. The event waits only once Add is called; cb runs
// on the loop goroutine each time it fires.
func NewEvent(b *Base, fd int, what Events, cb EventFunc) (*Event, error) {
	const op = "new event"
	var err error
	switch {
	case b == nil:
		err = errNilBase
	case cb == nil:
		err = errNilCallback
	case what&^(knownEvents&^EvTimeout) != 0:
		err = errors.New("unsupported event bits " + (what &^ (knownEvents &^ EvTimeout)).String())
	case fd < 0 && what&(EvRead|EvWrite|EvClosed) != 0:
		err = os.NewSyscallError("event_new", syscall.EBADF)
	}
	if err != nil {
		return nil, endpoints{}.opError(op, err)
	}
	ev := &Event{cb: cb}
	if err := newObject(op, b, ev, fd, (*Event).open, what); err != nil {
		return nil, err
	}
	return ev, nil
}

// NewTimer creates a timer (evtimer_new): an event without a file
// descriptor that fires once its Add timeout passes.
func NewTimer(b *Base, cb EventFunc) (*Event, error) {
	return NewEvent(b, -1, 0, cb)
}

func (ev *Event) open(what Events) error {
	p := C.evl_event_new(ev.base.ptr, C.int(ev.fd), C.short(what), C.uintptr_t(ev.h))
	if p == nil {
		return errEventNew
	}
	ev.ptr = p
	ev.opened(ev, unsafe.Pointer(p))
	return nil
}

// usec converts a timeout for the C side: <= 0 means none (-1).
func usec(d time.Duration) int64 {
	if d <= 0 {
		return -1
	}
	if us := int64(d / time.Microsecond); us > 0 {
		return us
	}
	return 1
}

// Add makes the event pending (event_add). A timeout > 0 makes it fire
// with EvTimeout once that much time passed without the event firing (a
// persistent event's timeout restarts each time it fires); 0 means no
// timeout. Adding a pending event again resets its timeout.
func (ev *Event) Add(timeout time.Duration) error {
	return loopRunWith("add", ev, (*Event).add, timeout)
}

func (ev *Event) add(timeout time.Duration) error {
	if r, errno := C.evl_event_add(ev.base.ptr, ev.ptr, C.int64_t(usec(timeout))); r != 0 {
		return os.NewSyscallError("event_add", errnoOr(errno, syscall.EINVAL))
	}
	return nil
}

// Del makes the event non-pending (event_del): it does not fire until the
// next Add. Called from another goroutine while the event's callback runs,
// it returns after the callback.
func (ev *Event) Del() error { return loopRun("del", ev, (*Event).del) }

func (ev *Event) del() error {
	if C.event_del(ev.ptr) != 0 {
		return errors.New("event_del failed")
	}
	if ev.pool != nil {
		// A callback of the event that the loop's turn noted and Go has
		// yet to run is cancelled, as event_del cancels an active one
		// (turns.go).
		(*C.struct_evl_conn_ev)(ev.cptr).gen++
	}
	return nil
}

// Active makes the event fire with what as if its condition had happened
// (event_active), pending or not. The callback runs on the loop goroutine,
// later, never inside Active.
func (ev *Event) Active(what Events) error { return loopRunWith("active", ev, (*Event).active, what) }

func (ev *Event) active(what Events) error {
	C.event_active(ev.ptr, C.int(what), 0)
	return nil
}

// Pending reports whether the event is pending or active for any of the
// conditions in what (event_pending); false once closed.
func (ev *Event) Pending(what Events) bool {
	pending, _ := loopGetWith("pending", ev, (*Event).pending, what)
	return pending
}

func (ev *Event) pending(what Events) (bool, error) {
	return C.event_pending(ev.ptr, C.short(what), nil) != 0, nil
}

// Close frees the event (event_free); it does not close the file
// descriptor. Once Close returns no callback of the event starts; called
// inside the event's own callback, it takes effect as the callback returns.
// Later calls fail with ErrClosed.
func (ev *Event) Close() error { return loopRun("close", ev, (*Event).close) }

func (ev *Event) close() error {
	if ev.pool != nil {
		return ev.pool.closeEvent(ev)
	}
	ev.closed.Store(true)
	// Inside its own callback libevent no longer reads the event once the
	// callback returns (event_process_active_single_queue), so it can go.
	C.event_free(ev.ptr)
	ev.ptr = nil
	ev.release()
	ev.cb = nil
	return nil
}

// endpoints: an event watches a descriptor, which need not be a socket; its
// errors name none.
func (ev *Event) endpoints() endpoints { return endpoints{} }

// onEvent runs on the loop when the event fires.
func (ev *Event) onEvent(fd int, what Events) {
	if cb := ev.cb; cb != nil {
		ev.base.callback(func() { cb(ev, fd, what) })
	}
}
