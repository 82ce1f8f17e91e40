package ctest

/*
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include <event2/thread.h>
*/
import "C"

import "unsafe"

// EnableLibeventDebugging turns on the checks libevent's own regression
// suite runs under: lock debugging (evthread_enable_lock_debugging aborts on
// a lock released by a thread that does not hold it, or freed while held)
// and event debug mode (event_enable_debug_mode aborts on misuse of an
// event). Both must come before the first event_base of the process, lock
// debugging after the lock callbacks are installed (evlistener.UsePthreads).
func EnableLibeventDebugging() {
	C.evthread_enable_lock_debugging()
	C.event_enable_debug_mode()
}

// WithCBytes copies b into C memory of exactly len(b) bytes and calls f with
// it, as libevent hands the accept callback a socket address in its own
// memory: under -asan, a read past the end is reported.
func WithCBytes(b []byte, f func(p unsafe.Pointer)) {
	p := C.malloc(C.size_t(max(len(b), 1)))
	defer C.free(p)
	if len(b) > 0 {
		C.memcpy(p, unsafe.Pointer(&b[0]), C.size_t(len(b)))
	}
	f(p)
}
