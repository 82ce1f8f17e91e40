package evlistener

import (
	"runtime/cgo"
	"sync/atomic"
)

// The registry: every Go object that libevent calls back into is reached
// through a runtime/cgo.Handle, passed to C as a uintptr_t and stored by
// libevent as its void *cbarg. No Go pointer is ever kept in C memory.
// Handles are deleted when the object that owns them closes; liveHandles lets
// tests prove that none is left behind.

var handleCount atomic.Int64

func newHandle(v any) cgo.Handle {
	handleCount.Add(1)
	return cgo.NewHandle(v)
}

func deleteHandle(h cgo.Handle) {
	h.Delete()
	handleCount.Add(-1)
}

// liveHandles reports how many handles are registered now.
func liveHandles() int64 { return handleCount.Load() }
