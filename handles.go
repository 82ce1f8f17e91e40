package evlistener

import (
	"sync"
	"sync/atomic"
)

// The registry: every Go object that libevent calls back into is reached
// through a handle, passed to C as a uintptr_t and stored by libevent as its
// void *cbarg. No Go pointer is ever kept in C memory. Handles are deleted
// when the object that owns them closes; liveHandles lets tests prove that
// none is left behind.
//
// A handle is an index into a table of fixed-size chunks, so that the lookup
// every callback makes is two loads and no lock (runtime/cgo.Handle takes a
// sync.Map lookup, and allocates on every NewHandle). Freed handles are
// reused. The slot of a handle is written before the handle reaches C and
// cleared after C has stopped using it; both hand-overs go through the
// base's lock or the loop thread, which orders them with the callbacks that
// read the slot.
type handle uintptr

const (
	handleChunkBits = 12
	handleChunkSize = 1 << handleChunkBits
	maxHandleChunks = 1 << 14 // 64M handles at most
)

var registry struct {
	mu     sync.Mutex
	free   []handle
	next   handle // the lowest handle never used; 0 is never a handle
	live   atomic.Int64
	chunks [maxHandleChunks]atomic.Pointer[[handleChunkSize]any]
}

func newHandle(v any) handle {
	if v == nil {
		panic("evlistener: handle for nil")
	}
	r := &registry
	r.mu.Lock()
	defer r.mu.Unlock()
	var h handle
	if n := len(r.free); n > 0 {
		h = r.free[n-1]
		r.free = r.free[:n-1]
	} else {
		if r.next == 0 {
			r.next = 1
		}
		h = r.next
		if h>>handleChunkBits >= maxHandleChunks {
			panic("evlistener: out of handles")
		}
		r.next++
		if r.chunks[h>>handleChunkBits].Load() == nil {
			r.chunks[h>>handleChunkBits].Store(new([handleChunkSize]any))
		}
	}
	r.chunks[h>>handleChunkBits].Load()[h&(handleChunkSize-1)] = v
	r.live.Add(1)
	return h
}

// value returns the object of a live handle; it panics for any other.
func (h handle) value() any {
	var v any
	if i := h >> handleChunkBits; i < maxHandleChunks {
		if c := registry.chunks[i].Load(); c != nil {
			v = c[h&(handleChunkSize-1)]
		}
	}
	if v == nil {
		panic("evlistener: callback for a handle that is not live")
	}
	return v
}

func deleteHandle(h handle) {
	r := &registry
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.chunks[h>>handleChunkBits].Load()
	if c == nil || c[h&(handleChunkSize-1)] == nil {
		panic("evlistener: deleting a handle that is not live")
	}
	c[h&(handleChunkSize-1)] = nil
	r.free = append(r.free, h)
	r.live.Add(-1)
}

// liveHandles reports how many handles are registered now.
func liveHandles() int64 { return registry.live.Load() }
