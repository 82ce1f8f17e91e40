package evlistener

/*
#include "cgo_bridge.h"
*/
import "C"

// benchAccept calls l's accept trampoline n times from C with fd, as
// libevent's accept loop would: the cost of one C→Go accept callback.
// Test code only; cgo cannot be used in _test.go files.
func benchAccept(l *Listener, fd, n int) {
	C.evl_bench_accept(C.uintptr_t(l.h), C.int(fd), C.int(n))
}
