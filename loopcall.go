package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

import (
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evlistener/evlistener/internal/goid"
)

// The loop hand-off. libevent 2.1 is safe only on the loop thread:
// evconnlistener_disable and _free deadlock when another thread calls them
// during a callback (libevent issue #1224), and buffer events share the
// hazard (libevent_obsolete#105). So every method runs its libevent work,
// its loop half, on the loop goroutine: directly when called there (from a
// callback); handed to the loop while Dispatch runs, which runs it and wakes
// the caller; and with no Dispatch running on the caller's goroutine, which
// counts as the loop meanwhile (see Base.call).
//
// Handed-over work runs after the callback that runs now, never after a
// backlog: every Go callback ends by looking at one atomic flag and runs
// what is pending (Base.callback), so neither libevent's accept loop, which
// goes on accepting while connections are queued, nor a long queue of
// active events keeps it waiting. With no callback running, the wake-up
// event runs it.
//
// Public methods are one call of loopRun, loopRunWith, loopGet or
// loopGetWith with a method expression for the loop half, (*Listener).enable
// say: a method value or a closure would escape to the loop's queue and be
// allocated on every call, also on the loop path, which allocates nothing.
// The four differ only in the shape of the loop half they take, so that
// each loop half keeps its plain signature; all four are loopCall.

// loopHalf is the loop half of a method in one of its four shapes: with or
// without an argument, with or without a result. Exactly one is set. A
// struct of the method expressions, not a closure that adapts them, since
// the closure would be allocated on every call.
type loopHalf[O loopObject, A, R any] struct {
	run     func(O) error
	runWith func(O, A) error
	get     func(O) (R, error)
	getWith func(O, A) (R, error)
}

// call runs the loop half on the loop goroutine, for o's method op: once o
// is closed it returns R's zero value and ErrClosed without running.
func (f loopHalf[O, A, R]) call(op string, o O, a A) (r R, err error) {
	if err := errIfClosed(op, o); err != nil {
		return r, err
	}
	switch {
	case f.run != nil:
		err = f.run(o)
	case f.runWith != nil:
		err = f.runWith(o, a)
	case f.get != nil:
		r, err = f.get(o)
	default:
		r, err = f.getWith(o, a)
	}
	return r, wrapError(op, o, err)
}

// loopCall is the one hand-off: it runs f, the loop half of o's method op,
// with a on the loop (see Base.call) and returns its results. Once o is
// closed they are R's zero value and ErrClosed, without f running. Errors
// come back as *net.OpError values that name op (see wrapError).
func loopCall[O loopObject, A, R any](op string, o O, f loopHalf[O, A, R], a A) (R, error) {
	if o.header().base.onLoop() {
		return f.call(op, o, a)
	}
	return loopCallHandedOff(op, o, f, a)
}

// loopCallHandedOff is loopCall's way through the hand-off, apart so that
// r, which the closure writes, is allocated only on this path.
func loopCallHandedOff[O loopObject, A, R any](op string, o O, f loopHalf[O, A, R], a A) (r R, err error) {
	err = o.header().base.call(func() error {
		var err error
		r, err = f.call(op, o, a)
		return err
	})
	if err == ErrClosed { // the base's own, unwrapped: it is closed
		err = endpoints{}.opError(op, err)
	}
	return r, err
}

// loopRun runs f(o), the loop half of o's method op, on the loop and
// returns its error (see loopCall).
func loopRun[O loopObject](op string, o O, f func(O) error) error {
	_, err := loopCall(op, o, loopHalf[O, struct{}, struct{}]{run: f}, struct{}{})
	return err
}

// loopRunWith is loopRun for a loop half with an argument.
func loopRunWith[O loopObject, A any](op string, o O, f func(O, A) error, a A) error {
	_, err := loopCall(op, o, loopHalf[O, A, struct{}]{runWith: f}, a)
	return err
}

// loopGet is loopRun for a loop half with a result, which is zero once
// o is closed.
func loopGet[O loopObject, R any](op string, o O, f func(O) (R, error)) (R, error) {
	return loopCall(op, o, loopHalf[O, struct{}, R]{get: f}, struct{}{})
}

// loopGetWith is loopGet for a loop half with an argument.
func loopGetWith[O loopObject, A, R any](op string, o O, f func(O, A) (R, error), a A) (R, error) {
	return loopCall(op, o, loopHalf[O, A, R]{getWith: f}, a)
}

// Methods that take the caller's memory (Write, Read, ReadAt, the Append
// and Index methods) call their loop half directly on the loop, between
// errIfClosed and wrapError, as loopHalf.call does: handed to loopCall,
// the caller's slice would escape to the heap on every path, and so also
// be allocated on the loop's. Elsewhere they hand the loop a copy.

// errIfClosed is ErrClosed as o's method op returns it once o is closed,
// nil while it is open. Loop goroutine only.
func errIfClosed[O loopObject](op string, o O) error {
	if !o.header().closed.Load() {
		return nil
	}
	return o.endpoints().opError(op, ErrClosed)
}

// wrapError wraps err, the error of the loop half of o's method op, as
// Go's net wraps its errors: a *net.OpError with op and o's addresses,
// around the errno (as an *os.SyscallError where there is one) or
// ErrClosed. nil and io.EOF, which io.Reader wants as it is, are returned
// as they are. Loop goroutine only.
func wrapError[O loopObject](op string, o O, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	return o.endpoints().opError(op, err)
}

// call runs fn on the loop goroutine and returns its error: at once from
// the goroutine that counts as the loop (a callback); handed to the loop
// while Dispatch runs, the caller waiting; with no Dispatch running, on the
// caller's goroutine, which counts as the loop meanwhile (the loop is lent
// to it, b.lent): no Dispatch
// starts and no other goroutine runs loop work until fn returns, and calls
// that fn makes run at once.
func (b *Base) call(fn func() error) error {
	if b.onLoop() {
		return fn()
	}
	b.lockLoop(false)
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if !b.running {
		b.lent = true
		b.loopG.Store(goid.Get())
		b.mu.Unlock()
		defer b.returnLoop()
		return fn()
	}
	t := newTask(fn, false)
	b.queue = append(b.queue, t)
	b.requestLocked()
	b.mu.Unlock()
	t.done.wait()
	err, pan := t.err, t.pan
	t.release()
	if pan != nil {
		panic(pan) // fn panicked on the loop: it is the caller's
	}
	return err
}

// returnLoop ends the caller's loan of the loop (see call), once what fn
// posted has run. A posted function's panic goes on here, on the goroutine
// that ran it.
func (b *Base) returnLoop() {
	pan := b.drainLent()
	b.mu.Lock()
	b.endLoan()
	b.mu.Unlock()
	if pan != nil {
		panic(pan)
	}
}

// drainLent runs the queued work, including what that work queues, on
// the goroutine that counts as the loop with no Dispatch running (b.lent),
// and returns the first panic of a posted function.
func (b *Base) drainLent() (pan any) {
	for {
		b.mu.Lock()
		q := b.queue
		b.queue = nil
		if len(q) == 0 {
			b.pending.Store(false)
			b.mu.Unlock()
			return pan
		}
		b.mu.Unlock()
		if p := b.runTasks(q); pan == nil {
			pan = p
		}
	}
}

// lockLoop locks b.mu, once no other goroutine runs loop work with no
// Dispatch (b.lent); onLoop says the caller is that goroutine itself.
func (b *Base) lockLoop(onLoop bool) {
	b.mu.Lock()
	for b.lent && !onLoop {
		b.idle.Wait()
	}
}

// endLoan ends a turn as the loop without Dispatch; b.mu is held.
func (b *Base) endLoan() {
	b.lent = false
	b.loopG.Store(0)
	b.idle.Broadcast()
}

// requestLocked tells the loop that work is pending: the flag that every
// callback looks at as it ends, and, the first time, a wake-up for a loop
// that waits in the kernel. b.mu is held.
func (b *Base) requestLocked() {
	if !b.pending.Load() {
		b.pending.Store(true)
		b.wake.wake()
	}
}

// runPending runs the work handed to the loop, and delivers a LoopBreak or
// Close asked for from another goroutine. It runs on the loop goroutine:
// as a callback ends, and from the wake-up event. A posted function that
// panics stops the loop as a callback that panics does.
func (b *Base) runPending() {
	b.mu.Lock()
	q := b.queue
	b.queue = nil
	brk := b.breakReq
	b.breakReq = false
	b.pending.Store(false)
	b.mu.Unlock()
	if pan := b.runTasks(q); pan != nil {
		b.callbackPanicked(pan)
	}
	if brk {
		b.breakLoop()
	}
}

// Do runs f on the loop goroutine and waits for it: at once when called
// from a callback of the base (or from a function Do or Post runs); handed
// to the loop while Dispatch runs elsewhere, after the callback that runs
// now; with no Dispatch running, on the calling goroutine, with no
// callback or other loop work running meanwhile. Methods of objects on the
// base that f calls run at once, as from a callback. A panic in f goes on
// in the caller of Do. Do fails with ErrClosed once Close was called.
func (b *Base) Do(f func()) error {
	if f == nil {
		return b.opError("do", errNilFunc)
	}
	if b.onLoop() {
		f()
		return nil
	}
	return b.opError("do", b.call(func() error { f(); return nil }))
}

// Post queues f to run on the loop goroutine and returns at once: while
// Dispatch runs, f runs after the callback that runs now (also when Post
// is called from a callback, or from a function Do or Post runs: after that
// callback or function); functions posted run in the order of their Post
// calls, with work from other methods in the order it was handed over.
// With no Dispatch running, the calling goroutine runs f before Post
// returns, as Do would. A panic in a posted function stops the loop as a
// panicking callback does (Dispatch panics with a *CallbackPanic). Post
// fails with ErrClosed once Close was called; a function posted before
// Close runs before Close returns.
func (b *Base) Post(f func()) error {
	const op = "post"
	if f == nil {
		return b.opError(op, errNilFunc)
	}
	fn := func() error { f(); return nil }
	b.lockLoop(b.onLoop())
	if b.closed {
		b.mu.Unlock()
		return b.opError(op, ErrClosed)
	}
	if !b.running && !b.lent {
		b.mu.Unlock()
		return b.opError(op, b.call(fn))
	}
	b.queue = append(b.queue, newTask(fn, true))
	b.requestLocked()
	b.mu.Unlock()
	return nil
}

// postLocal queues f, the binding's own work, to run on the loop after the
// callback that runs now. Loop goroutine only.
func (b *Base) postLocal(f func()) {
	b.mu.Lock()
	b.queue = append(b.queue, newTask(func() error { f(); return nil }, true))
	b.requestLocked()
	b.mu.Unlock()
}

// loopTask is work handed to the loop: a method's loop half (the caller
// waits for it) or a posted function (async: nobody waits).
type loopTask struct {
	fn    func() error
	err   error
	pan   any // what fn panicked with
	async bool
	done  taskDone
}

var taskPool = sync.Pool{New: func() any {
	return &loopTask{done: taskDone{ch: make(chan struct{}, 1)}}
}}

func newTask(fn func() error, async bool) *loopTask {
	t := taskPool.Get().(*loopTask)
	t.fn, t.async = fn, async
	return t
}

func (t *loopTask) release() {
	t.fn, t.err, t.pan = nil, nil, nil
	taskPool.Put(t)
}

// runTasks runs q in order on the loop, wakes the callers that wait, and
// returns the first panic of a posted function. No panic stops the
// others: a waiter must not wait forever.
func (b *Base) runTasks(q []*loopTask) (pan any) {
	// Work that a task queues runs after the rest of q, in order, also
	// when the task runs a callback, whose end would run it at once.
	outer := b.inTasks
	b.inTasks = true
	defer func() { b.inTasks = outer }()
	for _, t := range q {
		p := t.run()
		if !t.async {
			t.pan = p
			t.done.signal()
			continue
		}
		if pan == nil {
			pan = p
		}
		t.release()
	}
	return pan
}

func (t *loopTask) run() (pan any) {
	defer func() { pan = recover() }()
	t.err = t.fn()
	return nil
}

// taskDone tells the goroutine that handed work to the loop that the work
// is done. The waiter first spins for a while, yielding its P between
// looks, and then parks on a channel; the loop's signal is an atomic store,
// and a channel send only when the waiter parked.
//
// Parking alone is slow: the goroutine the loop readies goes to the run
// queue of the loop thread's P, which then sits in a cgo call (epoll_wait)
// until another thread steals the goroutine or sysmon takes the P back,
// several times slower than a waiter blocked in futex(2) (bench/README.md
// has the figures). A blocking system call per waiter is fast but holds an
// OS thread each: 10,000 waiters end the process. A
// spinning waiter sees the signal within a fraction of a microsecond, and
// holds no thread of its own; at most GOMAXPROCS-1 goroutines spin at once,
// so that the loop thread and the spinners never compete for the last P,
// and all other waiters park at once.
type taskDone struct {
	state atomic.Uint32
	ch    chan struct{} // capacity 1; a send only to a parked waiter
}

const (
	taskWaiting uint32 = iota
	taskDoneState
	taskParked
)

// spinFor bounds a waiter's spinning: a few times what a hand-off to a
// loop that waits in the kernel takes (see bench/README.md); a loop busy in
// a callback takes as long as the callback, and spinning through that
// would only burn CPU time.
const spinFor = 50 * time.Microsecond

// spinners counts the goroutines spinning in taskDone.wait.
var spinners atomic.Int32

func (d *taskDone) wait() {
	if !d.spin() && d.state.CompareAndSwap(taskWaiting, taskParked) {
		<-d.ch
	}
	d.state.Store(taskWaiting) // ready for reuse
}

// spin waits up to spinFor for the signal and reports whether it came.
func (d *taskDone) spin() bool {
	if int(spinners.Add(1)) >= runtime.GOMAXPROCS(0) {
		spinners.Add(-1)
		return false
	}
	defer spinners.Add(-1)
	start := time.Now()
	for i := 1; ; i++ {
		if d.state.Load() == taskDoneState {
			return true
		}
		if i%16 == 0 && time.Since(start) > spinFor {
			return false
		}
		runtime.Gosched()
	}
}

func (d *taskDone) signal() {
	if d.state.Swap(taskDoneState) == taskParked {
		d.ch <- struct{}{}
	}
}
