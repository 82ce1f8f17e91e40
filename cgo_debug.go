package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

// enableLibeventDebugging turns on the checks libevent's own regression
// suite runs under: lock debugging (evthread_enable_lock_debugging aborts on
// a lock released by a thread that does not hold it, or freed while held)
// and event debug mode (event_enable_debug_mode aborts on misuse of an
// event). Both must come before the first event_base of the process.
// Test code only; cgo cannot be used in _test.go files.
func enableLibeventDebugging() error {
	if err := UsePthreads(); err != nil {
		return err
	}
	C.evthread_enable_lock_debugging()
	C.event_enable_debug_mode()
	return nil
}
