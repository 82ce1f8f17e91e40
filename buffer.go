package evlistener

/*
#cgo noescape evbuffer_remove
#cgo nocallback evbuffer_remove
#cgo noescape evl_buffer_add
#cgo nocallback evl_buffer_add
#cgo noescape evl_buffer_take
#cgo nocallback evl_buffer_take
#cgo noescape evl_buffer_remove_into
#cgo nocallback evl_buffer_remove_into
#cgo noescape evl_buffer_line_into
#cgo nocallback evl_buffer_line_into
#cgo noescape evl_buffer_index_from
#cgo nocallback evl_buffer_index_from
#cgo noescape evl_buffer_copy_at
#cgo nocallback evl_buffer_copy_at
#include "cgo_bridge.h"
*/
import "C"

import (
	"errors"
	"io"
	"math"
	"slices"
	"unsafe"
)

// Buffer is one of the two buffers of a buffer event (struct evbuffer).
// Like the buffer event's, its methods run on the loop thread. Once the
// buffer event is closed they fail with ErrClosed (Len returns 0).
//
// Each buffer has an end that only libevent moves, as in C: only the
// socket adds to the input buffer, so Write and MoveTo into it fail with
// ErrInputEnd; only the socket takes from the output buffer, so Read,
// AppendTo, AppendN, Drain and MoveTo from it fail with ErrOutputFront,
// and ReadLine and AppendLine on it find no line. Peek, ReadAt, Index,
// IndexFrom and Len work on both.
type Buffer struct {
	be  *BufferEvent
	ptr *C.struct_evbuffer // owned by the loop
}

var (
	// ErrInputEnd: data was written into a buffer event's input buffer,
	// whose end only the socket adds to.
	ErrInputEnd = errors.New("only the socket adds to a buffer event's input buffer")
	// ErrOutputFront: data was read or drained from a buffer event's
	// output buffer, whose front only the socket takes from.
	ErrOutputFront = errors.New("only the socket takes from a buffer event's output buffer")
)

// frozen is the error of an operation on the end of buf that libevent
// keeps: adding (add) to the input, or taking from the output.
func (buf *Buffer) frozen(add bool) error {
	switch {
	case add && buf == &buf.be.in:
		return ErrInputEnd
	case !add && buf == &buf.be.out:
		return ErrOutputFront
	}
	return nil
}

// header and endpoints make a Buffer's methods run, and fail, as its
// buffer event's do.
func (buf *Buffer) header() *object      { return &buf.be.object }
func (buf *Buffer) endpoints() endpoints { return buf.be.endpoints() }

// Len returns how many bytes the buffer holds (evbuffer_get_length).
func (buf *Buffer) Len() int {
	n, _ := loopGet("len", buf, (*Buffer).length)
	return n
}

func (buf *Buffer) length() (int, error) {
	return int(C.evbuffer_get_length(buf.ptr)), nil
}

// Read moves up to len(p) bytes from the front of the buffer into p
// (evbuffer_remove). An empty buffer gives 0, io.EOF, as bytes.Buffer
// does: more data may arrive later.
func (buf *Buffer) Read(p []byte) (int, error) {
	const op = "read"
	if buf.be.base.onLoop() { // p itself, see loopcall.go
		if err := errIfClosed(op, buf); err != nil {
			return 0, err
		}
		n, err := buf.read(p)
		return n, wrapError(op, buf, err)
	}
	tmp := make([]byte, len(p))
	n, err := loopGetWith(op, buf, (*Buffer).read, tmp)
	return copy(p, tmp[:n]), err // io.EOF as it is, as io.Reader wants
}

func (buf *Buffer) read(p []byte) (int, error) {
	if err := buf.frozen(false); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := C.evbuffer_remove(buf.ptr, unsafe.Pointer(&p[0]), C.size_t(len(p)))
	if n < 0 {
		return 0, errors.New("evbuffer_remove failed")
	}
	if n == 0 {
		return 0, io.EOF
	}
	return int(n), nil
}

// Write appends a copy of p to the buffer (evbuffer_add).
func (buf *Buffer) Write(p []byte) (int, error) {
	const op = "write"
	if buf.be.base.onLoop() { // p itself, see loopcall.go
		if err := errIfClosed(op, buf); err != nil {
			return 0, err
		}
		n, err := buf.write(p)
		return n, wrapError(op, buf, err)
	}
	return loopGetWith(op, buf, (*Buffer).write, append([]byte(nil), p...))
}

func (buf *Buffer) write(p []byte) (int, error) {
	if err := buf.frozen(true); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := C.evl_buffer_add(buf.ptr, unsafe.Pointer(&p[0]), C.size_t(len(p)))
	if n < 0 {
		return 0, errors.New("evbuffer_add failed")
	}
	buf.grew(int(n))
	return len(p), nil
}

// MoveTo moves everything in buf to the end of dst (evbuffer_add_buffer):
// the data is handed over, not copied, and buf is left empty. Both buffers
// must belong to buffer events on the same base. It returns how many bytes
// moved.
func (buf *Buffer) MoveTo(dst *Buffer) (int, error) {
	return loopGetWith("move to", buf, (*Buffer).moveTo, dst)
}

func (buf *Buffer) moveTo(dst *Buffer) (int, error) {
	if dst == nil || dst.be.base != buf.be.base {
		return 0, errors.New("buffers on different bases")
	}
	if dst.be.closed.Load() {
		return 0, ErrClosed
	}
	if buf == dst {
		return 0, nil
	}
	if err := errors.Join(buf.frozen(false), dst.frozen(true)); err != nil {
		return 0, err
	}
	n := int(C.evbuffer_get_length(buf.ptr))
	if C.evbuffer_add_buffer(dst.ptr, buf.ptr) != 0 {
		return 0, errors.New("evbuffer_add_buffer failed")
	}
	dst.grew(int(C.evbuffer_get_length(dst.ptr)))
	return n, nil
}

// Drain discards up to n bytes from the front of the buffer
// (evbuffer_drain).
func (buf *Buffer) Drain(n int) error {
	return loopRunWith("drain", buf, (*Buffer).drain, n)
}

func (buf *Buffer) drain(n int) error {
	if n < 0 {
		return errors.New("negative count")
	}
	if err := buf.frozen(false); err != nil {
		return err
	}
	if C.evbuffer_drain(buf.ptr, C.size_t(n)) != 0 {
		return errors.New("evbuffer_drain failed")
	}
	return nil
}

// EOLStyle says what ends a line for ReadLine (enum evbuffer_eol_style).
type EOLStyle int

const (
	// EOLAny: any sequence of CR and LF characters (EVBUFFER_EOL_ANY).
	EOLAny EOLStyle = C.EVBUFFER_EOL_ANY
	// EOLCRLF: LF, optionally preceded by CR (EVBUFFER_EOL_CRLF): what
	// most text protocols accept.
	EOLCRLF EOLStyle = C.EVBUFFER_EOL_CRLF
	// EOLCRLFStrict: exactly CR LF (EVBUFFER_EOL_CRLF_STRICT).
	EOLCRLFStrict EOLStyle = C.EVBUFFER_EOL_CRLF_STRICT
	// EOLLF: exactly LF (EVBUFFER_EOL_LF).
	EOLLF EOLStyle = C.EVBUFFER_EOL_LF
	// EOLNUL: a NUL byte (EVBUFFER_EOL_NUL).
	EOLNUL EOLStyle = C.EVBUFFER_EOL_NUL
)

// lineArgs is the argument of readLine.
type lineArgs struct{ style EOLStyle }

// ReadLine removes one whole line from the front of the buffer and returns
// it without its terminator (evbuffer_readln). While no whole line is
// buffered it returns nil, false and removes nothing. An unknown style
// returns nil, false, and so does the output buffer of a buffer event,
// which only the socket takes from. The line is a copy, the caller's to
// keep.
func (buf *Buffer) ReadLine(style EOLStyle) (line []byte, ok bool) {
	if style < EOLAny || style > EOLNUL {
		return nil, false
	}
	line, err := loopGetWith("read line", buf, (*Buffer).readLine, lineArgs{style})
	return line, err == nil && line != nil
}

// shortLine is how long a line ReadLine and Peek take through a buffer on
// the stack: in one cgo call, where a longer one takes a second.
const shortLine = 128

func (buf *Buffer) readLine(a lineArgs) ([]byte, error) {
	if err := buf.frozen(false); err != nil {
		return nil, err
	}
	var small [shortLine]byte
	var eol C.size_t
	var taken C.int
	n := C.evl_buffer_line_into(buf.ptr, C.int(a.style), unsafe.Pointer(&small[0]), shortLine, &eol, &taken)
	if n == -1 {
		return nil, nil
	}
	if n < 0 {
		return nil, errors.New("evbuffer_remove failed")
	}
	if taken != 0 {
		return append(make([]byte, 0, n), small[:n]...), nil // never nil, also when empty
	}
	line := make([]byte, n, n+1)
	if C.evl_buffer_take(buf.ptr, unsafe.Pointer(unsafe.SliceData(line[:1])), C.size_t(n), eol) != 0 {
		return nil, errors.New("evbuffer_remove failed")
	}
	return line, nil
}

// Peek returns a copy of the first min(n, Len()) bytes of the buffer
// (evbuffer_copyout), removing nothing; nil when there are none.
func (buf *Buffer) Peek(n int) []byte {
	p, _ := loopGetWith("peek", buf, (*Buffer).peek, n)
	return p
}

func (buf *Buffer) peek(n int) ([]byte, error) {
	if n > 0 && n <= shortLine {
		var small [shortLine]byte
		m := int(C.evl_buffer_copy_at(buf.ptr, unsafe.Pointer(&small[0]), C.size_t(n), 0))
		if m <= 0 {
			return nil, nil
		}
		return append([]byte(nil), small[:m]...), nil
	}
	n = min(n, int(C.evbuffer_get_length(buf.ptr)))
	if n <= 0 {
		return nil, nil
	}
	p := make([]byte, n)
	return p[:int(C.evl_buffer_copy_at(buf.ptr, unsafe.Pointer(&p[0]), C.size_t(n), 0))], nil
}

// Index returns the offset of the first instance of sep in the buffer
// (evbuffer_search), or -1; 0 for an empty sep, as bytes.Index does, and
// -1 once the buffer event is closed.
func (buf *Buffer) Index(sep []byte) int { return buf.IndexFrom(sep, 0) }

// grew runs on the loop after the buffer grew to n bytes: the output buffer
// checks its high watermark.
func (buf *Buffer) grew(n int) {
	if buf == &buf.be.out {
		buf.be.outputGrew(n)
	}
}

// Reads into the caller's memory. Each appends to or copies into a slice
// the caller owns, so that a parser on the loop reuses one slice for every
// message: from a callback, with room in the slice, each costs one cgo call
// and allocates nothing. What they return is a copy, the caller's to keep;
// the buffer is never exposed. From another goroutine they go through a
// copy, as Read does.

// appendArgs is the argument of appendN.
type appendArgs struct {
	dst  []byte
	want int
}

// AppendTo removes everything in the buffer and appends it to dst
// (evbuffer_remove), returning the extended slice. With room for it in dst
// it is one cgo call; otherwise dst grows, as append grows it, and one more
// call takes the rest.
func (buf *Buffer) AppendTo(dst []byte) ([]byte, error) {
	return buf.appendOp("append to", dst, math.MaxInt)
}

// AppendN removes up to n bytes from the front of the buffer and appends
// them to dst, returning the extended slice: fewer than n when fewer are
// buffered, none (and dst as it is) when the buffer is empty. A negative n
// is an error, and so is the output buffer of a buffer event
// (ErrOutputFront), which only the socket takes from. Its cost is
// AppendTo's.
func (buf *Buffer) AppendN(dst []byte, n int) ([]byte, error) {
	return buf.appendOp("append n", dst, n)
}

// appendOp is AppendTo and AppendN, for the method op.
func (buf *Buffer) appendOp(op string, dst []byte, n int) ([]byte, error) {
	if buf.be.base.onLoop() { // dst itself, see loopcall.go
		if err := errIfClosed(op, buf); err != nil {
			return dst, err
		}
		out, err := buf.appendN(appendArgs{dst, n})
		return out, wrapError(op, buf, err)
	}
	got, err := loopGetWith(op, buf, (*Buffer).appendN, appendArgs{nil, n})
	return append(dst, got...), err
}

func (buf *Buffer) appendN(a appendArgs) ([]byte, error) {
	if a.want < 0 {
		return a.dst, errors.New("negative count")
	}
	if err := buf.frozen(false); err != nil {
		return a.dst, err
	}
	dst, want := a.dst, a.want
	for {
		var length C.size_t
		room := dst[len(dst):cap(dst)]
		m := C.evl_buffer_remove_into(buf.ptr, unsafe.Pointer(unsafe.SliceData(room)),
			C.size_t(len(room)), C.size_t(want), &length)
		if m < 0 {
			return dst, errors.New("evbuffer_remove failed")
		}
		dst = dst[:len(dst)+int(m)]
		want -= int(m)
		rest := min(int(length)-int(m), want)
		if rest <= 0 {
			return dst, nil
		}
		dst = slices.Grow(dst, rest)
	}
}

// lineInto is the argument of appendLine.
type lineInto struct {
	dst   []byte
	style EOLStyle
}

// AppendLine removes one whole line from the front of the buffer and
// appends it, without its terminator, to dst (evbuffer_search_eol and
// evbuffer_remove), returning the extended slice and true. While no whole
// line is buffered it returns dst, false and removes nothing; so it does
// for an unknown style and for the output buffer of a buffer event. With
// room for the line in dst it is one cgo call; otherwise dst grows and one
// more call takes the line.
func (buf *Buffer) AppendLine(dst []byte, style EOLStyle) ([]byte, bool) {
	if style < EOLAny || style > EOLNUL {
		return dst, false
	}
	if buf.be.base.onLoop() { // dst itself, see loopcall.go
		if buf.be.closed.Load() {
			return dst, false
		}
		out, err := buf.appendLine(lineInto{dst, style})
		if err != nil || out == nil {
			return dst, false
		}
		return out, true
	}
	line, err := loopGetWith("append line", buf, (*Buffer).appendLine, lineInto{nil, style})
	if err != nil || line == nil {
		return dst, false
	}
	if dst == nil {
		return line, true
	}
	return append(dst, line...), true
}

// appendLine returns nil, nil while no whole line is buffered; a found line
// is never nil.
func (buf *Buffer) appendLine(a lineInto) ([]byte, error) {
	if err := buf.frozen(false); err != nil {
		return nil, err
	}
	dst := a.dst
	room := dst[len(dst):cap(dst)]
	var eol C.size_t
	var taken C.int
	n := int(C.evl_buffer_line_into(buf.ptr, C.int(a.style), unsafe.Pointer(unsafe.SliceData(room)),
		C.size_t(len(room)), &eol, &taken))
	switch {
	case n == -1:
		return nil, nil
	case n < 0:
		return nil, errors.New("evbuffer_remove failed")
	case taken == 0: // no room: grow, then take the line found
		dst = slices.Grow(dst, n+1)
		room = dst[len(dst) : len(dst)+n+1]
		if C.evl_buffer_take(buf.ptr, unsafe.Pointer(unsafe.SliceData(room)), C.size_t(n), eol) != 0 {
			return nil, errors.New("evbuffer_remove failed")
		}
	}
	if dst == nil { // an empty line into a nil slice is still a line
		return []byte{}, nil
	}
	return dst[:len(dst)+n], nil
}

// indexArgs is the argument of indexFrom.
type indexArgs struct {
	sep  []byte
	from int
}

// IndexFrom returns the offset, from the front of the buffer, of the first
// instance of sep at or after offset from (evbuffer_search from an
// evbuffer_ptr), or -1: a parser that has looked at the first from bytes
// goes on from there instead of searching them again. An empty sep gives
// from. It returns -1 when from is negative or past the end, and once the
// buffer event is closed.
func (buf *Buffer) IndexFrom(sep []byte, from int) int {
	if from < 0 {
		return -1
	}
	if buf.be.base.onLoop() { // sep itself, see loopcall.go
		if buf.be.closed.Load() {
			return -1
		}
		i, _ := buf.indexFrom(indexArgs{sep, from})
		return i
	}
	i, err := loopGetWith("index from", buf, (*Buffer).indexFrom, indexArgs{append([]byte(nil), sep...), from})
	if err != nil {
		return -1
	}
	return i
}

func (buf *Buffer) indexFrom(a indexArgs) (int, error) {
	if len(a.sep) == 0 {
		if a.from > 0 && a.from > int(C.evbuffer_get_length(buf.ptr)) {
			return -1, nil
		}
		return a.from, nil
	}
	return int(C.evl_buffer_index_from(buf.ptr, unsafe.Pointer(&a.sep[0]), C.size_t(len(a.sep)), C.size_t(a.from))), nil
}

// copyArgs is the argument of readAt.
type copyArgs struct {
	p   []byte
	off int64
}

// ReadAt copies len(p) bytes from offset off of the buffer into p and
// removes nothing (evbuffer_peek): a look-ahead, say at a length
// prefix, before deciding how much to take. It implements io.ReaderAt over
// what is buffered now: fewer bytes than len(p) come with io.EOF (more may
// arrive later), and a negative off is an error. It reads the output buffer
// too. From a callback it is one cgo call and allocates nothing; p is the
// caller's, a copy.
func (buf *Buffer) ReadAt(p []byte, off int64) (int, error) {
	const op = "read at"
	if buf.be.base.onLoop() { // p itself, see loopcall.go
		if err := errIfClosed(op, buf); err != nil {
			return 0, err
		}
		n, err := buf.readAt(copyArgs{p, off})
		return n, wrapError(op, buf, err)
	}
	tmp := make([]byte, len(p))
	n, err := loopGetWith(op, buf, (*Buffer).readAt, copyArgs{tmp, off})
	return copy(p, tmp[:n]), err
}

func (buf *Buffer) readAt(a copyArgs) (int, error) {
	if a.off < 0 {
		return 0, errors.New("negative offset")
	}
	if len(a.p) == 0 {
		return 0, nil
	}
	n := int(C.evl_buffer_copy_at(buf.ptr, unsafe.Pointer(&a.p[0]), C.size_t(len(a.p)), C.size_t(a.off)))
	if n < len(a.p) {
		return n, io.EOF
	}
	return n, nil
}
