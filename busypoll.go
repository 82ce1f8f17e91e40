package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

import (
	"errors"
	"math"
	"runtime"
	"time"
)

// DefaultBusyPollBudget is the share of its time in callbacks that a loop
// may spend polling, unless SetBusyPollBudget says otherwise.
const DefaultBusyPollBudget = 0.1

// SetBusyPoll makes Dispatch keep polling for events, without sleeping, for
// up to d after each turn of the loop that ran a Go callback, before it
// waits in the kernel again; d <= 0 turns it off (the default). On a
// request/response server the next request often arrives within
// microseconds of the last answer: polling catches it without the thread
// falling asleep and being woken, which is much of the latency of a round
// trip, at the price of CPU time spent polling.
//
// Polling is kept to what it is worth. The loop earns polling time as it
// works: a share of the time its callbacks run (the budget; 10 % unless
// SetBusyPollBudget says otherwise). It polls only once it has earned as
// much as work has lately taken to come, and then for no longer than it
// has earned nor than twice that time, so polling adds at most that share
// to the loop's CPU time, and an idle loop, which earns nothing, does not
// poll. Polls that found nothing in time teach it that work comes later:
// it saves up for longer before it polls again; work that always comes
// later than d gets one probe per d earned. It takes effect from the next
// Dispatch.
func (b *Base) SetBusyPoll(d time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return b.opError("set busy poll", ErrClosed)
	}
	b.busyPoll.Store(int64(max(d, 0)))
	return nil
}

// SetBusyPollBudget sets the share of its time in callbacks that a loop
// with SetBusyPoll may spend polling on top (DefaultBusyPollBudget, 0.1,
// unless set). A larger share buys lower latency on a connection whose
// requests come a little later than the answers go out, for more CPU time:
// math.Inf(1) polls for the whole SetBusyPoll window after every turn that
// did work, whatever it costs; 0 never polls. A negative or NaN share is
// an error. It takes effect from the next Dispatch.
func (b *Base) SetBusyPollBudget(share float64) error {
	const op = "set busy poll budget"
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return b.opError(op, ErrClosed)
	}
	if share < 0 || math.IsNaN(share) {
		return b.opError(op, errors.New("the share must be 0 or more"))
	}
	b.pollBudget.Store(math.Float64bits(share))
	return nil
}

// pollLoop is event_base_dispatch with busy polling: one turn of the loop
// at a time (evl_base_loop, see turns.go), without blocking (EVLOOP_NONBLOCK) while the
// last callback ran less than the poller's limit ago, blocking
// (EVLOOP_ONCE) otherwise. It returns as event_base_dispatch does: 1 when
// nothing is pending, -1 on a backend error, 0 after LoopBreak or LoopExit.
func (b *Base) pollLoop(spin time.Duration, share float64) C.int {
	// Between turns the goroutine is in Go, where the scheduler could move
	// it to another thread: libevent and C callbacks would no longer see
	// one loop thread, as they do in event_base_dispatch.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p := newPoller(spin, share)
	lastActive := time.Since(clockStart)
	// Polling follows work: until a turn has run a callback the loop
	// sleeps, whatever the budget (an unlimited one included).
	var limit time.Duration
	// justWorked: the last turn ran callbacks. The first turn after work
	// polls whenever the poller allows any polling, however long the
	// bookkeeping took (a slow machine, or a sanitizer, can take longer
	// than a short limit between the callback and this check).
	justWorked := false
	for {
		b.firstCallback = 0
		nonblock := C.int(0)
		if now := time.Since(clockStart); limit > 0 && (justWorked || now-lastActive < limit) {
			nonblock = 1
			b.polls.Add(1)
			b.yieldIfDueAt(now) // no callback may run for a while
		}
		justWorked = false
		if rc, more := b.turns(nonblock, 1); !more {
			return rc
		}
		if b.firstCallback != 0 { // Go callbacks ran
			now := time.Since(clockStart)
			p.worked(b.firstCallback-lastActive, now-b.firstCallback)
			lastActive = now
			limit = p.limit()
			justWorked = true
		}
	}
}

// poller decides how long pollLoop polls after the last work: the
// budget's bookkeeping.
type poller struct {
	spin  time.Duration // SetBusyPoll: the most it polls after work
	share float64       // SetBusyPollBudget
	// credit is the polling time earned and not yet spent, at most spin:
	// share of the time callbacks ran, less the time spent polling.
	credit time.Duration
	// expect is how long work has lately taken to come after the last:
	// the time polls took to catch it, or a lower bound learnt from polls
	// that caught nothing. The loop polls only with at least that much
	// credit, or a full one.
	expect time.Duration
	// unlimited: a share of +Inf; it always polls for spin.
	unlimited bool
}

func newPoller(spin time.Duration, share float64) poller {
	return poller{spin: spin, share: share, unlimited: math.IsInf(share, 1)}
}

// minPoll is the shortest poll worth a turn: a few epoll_wait calls.
const minPoll = time.Microsecond

// limit is how long to poll after the last work.
func (p *poller) limit() time.Duration {
	if p.unlimited {
		return p.spin
	}
	if p.credit < p.expect && p.credit < p.spin {
		return 0 // saving up
	}
	// Work that has not come in twice the time it takes lately is likely
	// to come late this time: stop there, and keep the rest for later.
	return min(p.credit, max(2*p.expect, minPoll))
}

// worked records a turn whose callbacks started gap after the end of the
// last work and then ran for busy.
func (p *poller) worked(gap, busy time.Duration) {
	if p.unlimited {
		return
	}
	polled := p.limit()
	switch {
	case gap <= polled: // caught
		polled = gap
		p.expect = (3*p.expect + gap) / 4
	case polled > 0: // it came later than polling went on
		p.expect = min(gap, (3*p.expect+2*polled)/4)
	default: // it came while the loop slept: sooner than expected?
		p.expect = min(p.expect, gap)
	}
	earned := time.Duration(p.share * float64(busy))
	p.credit = min(max(p.credit-polled+earned, 0), p.spin)
}
