package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

import "syscall"

// wakeup is how another goroutine wakes a loop that waits in the kernel: a
// descriptor whose read end is an internal persistent event of the base
// (evl_wake_event_new). Writing to it is all a waker does, so waking needs
// no libevent lock and works on a base without any (BaseNoLock). The event
// is internal, as libevent's own notification event is: it does not keep
// Dispatch from returning when nothing else is pending.
type wakeup struct {
	ev       *C.struct_event
	rfd, wfd int // the same eventfd on Linux, a pipe elsewhere
	buf      [64]byte
}

func newWakeup(p *C.struct_event_base, h handle) (*wakeup, error) {
	rfd, wfd, err := wakeFDs()
	if err != nil {
		return nil, err
	}
	w := &wakeup{rfd: rfd, wfd: wfd}
	if w.ev = C.evl_wake_event_new(p, C.int(rfd), C.uintptr_t(h)); w.ev == nil {
		w.closeFDs()
		return nil, errEventNew
	}
	return w, nil
}

// wake makes the event fire; any goroutine may call it. A full pipe (EAGAIN)
// means a wake-up is already pending, which is enough.
func (w *wakeup) wake() {
	syscall.Write(w.wfd, wakeToken[:])
}

// drain resets the descriptor, on the loop, as the event fires: one read
// resets an eventfd; a pipe may hold several bytes.
func (w *wakeup) drain() {
	for {
		n, err := syscall.Read(w.rfd, w.buf[:])
		if err != nil || n <= 0 || w.rfd == w.wfd {
			return
		}
	}
}

// free frees the event and closes the descriptors; no loop runs.
func (w *wakeup) free() {
	C.event_free(w.ev)
	w.closeFDs()
}

func (w *wakeup) closeFDs() {
	syscall.Close(w.rfd)
	if w.wfd != w.rfd {
		syscall.Close(w.wfd)
	}
}
