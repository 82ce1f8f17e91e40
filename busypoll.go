package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

import (
	"runtime"
	"time"
)

// SetBusyPoll makes Dispatch keep polling for events, without sleeping, for
// up to d after each turn of the loop that ran a Go callback, before it
// waits in the kernel again; d <= 0 turns it off (the default). On a
// request/response server the next request often arrives within
// microseconds of the last answer: polling catches it without the thread
// falling asleep and being woken, which is much of the latency of a round
// trip, at the price of CPU time spent polling (at most d per burst of
// activity). The window adapts: while work keeps coming later than d after
// the last, it halves each time, so that a loop whose work comes seldom
// soon stops polling; work within d restores it. The Go runtime's
// scheduler spins in the same way before it parks a thread. It takes effect from the next Dispatch; it may be called
// from any goroutine.
func (b *Base) SetBusyPoll(d time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.busyPoll.Store(int64(max(d, 0)))
	return nil
}

// pollLoop is event_base_dispatch with busy polling: one turn of the loop
// at a time (event_base_loop), without blocking (EVLOOP_NONBLOCK) while the
// last callback ran less than a polling window ago, blocking (EVLOOP_ONCE)
// otherwise. It returns as event_base_dispatch does: 1 when nothing is
// pending, -1 on a backend error, 0 after LoopBreak or LoopExit.
//
// The window adapts. Work that came within spin of the last would have
// been caught by polling: the window is spin. Work that came later was not:
// the window halves, so that a loop whose work comes seldom soon stops
// spending CPU time on polls that find nothing.
func (b *Base) pollLoop(spin time.Duration) C.int {
	// Between turns the goroutine is in Go, where the scheduler could move
	// it to another thread: libevent and C callbacks would no longer see
	// one loop thread, as they do in event_base_dispatch.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	w := pollWindow{spin: spin, window: spin}
	lastActive := time.Since(clockStart) - spin
	for {
		b.firstCallback = 0
		mode := C.int(C.EVLOOP_ONCE)
		if now := time.Since(clockStart); now-lastActive < w.window {
			mode = C.EVLOOP_NONBLOCK
			b.polls.Add(1)
			b.yieldIfDueAt(now) // no callback may run for a while
		}
		if rc := C.event_base_loop(b.ptr, mode); rc != 0 {
			return rc
		}
		// event_base_loop clears these as it starts: look now.
		if C.event_base_got_break(b.ptr) != 0 || C.event_base_got_exit(b.ptr) != 0 {
			return 0
		}
		if b.firstCallback != 0 { // Go callbacks ran
			w.workAfter(b.firstCallback - lastActive)
			lastActive = time.Since(clockStart)
		}
	}
}

// pollWindow is how long pollLoop polls after the last work: spin at most.
type pollWindow struct {
	spin, window time.Duration
}

// workAfter adapts the window to work that came gap after the last.
func (w *pollWindow) workAfter(gap time.Duration) {
	if gap <= w.spin {
		w.window = w.spin // polling would have caught it
	} else {
		w.window /= 2
	}
}
