package evlistener

// The functions libevent calls, through the shims in cgo_bridge.c. They live
// alone because a file with //export may declare but not define C functions
// in its preamble. Each one turns the handle back into its Go object and
// calls a method; the logic lives with the object.
//
// Adding a callback: (1) write a static C shim in cgo_bridge.c that casts
// void *arg to uintptr_t, captures errno if it matters, and calls the
// exported function; (2) declare any constructor taking the shim in
// cgo_bridge.h; (3) export the function here with C types only; (4) in the
// method it calls, run the user's callback through Base.callback, which
// recovers its panic (none may unwind through libevent's C frames), and
// release the handle when the object closes.

/*
#include "cgo_bridge.h"
*/
import "C"

import (
	"syscall"
	"unsafe"
)

//export goBaseWake
func goBaseWake(h C.uintptr_t) {
	b := handle(h).value().(*Base)
	b.wake.drain()
	b.runPending()
}

//export goTimer
func goTimer(h C.uintptr_t) {
	handle(h).value().(interface{ onTimer() }).onTimer()
}

//export goListenerAccept
func goListenerAccept(h C.uintptr_t, fd C.evutil_socket_t, sa *C.struct_sockaddr, socklen C.int) {
	handle(h).value().(*Listener).onAccept(int(fd), unsafe.Pointer(sa), int(socklen))
}

//export goListenerError
func goListenerError(h C.uintptr_t, err C.int) {
	handle(h).value().(*Listener).onAcceptError(syscall.Errno(err))
}

//export goBufferEventRead
func goBufferEventRead(h C.uintptr_t) {
	handle(h).value().(*BufferEvent).onRead()
}

//export goBufferEventWrite
func goBufferEventWrite(h C.uintptr_t) {
	handle(h).value().(*BufferEvent).onWrite()
}

//export goBufferEventEvent
func goBufferEventEvent(h C.uintptr_t, what C.short, err C.int) {
	handle(h).value().(*BufferEvent).onEvent(BEVEvent(what), syscall.Errno(err))
}

//export goEvent
func goEvent(h C.uintptr_t, fd C.evutil_socket_t, what C.short) {
	handle(h).value().(*Event).onEvent(int(fd), Events(what))
}

//export goListenerAcceptConn
func goListenerAcceptConn(h C.uintptr_t, fd C.evutil_socket_t, slot unsafe.Pointer, err C.int) {
	handle(h).value().(*Listener).onAcceptConn(int(fd), slot, syscall.Errno(err))
}
