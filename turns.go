package evlistener

/*
#include <stdlib.h>
#include "cgo_bridge.h"
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// The loop's turns. Dispatch runs libevent's loop one turn at a time in C
// (evl_base_loop) rather than with event_base_dispatch, so that the events
// of connections accepted through AcceptEvents cost no call from C into Go:
// while a turn runs, libevent's callback for such an event only notes it in
// the base's batch, and the turn returns to Go once any is noted; Go then
// runs their callbacks, in the order libevent reported them, and starts
// the next turn. A turn is one Go→C call, where each event was one C→Go call
// (the dearer kind: the callback's thread must take the Go runtime back and
// give it up again), and a turn with many fired events makes one call for
// all. Every other callback (listeners, buffer events, timers, events made
// with NewEvent) is called from C as before.
//
// A noted event whose connection was closed in the meantime (by a callback
// that ran before it, or from another goroutine through the hand-off), or
// whose event was deleted (Del), is skipped, as event_del cancels an
// active event: the batch holds the slot and the slot's generation, which
// Close and Del move on. (An Active in the meantime makes the event run
// again in the next turn, where libevent would have merged the two.) When the
// loop must stop part way (a panic, LoopBreak, Close), the events not yet
// run go back to libevent as active (event_active), so that the next
// Dispatch runs them, as libevent would have kept them.
//
// A callback of the batch that closes a connection's event costs no call
// into C either: the slot's connection ends at once, so that the batch's
// later entries for it are skipped, and the event and socket are handed to
// the next turn's call, which closes them before libevent runs (or to one
// call of their own when the loop stops instead). Until then the socket
// stays open, so no accept can reuse the slot meanwhile.

// dispatchTurns is event_base_dispatch, turn after turn in C, with the
// fired connection events run between turns. It returns as
// event_base_dispatch does.
func (b *Base) dispatchTurns() C.int {
	// Between turns the goroutine is in Go: locked, it stays the loop's
	// one thread, as in event_base_dispatch.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		if rc, more := b.turns(0, 0); !more {
			return rc
		}
	}
}

// turns runs the loop in C (evl_base_loop: without blocking if nonblock,
// one turn only if once) until a turn noted connection events, then runs
// those. more reports whether the loop goes on; if not, rc is what
// event_base_dispatch would return. Loop only; b.batch is made (Dispatch).
func (b *Base) turns(nonblock, once C.int) (rc C.int, more bool) {
	bt := b.batch
	if rc = C.evl_base_loop_u(b.uptr(), C.uintptr_t(uintptr(unsafe.Pointer(bt))), nonblock, once); rc != 0 {
		return rc, false
	}
	if bt.n > 0 && !b.runFired(bt) || bt.stop != 0 {
		b.closeNoted()
		return 0, false
	}
	return 0, true
}

// closeNoted closes the connections that callbacks of the last batch
// closed, now rather than as the next turn starts: the loop stops.
func (b *Base) closeNoted() {
	if bt := b.batch; bt != nil && bt.nclosing > 0 {
		C.evl_batch_close(bt)
	}
}

// closeAtTurn is Close of a connection's event and socket from a batch's
// callback: the slot's connection ends now, and the event and socket go
// as the next turn starts, in the call into C that starts it, one call
// fewer per connection. It reports false where that cannot be (not in a
// batch, or its room for closes is full): the caller closes at once.
func (b *Base) closeAtTurn(slot *C.struct_evl_conn_ev, fd int) bool {
	bt := b.batch
	if !b.inFired || bt.nclosing >= C.EVL_CLOSING {
		return false
	}
	// Later entries of the batch for the slot are skipped (runFired),
	// and nothing else can reach it: the socket stays open until then,
	// so no accept reuses the slot.
	slot.open = 0
	bt.closing[bt.nclosing] = C.struct_evl_closing{slot: slot, fd: C.int(fd)}
	bt.nclosing++
	return true
}

// runFired runs the callbacks of the events a turn noted in bt, and
// reports whether the loop goes on: false once a callback panicked, broke
// the loop or closed the base, with the rest handed back to libevent.
func (b *Base) runFired(bt *C.struct_evl_batch) bool {
	fired := unsafe.Slice(bt.e, bt.n)
	b.inFired = true
	defer func() { b.inFired = false }()
	for i := range fired {
		f := &fired[i]
		if s := f.slot; s.open != 0 && s.gen == f.gen {
			ev := handle(s.h).value().(*Event)
			ev.onEvent(ev.fd, Events(f.what))
		}
		if b.stopped() || b.breakOnLoop {
			for _, f := range fired[i+1:] {
				if s := f.slot; s.open != 0 && s.gen == f.gen {
					C.event_active(&s.ev, C.int(f.what), 1)
				}
			}
			bt.n = 0
			return false
		}
	}
	bt.n = 0
	return true
}

// uptr is the base's pointer as cgo takes it without a check (see
// evl_base_loop_u).
func (b *Base) uptr() C.uintptr_t { return C.uintptr_t(uintptr(unsafe.Pointer(b.ptr))) }

// freeBatch frees the batch, with the base.
func (b *Base) freeBatch() {
	if b.batch != nil {
		C.evl_batch_free(b.batch)
		b.batch = nil
	}
}
