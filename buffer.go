package evlistener

/*
#cgo noescape evbuffer_add
#cgo nocallback evbuffer_add
#cgo noescape evbuffer_remove
#cgo nocallback evbuffer_remove
#include "cgo_bridge.h"
*/
import "C"

import (
	"errors"
	"io"
	"unsafe"
)

// Buffer is one of the two buffers of a buffer event (struct evbuffer).
// Its methods may be called from any goroutine; like the buffer event's,
// they run on the loop thread. Once the buffer event is closed they return
// ErrClosed (Len returns 0).
type Buffer struct {
	be  *BufferEvent
	ptr *C.struct_evbuffer // owned by the loop
}

// header makes a Buffer's methods run as its buffer event's do.
func (buf *Buffer) header() *object { return &buf.be.object }

// Len returns how many bytes the buffer holds (evbuffer_get_length).
func (buf *Buffer) Len() int {
	n, _ := get(buf, (*Buffer).length)
	return n
}

func (buf *Buffer) length() (int, error) {
	return int(C.evbuffer_get_length(buf.ptr)), nil
}

// Read moves up to len(p) bytes from the front of the buffer into p
// (evbuffer_remove). An empty buffer gives 0, io.EOF, as bytes.Buffer
// does: more data may arrive later.
func (buf *Buffer) Read(p []byte) (int, error) {
	if buf.be.base.onLoop() {
		if buf.be.closed.Load() {
			return 0, ErrClosed
		}
		return buf.read(p)
	}
	// Through a copy: p, handed to the loop, would escape to the heap, also
	// on the loop's path.
	tmp := make([]byte, len(p))
	n, err := get1(buf, (*Buffer).read, tmp)
	return copy(p, tmp[:n]), err // io.EOF as it is, as io.Reader wants
}

func (buf *Buffer) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := C.evbuffer_remove(buf.ptr, unsafe.Pointer(&p[0]), C.size_t(len(p)))
	if n < 0 {
		return 0, opError("read", errors.New("evbuffer_remove failed"))
	}
	if n == 0 {
		return 0, io.EOF
	}
	return int(n), nil
}

// Write appends a copy of p to the buffer (evbuffer_add).
func (buf *Buffer) Write(p []byte) (int, error) {
	if buf.be.base.onLoop() {
		if buf.be.closed.Load() {
			return 0, ErrClosed
		}
		return buf.write(p)
	}
	// Through a copy, as in Read.
	return get1(buf, (*Buffer).write, append([]byte(nil), p...))
}

func (buf *Buffer) write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if C.evbuffer_add(buf.ptr, unsafe.Pointer(&p[0]), C.size_t(len(p))) != 0 {
		return 0, opError("write", errors.New("evbuffer_add failed"))
	}
	return len(p), nil
}

// MoveTo moves everything in buf to the end of dst (evbuffer_add_buffer):
// the data is handed over, not copied, and buf is left empty. Both buffers
// must belong to buffer events on the same base. It returns how many bytes
// moved.
func (buf *Buffer) MoveTo(dst *Buffer) (int, error) {
	if dst == nil || dst.be.base != buf.be.base {
		return 0, opError("move", errors.New("buffers on different bases"))
	}
	return get1(buf, (*Buffer).moveTo, dst)
}

func (buf *Buffer) moveTo(dst *Buffer) (int, error) {
	if dst.be.closed.Load() {
		return 0, ErrClosed
	}
	if buf == dst {
		return 0, nil
	}
	n := int(C.evbuffer_get_length(buf.ptr))
	if C.evbuffer_add_buffer(dst.ptr, buf.ptr) != 0 {
		return 0, opError("move", errors.New("evbuffer_add_buffer failed"))
	}
	return n, nil
}

// Drain discards up to n bytes from the front of the buffer
// (evbuffer_drain).
func (buf *Buffer) Drain(n int) error {
	if n < 0 {
		return opError("drain", errors.New("negative count"))
	}
	return do1(buf, (*Buffer).drain, n)
}

func (buf *Buffer) drain(n int) error {
	if C.evbuffer_drain(buf.ptr, C.size_t(n)) != 0 {
		return opError("drain", errors.New("evbuffer_drain failed"))
	}
	return nil
}
