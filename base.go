package evlistener

/*
#cgo pkg-config: libevent_core libevent_pthreads
#include "cgo_bridge.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/evlistener/evlistener/internal/goid"
)

// Base is a libevent event_base: one event loop, run by Dispatch.
type Base struct {
	ptr   *C.struct_event_base
	wake  *wakeup // runs queued work on the loop thread
	h     handle
	owned bool // event_base_free on Close
	// noLock: made with BaseNoLock, so its listeners need no lock of
	// their own either (see Listener.open).
	noLock bool

	// connEnded counts the end of a Server's connection (object.serverConn)
	// on this base's loop; set once by the Server.
	connEnded func()
	// keepRunning: only LoopBreak, LoopExit and Close end Dispatch, not a
	// lack of events (EVLOOP_NO_EXIT_ON_EMPTY); set once by the Server
	// before its loop starts.
	keepRunning bool
	// poolOpened and poolEnded count the start and the end of a
	// connection of conns, for a Server that accepts through an acceptor;
	// set once by the Server. poolOpened runs before OnAccept, in the
	// accept callback, where it may stop libevent's accept loop.
	poolOpened func(*Listener)
	poolEnded  func()

	// loopG is the goroutine that counts as the loop: the one running
	// Dispatch, or, while none does, the one running loop work directly
	// (see Base.call); 0 when there is none.
	loopG atomic.Uintptr

	// mu guards the fields below.
	mu       sync.Mutex
	closed   bool // Close was called
	freed    bool
	running  bool       // Dispatch runs
	lent     bool       // with no Dispatch, the loop is lent to a caller (loopG)
	idle     *sync.Cond // on mu: signalled when a loan ends
	breakReq bool
	queue    []*loopTask // work handed to the loop (see Base.call)
	resume   []func()    // run by the next Dispatch, on the loop
	done     chan struct{}

	// pending is set while queue holds work or breakReq is set: every
	// callback looks at it as it ends (see loopcall.go).
	pending atomic.Bool

	objMu sync.Mutex
	objs  openLink // the list head: objs.next is the first open object

	// conns holds the connections accepted through acceptors
	// (acceptconn.go); nil until the first. Loop-owned.
	conns *connTable
	// batch holds the connection events a turn of the loop noted
	// (turns.go); made by the first Dispatch. Loop-owned.
	batch *C.struct_evl_batch
	// inFired is set while runFired runs a batch's callbacks: the next
	// call into C is the next turn's (or closeNoted's), so a connection
	// closed meanwhile can be closed by that call (turns.go).
	inFired bool

	// panicked is set on the loop goroutine when a callback panics.
	panicked *CallbackPanic
	// inTasks is set while the loop runs handed-over work (runTasks).
	inTasks bool
	// breakOnLoop is set on the loop goroutine when a callback calls
	// LoopBreak or Close, so that objects stop their own loops too.
	breakOnLoop bool
	// lastYield is when the loop goroutine last went through the Go
	// scheduler (loop-owned; see yieldIfDue).
	lastYield time.Duration
	// firstCallback is when the first Go callback of pollLoop's current
	// turn started, 0 while none has; polls counts the turns pollLoop took
	// without sleeping (loop-owned).
	firstCallback time.Duration
	// unclocked counts the callbacks since yieldIfDue last read the clock
	// (loop-owned).
	unclocked int
	polls     atomic.Uint64 // read by tests while the loop runs

	busyPoll   atomic.Int64  // a time.Duration; see SetBusyPoll
	pollBudget atomic.Uint64 // float64 bits; see SetBusyPollBudget
}

// NewBase creates an event base (event_base_new) with libevent's pthread
// locking enabled, so that C code in the program may use it from its own
// threads too. Go code needs no locks: see NewBaseWithFlags.
func NewBase() (*Base, error) {
	return NewBaseWithFlags(0)
}

// NewBaseWithFlags creates an event base with options
// (event_base_new_with_config and event_config_set_flag); 0 is NewBase.
// libevent's pthread locking is set up first either way (UsePthreads), so
// that bases C creates later have locks.
func NewBaseWithFlags(flags BaseFlag) (*Base, error) {
	const op = "new base"
	if rest := flags &^ knownBaseFlags; rest != 0 {
		return nil, endpoints{}.opError(op, errors.New("unknown flags "+rest.String()))
	}
	if err := UsePthreads(); err != nil {
		return nil, err // a *net.OpError already
	}
	p := C.evl_base_new(C.int(flags))
	if p == nil {
		return nil, endpoints{}.opError(op, errors.New("event_base_new_with_config failed"))
	}
	b, err := adoptBase(p, true)
	if err != nil {
		C.event_base_free(p)
		return nil, endpoints{}.opError(op, err)
	}
	b.noLock = flags&BaseNoLock != 0
	return b, nil
}

// liveBases maps each event_base with an open Base to it, so that a base is
// never adopted twice.
var liveBases struct {
	sync.Mutex
	m map[*C.struct_event_base]*Base
}

func adoptBase(p *C.struct_event_base, owned bool) (*Base, error) {
	b := &Base{ptr: p, owned: owned}
	b.pollBudget.Store(math.Float64bits(DefaultBusyPollBudget))
	b.idle = sync.NewCond(&b.mu)
	b.objs.prev, b.objs.next = &b.objs, &b.objs
	liveBases.Lock()
	defer liveBases.Unlock()
	if liveBases.m[p] != nil {
		return nil, fmt.Errorf("event_base %p already has an open Base; share that one", p)
	}
	b.h = newHandle(b)
	w, err := newWakeup(p, b.h)
	if err != nil {
		deleteHandle(b.h)
		return nil, err
	}
	b.wake = w
	if liveBases.m == nil {
		liveBases.m = make(map[*C.struct_event_base]*Base)
	}
	liveBases.m[p] = b
	return b, nil
}

// CPtr returns the struct event_base * for C code in the same program, or nil
// once the base is closed. C code may add its own events to it; they run
// inside Dispatch, on its goroutine's thread. C must free its events before
// Close, and must not free a base from NewBase: Close does.
func (b *Base) CPtr() unsafe.Pointer {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.freed {
		return nil
	}
	return unsafe.Pointer(b.ptr)
}

// Method names the kernel mechanism libevent uses ("epoll" on Linux), or ""
// once the base is closed.
func (b *Base) Method() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.freed {
		return ""
	}
	return C.GoString(C.event_base_get_method(b.ptr))
}

// opError wraps err, the failure of the base's method op, as the methods
// of the objects on it wrap theirs (see endpoints.opError): a base has no
// addresses.
func (b *Base) opError(op string, err error) error {
	if err == nil {
		return nil
	}
	return endpoints{}.opError(op, err)
}

// onLoop reports whether the caller is the goroutine running Dispatch.
func (b *Base) onLoop() bool {
	g := b.loopG.Load()
	return g != 0 && g == goid.Get()
}

// Dispatch runs the event loop on the calling goroutine, as
// event_base_dispatch does, until nothing is pending, LoopBreak or LoopExit
// ends it, or Close is called. It returns nil in all these cases; it returns
// an error for a closed base, for a second concurrent Dispatch on the same
// base, or when libevent's backend fails. Callbacks of objects on the base
// run on this goroutine, one at a time; the goroutine stays on one OS thread
// meanwhile. The loop runs turn by turn: the events of connections accepted
// through AcceptEvents run from Go after the turn that reported them, every
// other callback from inside it (see EventOptions.OnEvent).
//
// If a callback panics, the loop stops, no further callback of the base runs,
// and Dispatch panics with a *CallbackPanic that holds the value and stack.
//
// GOMAXPROCS: while libevent waits for events, the goroutine sits in a cgo
// call and keeps its P. When no other P is idle, the runtime takes that P
// back after about 20 µs of waiting, and the callbacks that follow must win
// one back first: a cost on every wake-up of a loop that sleeps and wakes
// often (a busy server), not a matter of correctness (the package works at
// GOMAXPROCS=1). Keep GOMAXPROCS above the number of loops, also when the
// program is pinned to fewer CPUs (taskset, a container's CPU limit): an
// idle P costs nothing, and with one to spare each loop keeps its own.
func (b *Base) Dispatch() error {
	const op = "dispatch"
	if b.onLoop() { // from a callback, or from a function Do runs
		return b.opError(op, errDispatching)
	}
	b.lockLoop(false)
	if b.closed {
		b.mu.Unlock()
		return b.opError(op, ErrClosed)
	}
	if b.running {
		b.mu.Unlock()
		return b.opError(op, errDispatching)
	}
	if b.batch == nil { // the loop's turns' (turns.go); kept until Close
		if b.batch = C.evl_batch_new(); b.batch == nil {
			b.mu.Unlock()
			return b.opError(op, os.NewSyscallError("calloc", syscall.ENOMEM))
		}
	}
	if b.keepRunning {
		b.batch.keep = 1
	}
	b.running = true
	b.loopG.Store(goid.Get())
	b.breakOnLoop = false
	done := make(chan struct{})
	b.done = done
	resume := b.resume
	b.resume = nil
	b.mu.Unlock()

	for _, f := range resume {
		f()
	}
	var rc C.int
	if spin := time.Duration(b.busyPoll.Load()); spin > 0 {
		rc = b.pollLoop(spin, math.Float64frombits(b.pollBudget.Load()))
	} else {
		rc = b.dispatchTurns()
	}

	// Work handed over while the loop was stopping runs here, with this
	// goroutine still the loop's.
	b.mu.Lock()
	b.running = false
	b.lent = true
	b.breakReq = false
	b.mu.Unlock()
	if pan := b.drainLent(); pan != nil {
		b.callbackPanicked(pan)
	}
	b.mu.Lock()
	p := b.panicked
	b.panicked = nil
	b.breakOnLoop = false
	if b.closed {
		b.free()
	}
	close(done)
	b.endLoan()
	b.mu.Unlock()

	if p != nil {
		panic(p)
	}
	if rc < 0 {
		return b.opError(op, errors.New("event_base_dispatch failed"))
	}
	return nil
}

var errDispatching = errors.New("the loop is running already: one Dispatch at a time")

// LoopBreak makes a running Dispatch return promptly, after the callback that
// runs now, if any (event_base_loopbreak): no further callback starts, not
// even one for a connection already waiting in a listener's backlog, however
// many arrive. A break that lands while Dispatch is starting is not lost.
// With no Dispatch running it does nothing and returns nil. It returns
// without waiting for the loop.
func (b *Base) LoopBreak() error {
	if b.onLoop() {
		if b.running { // not loop work run with no Dispatch
			b.breakLoop()
		}
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return b.opError("loop break", ErrClosed)
	}
	if b.running {
		// event_base_loop clears its break flag when it starts, so the
		// break is delivered from inside the loop (runPending).
		b.breakReq = true
		b.requestLocked()
	}
	return nil
}

// LoopExit makes Dispatch return once the given time has passed
// (event_base_loopexit); callbacks already active still run. A pending
// LoopExit keeps Dispatch from returning for lack of events.
func (b *Base) LoopExit(after time.Duration) error {
	if after < 0 {
		after = 0
	}
	tv := C.struct_timeval{
		tv_sec:  C.time_t(after / time.Second),
		tv_usec: C.suseconds_t((after % time.Second) / time.Microsecond),
	}
	return b.opError("loop exit", b.call(func() error {
		if C.event_base_loopexit(b.ptr, &tv) != 0 {
			return errors.New("event_base_loopexit failed")
		}
		return nil
	}))
}

// Close closes every listener and buffer event still open on the base, then
// frees it (event_base_free; a base adopted with FromCPtr is left to its
// owner). While Dispatch runs on another goroutine, Close stops the loop and
// waits for Dispatch to return. Called from a callback of this base, it
// returns at once and the base is freed as Dispatch returns. Later calls
// fail with ErrClosed.
func (b *Base) Close() error {
	onLoop := b.onLoop()
	b.lockLoop(onLoop)
	if b.closed {
		b.mu.Unlock()
		return b.opError("close", ErrClosed)
	}
	b.closed = true
	if !b.running {
		b.free()
		b.mu.Unlock()
		return nil
	}
	if onLoop {
		b.breakLoop()
		b.mu.Unlock()
		return nil
	}
	b.breakReq = true
	b.requestLocked()
	done := b.done
	b.mu.Unlock()
	<-done
	return nil
}

// free releases everything. It runs with b.mu held and no loop running, on
// the goroutine that counts as the loop or with none.
func (b *Base) free() {
	for _, o := range b.openObjects() {
		o.obj.close()
	}
	b.wake.free()
	b.freeBatch()
	// Forget the pointer before event_base_free: a concurrent
	// event_base_new may get the same address at once.
	liveBases.Lock()
	delete(liveBases.m, b.ptr)
	liveBases.Unlock()
	if b.owned {
		C.event_base_free(b.ptr)
	}
	b.freed = true
	deleteHandle(b.h)
}

// resumeOnDispatch queues f to run on the loop when Dispatch next starts.
// It is called on the loop goroutine.
func (b *Base) resumeOnDispatch(f func()) {
	b.mu.Lock()
	b.resume = append(b.resume, f)
	b.mu.Unlock()
}
