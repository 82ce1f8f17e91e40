package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

import (
	"strconv"
	"strings"
	"unsafe"
)

// The option and condition sets of libevent, each a Go type whose constants
// take their values from libevent's headers (as git2go and libvirt-go do), so
// that a value can be handed unchanged to C code that shares the object, and
// a wrong value cannot compile.

// Flag is a set of listener options (LEV_OPT_*).
type Flag uint

const (
	// LeaveSocketsBlocking leaves accepted sockets in blocking mode
	// (LEV_OPT_LEAVE_SOCKETS_BLOCKING). By default they are non-blocking.
	LeaveSocketsBlocking Flag = C.LEV_OPT_LEAVE_SOCKETS_BLOCKING
	// CloseOnFree closes the listening socket when the listener is closed
	// (LEV_OPT_CLOSE_ON_FREE).
	CloseOnFree Flag = C.LEV_OPT_CLOSE_ON_FREE
	// CloseOnExec sets close-on-exec on accepted sockets, and on the
	// listening socket NewBind creates (LEV_OPT_CLOSE_ON_EXEC).
	CloseOnExec Flag = C.LEV_OPT_CLOSE_ON_EXEC
	// Reuseable sets SO_REUSEADDR on the socket NewBind creates
	// (LEV_OPT_REUSEABLE). It does not let two live listeners share a port.
	Reuseable Flag = C.LEV_OPT_REUSEABLE
	// ThreadSafe gives the listener a lock (LEV_OPT_THREADSAFE). The
	// binding sets it for every listener on a base with locks; passing it
	// is allowed and changes nothing. A listener on a BaseNoLock base has
	// no lock either way: C threads cannot use such a base, so the lock
	// would guard nothing.
	ThreadSafe Flag = C.LEV_OPT_THREADSAFE
	// Disabled creates the listener disabled (LEV_OPT_DISABLED); Enable
	// starts it.
	Disabled Flag = C.LEV_OPT_DISABLED
	// DeferredAccept sets TCP_DEFER_ACCEPT on the socket NewBind creates
	// (LEV_OPT_DEFERRED_ACCEPT): connections are reported only once the
	// client has sent data. Use it only for client-speaks-first protocols.
	DeferredAccept Flag = C.LEV_OPT_DEFERRED_ACCEPT
	// ReuseablePort sets SO_REUSEPORT on the socket NewBind creates
	// (LEV_OPT_REUSEABLE_PORT), so several listeners can share one port.
	ReuseablePort Flag = C.LEV_OPT_REUSEABLE_PORT
	// BindIPv6Only sets IPV6_V6ONLY on the IPv6 socket NewBind creates
	// (LEV_OPT_BIND_IPV6ONLY).
	BindIPv6Only Flag = C.LEV_OPT_BIND_IPV6ONLY
)

var flagNames = []bitName[Flag]{
	{LeaveSocketsBlocking, "LeaveSocketsBlocking"}, {CloseOnFree, "CloseOnFree"},
	{CloseOnExec, "CloseOnExec"}, {Reuseable, "Reuseable"}, {ThreadSafe, "ThreadSafe"},
	{Disabled, "Disabled"}, {DeferredAccept, "DeferredAccept"},
	{ReuseablePort, "ReuseablePort"}, {BindIPv6Only, "BindIPv6Only"},
}

// knownFlags holds every bit that libevent 2.1.12 defines.
const knownFlags = LeaveSocketsBlocking | CloseOnFree | CloseOnExec | Reuseable | ThreadSafe |
	Disabled | DeferredAccept | ReuseablePort | BindIPv6Only

// String names the set bits joined by "|", as in "CloseOnFree|Reuseable".
// Bits libevent 2.1 does not define are shown in hex; the empty set is "0".
func (f Flag) String() string { return bitsString(f, flagNames) }

// BaseFlag is a set of event base options (EVENT_BASE_FLAG_*).
type BaseFlag int

const (
	// BaseNoLock creates the base without libevent's locks
	// (EVENT_BASE_FLAG_NOLOCK). Every method of the binding stays safe
	// from any goroutine: all of them run libevent on the loop thread, or
	// while no loop runs, and wake the loop without libevent's help. What
	// it rules out is C code using the base (CPtr) from a thread of its
	// own while Dispatch runs. Saves a lock and an unlock around every
	// callback and every event operation, and two per connection that a
	// listener on the base accepts (its listeners get no lock either, see
	// ThreadSafe): a program in which only Go code uses the base loses
	// nothing by it.
	BaseNoLock BaseFlag = C.EVENT_BASE_FLAG_NOLOCK
	// BaseIgnoreEnv ignores the EVENT_NO* environment variables that
	// disable backends (EVENT_BASE_FLAG_IGNORE_ENV).
	BaseIgnoreEnv BaseFlag = C.EVENT_BASE_FLAG_IGNORE_ENV
	// BaseNoCacheTime reads the clock for every timeout instead of once
	// per loop iteration (EVENT_BASE_FLAG_NO_CACHE_TIME).
	BaseNoCacheTime BaseFlag = C.EVENT_BASE_FLAG_NO_CACHE_TIME
	// BaseEPollUseChangelist batches epoll_ctl changes made within one
	// loop iteration (EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST).
	BaseEPollUseChangelist BaseFlag = C.EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST
	// BasePreciseTimer uses the most precise monotonic clock
	// (EVENT_BASE_FLAG_PRECISE_TIMER).
	BasePreciseTimer BaseFlag = C.EVENT_BASE_FLAG_PRECISE_TIMER
)

var baseFlagNames = []bitName[BaseFlag]{
	{BaseNoLock, "BaseNoLock"}, {BaseIgnoreEnv, "BaseIgnoreEnv"}, {BaseNoCacheTime, "BaseNoCacheTime"},
	{BaseEPollUseChangelist, "BaseEPollUseChangelist"}, {BasePreciseTimer, "BasePreciseTimer"},
}

const knownBaseFlags = BaseNoLock | BaseIgnoreEnv | BaseNoCacheTime | BaseEPollUseChangelist | BasePreciseTimer

// String names the set bits joined by "|", as in "BaseNoLock|BasePreciseTimer";
// other bits are shown in hex, the empty set as "0".
func (f BaseFlag) String() string { return bitsString(f, baseFlagNames) }

// BEVOption is a set of buffer event options (BEV_OPT_*).
type BEVOption int

const (
	// BEVOptCloseOnFree closes the socket when the buffer event is closed
	// (BEV_OPT_CLOSE_ON_FREE).
	BEVOptCloseOnFree BEVOption = C.BEV_OPT_CLOSE_ON_FREE
	// BEVOptThreadSafe gives the buffer event a lock (BEV_OPT_THREADSAFE).
	// The binding runs every operation on the loop thread, so it is not
	// needed for calls from other goroutines.
	BEVOptThreadSafe BEVOption = C.BEV_OPT_THREADSAFE
	// BEVOptDeferCallbacks runs the callbacks from the loop rather than
	// from inside the I/O that caused them (BEV_OPT_DEFER_CALLBACKS).
	BEVOptDeferCallbacks BEVOption = C.BEV_OPT_DEFER_CALLBACKS
	// BEVOptUnlockCallbacks releases the buffer event's lock while deferred
	// callbacks run (BEV_OPT_UNLOCK_CALLBACKS).
	BEVOptUnlockCallbacks BEVOption = C.BEV_OPT_UNLOCK_CALLBACKS
)

var bevOptionNames = []bitName[BEVOption]{
	{BEVOptCloseOnFree, "BEVOptCloseOnFree"}, {BEVOptThreadSafe, "BEVOptThreadSafe"},
	{BEVOptDeferCallbacks, "BEVOptDeferCallbacks"}, {BEVOptUnlockCallbacks, "BEVOptUnlockCallbacks"},
}

const knownBEVOptions = BEVOptCloseOnFree | BEVOptThreadSafe | BEVOptDeferCallbacks | BEVOptUnlockCallbacks

// String names the set bits joined by "|", as in
// "BEVOptCloseOnFree|BEVOptDeferCallbacks"; other bits are shown in hex, the
// empty set as "0".
func (o BEVOption) String() string { return bitsString(o, bevOptionNames) }

// BEVEvent is the set of conditions a buffer event reports to its event
// callback (BEV_EVENT_*).
type BEVEvent int16

const (
	BEVEventReading   BEVEvent = C.BEV_EVENT_READING   // while reading
	BEVEventWriting   BEVEvent = C.BEV_EVENT_WRITING   // while writing
	BEVEventEOF       BEVEvent = C.BEV_EVENT_EOF       // end of stream
	BEVEventError     BEVEvent = C.BEV_EVENT_ERROR     // a read or write failed
	BEVEventTimeout   BEVEvent = C.BEV_EVENT_TIMEOUT   // a timeout passed
	BEVEventConnected BEVEvent = C.BEV_EVENT_CONNECTED // a connect finished

	// BEVEventOutputFull: the output buffer passed the write high
	// watermark (see BufferEvent.SetWatermark). Not a libevent bit:
	// libevent 2.1 ignores that watermark, and the binding reports it.
	BEVEventOutputFull BEVEvent = 0x100
)

var bevEventNames = []bitName[BEVEvent]{
	{BEVEventReading, "BEVEventReading"}, {BEVEventWriting, "BEVEventWriting"}, {BEVEventEOF, "BEVEventEOF"},
	{BEVEventError, "BEVEventError"}, {BEVEventTimeout, "BEVEventTimeout"}, {BEVEventConnected, "BEVEventConnected"},
	{BEVEventOutputFull, "BEVEventOutputFull"},
}

// String names the set bits joined by "|", as in
// "BEVEventReading|BEVEventEOF"; other bits are shown in hex, the empty set
// as "0".
func (e BEVEvent) String() string { return bitsString(e, bevEventNames) }

// Events is a set of event conditions (EV_*). EV_SIGNAL is left out on
// purpose: signals belong to os/signal, whose handlers libevent's would
// replace.
type Events int16

const (
	// EvTimeout: the event's timeout passed (EV_TIMEOUT).
	EvTimeout Events = C.EV_TIMEOUT
	// EvRead: the file descriptor is readable (EV_READ).
	EvRead Events = C.EV_READ
	// EvWrite: the file descriptor is writable (EV_WRITE).
	EvWrite Events = C.EV_WRITE
	// EvPersist keeps the event pending after it fired (EV_PERSIST).
	EvPersist Events = C.EV_PERSIST
	// EvET asks for edge-triggered notification (EV_ET).
	EvET Events = C.EV_ET
	// EvClosed: the peer closed the connection (EV_CLOSED; epoll only).
	EvClosed Events = C.EV_CLOSED
)

var eventNames = []bitName[Events]{
	{EvTimeout, "EvTimeout"}, {EvRead, "EvRead"}, {EvWrite, "EvWrite"},
	{EvPersist, "EvPersist"}, {EvET, "EvET"}, {EvClosed, "EvClosed"},
}

const knownEvents = EvTimeout | EvRead | EvWrite | EvPersist | EvET | EvClosed

// String names the set bits joined by "|", as in "EvRead|EvPersist"; other
// bits are shown in hex, the empty set as "0".
func (e Events) String() string { return bitsString(e, eventNames) }

// bitName names one bit of a set.
type bitName[T bits] struct {
	bit  T
	name string
}

type bits interface {
	~uint | ~int | ~int16
}

// bitsString is the String method of every set: the names of the set bits in
// the order of names, joined by "|", then the unnamed bits in hex; "0" for
// the empty set.
func bitsString[T bits](v T, names []bitName[T]) string {
	if v == 0 {
		return "0"
	}
	var parts []string
	var known T
	for _, n := range names {
		known |= n.bit
		if v&n.bit != 0 {
			parts = append(parts, n.name)
		}
	}
	if rest := v &^ known; rest != 0 {
		// As unsigned bits of the type's own width: Events(-1) is 0xffff.
		mask := ^uint64(0) >> (64 - 8*unsafe.Sizeof(v))
		parts = append(parts, "0x"+strconv.FormatUint(uint64(rest)&mask, 16))
	}
	return strings.Join(parts, "|")
}
