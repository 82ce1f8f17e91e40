package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"time"
)

// callback runs f, which calls a user callback, on the loop goroutine, as
// every trampoline does, and reports whether f ran to its end. Before f:
// the loop passes through the Go scheduler if it is due (yieldIfDue), and
// nothing runs once a callback of the base panicked. Around f: a panic must
// not unwind through libevent's C frames, so it is recovered, the loop
// stops, and Dispatch re-panics with it. After f: work that other
// goroutines handed to the loop in the meantime runs now (see loopcall.go).
//
// f is a closure over the callback's arguments; callback does not keep it,
// so it lives on the trampoline's stack and costs no allocation.
func (b *Base) callback(f func()) (finished bool) {
	b.yieldIfDue()
	if b.stopped() {
		return false
	}
	defer func() {
		if !finished {
			if v := recover(); v != nil {
				b.callbackPanicked(v)
			}
		}
	}()
	f()
	if b.pending.Load() && !b.inTasks {
		b.runPending()
	}
	return true
}

// CallbackPanic is the value Dispatch panics with when a callback panicked.
type CallbackPanic struct {
	Value any    // the callback's panic value
	Stack []byte // the stack where it panicked
}

func (p *CallbackPanic) Error() string {
	return fmt.Sprintf("evlistener: callback panicked: %v\n\n%s", p.Value, p.Stack)
}

// Unwrap returns the panic value when it is an error.
func (p *CallbackPanic) Unwrap() error {
	err, _ := p.Value.(error)
	return err
}

// callbackPanicked records a recovered panic and stops the loop. It runs on
// the loop goroutine, in a callback's deferred recover.
func (b *Base) callbackPanicked(v any) {
	if b.panicked == nil {
		b.panicked = &CallbackPanic{Value: v, Stack: debug.Stack()}
	}
	C.event_base_loopbreak(b.ptr)
}

// stopped reports whether a callback panicked in the running Dispatch, in
// which case no further callback may run. Loop goroutine only.
func (b *Base) stopped() bool { return b.panicked != nil }

// breakLoop ends the running loop after the callback that runs now
// (event_base_loopbreak), and tells objects that run loops of their own
// inside one callback (a listener's accept loop) to stop them. Loop
// goroutine only.
func (b *Base) breakLoop() {
	C.event_base_loopbreak(b.ptr)
	b.breakOnLoop = true
}

// yieldEvery is how often a busy loop goroutine passes through the Go
// scheduler; the runtime's limit is 10 ms (forcePreemptNS). A pass costs
// the loop's CPU futex calls and thread switches (see yieldIfDueAt), so
// the interval is as long as the limit allows with 2 ms to spare for a
// late callback: 8 ms rather than 5 cut those calls by a third (bench/
// README.md, "A connection at C's cost, continued").
const yieldEvery = 8 * time.Millisecond

var clockStart = time.Now()

// yieldIfDue runs on the loop goroutine as a callback starts. A goroutine
// that has not been through the Go scheduler for 10 ms looks to the runtime
// like one hogging its P: sysmon then takes the P from the loop thread while
// it waits in epoll_wait, wakes another thread to hold it, and goes back to
// polling every 20 µs; each callback must then get a P back. On a loop's CPU
// that is thousands of context switches a second. Passing through the
// scheduler every few milliseconds, between callbacks, avoids all of it.
//
// The clock is read for the first callback of a busy-polling turn, which
// pollLoop needs, and otherwise once every clockEvery callbacks: callbacks
// that take a few microseconds read it every few tens, and it costs as much
// as a short callback's own work.
func (b *Base) yieldIfDue() {
	if b.firstCallback != 0 && b.unclocked < clockEvery {
		b.unclocked++
		return
	}
	b.unclocked = 0
	now := time.Since(clockStart)
	if b.firstCallback == 0 {
		b.firstCallback = now
	}
	b.yieldIfDueAt(now)
}

// clockEvery is how many callbacks yieldIfDue lets pass without reading
// the clock.
const clockEvery = 8

// yieldIfDueAt passes through the Go scheduler if yieldEvery has gone by
// since the last pass. The loop goroutine is locked to its thread (so that
// libevent, C's callbacks and Go's all run on one loop thread), so a pass
// hands the P to another thread, which finds the goroutine and hands it
// back: about four futex calls and two thread switches. Letting go of the
// lock for the pass would halve that, but the loop could then go on on
// another thread, which C code sharing the base may not expect
// (TestCEventsOnGoBase); the interval is what keeps the cost down.
func (b *Base) yieldIfDueAt(now time.Duration) {
	if now-b.lastYield < yieldEvery {
		return
	}
	b.lastYield = now
	runtime.Gosched()
}
