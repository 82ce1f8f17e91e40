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
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// BEVOption is a set of buffer event options. Each constant has the value of
// the BEV_OPT_* bit of libevent 2.1 it stands for.
type BEVOption int

const (
	// BEVOptCloseOnFree closes the socket when the buffer event is closed
	// (BEV_OPT_CLOSE_ON_FREE).
	BEVOptCloseOnFree BEVOption = 0x01
	// BEVOptThreadSafe gives the buffer event a lock (BEV_OPT_THREADSAFE).
	// The binding runs every operation on the loop thread, so it is not
	// needed for calls from other goroutines.
	BEVOptThreadSafe BEVOption = 0x02
	// BEVOptDeferCallbacks runs the callbacks from the loop rather than
	// from inside the I/O that caused them (BEV_OPT_DEFER_CALLBACKS).
	BEVOptDeferCallbacks BEVOption = 0x04
	// BEVOptUnlockCallbacks releases the buffer event's lock while deferred
	// callbacks run (BEV_OPT_UNLOCK_CALLBACKS).
	BEVOptUnlockCallbacks BEVOption = 0x08
)

const knownBEVOptions = BEVOptCloseOnFree | BEVOptThreadSafe | BEVOptDeferCallbacks | BEVOptUnlockCallbacks

// BEVEvent is the set of conditions a buffer event reports to its event
// callback. Each constant has the value of the BEV_EVENT_* bit of libevent
// 2.1 it stands for.
type BEVEvent int16

const (
	BEVEventReading   BEVEvent = 0x01 // while reading (BEV_EVENT_READING)
	BEVEventWriting   BEVEvent = 0x02 // while writing (BEV_EVENT_WRITING)
	BEVEventEOF       BEVEvent = 0x10 // end of stream (BEV_EVENT_EOF)
	BEVEventError     BEVEvent = 0x20 // a read or write failed (BEV_EVENT_ERROR)
	BEVEventTimeout   BEVEvent = 0x40 // a timeout passed (BEV_EVENT_TIMEOUT)
	BEVEventConnected BEVEvent = 0x80 // a connect finished (BEV_EVENT_CONNECTED)
)

var bevEventNames = []struct {
	bit  BEVEvent
	name string
}{
	{BEVEventReading, "Reading"}, {BEVEventWriting, "Writing"}, {BEVEventEOF, "EOF"},
	{BEVEventError, "Error"}, {BEVEventTimeout, "Timeout"}, {BEVEventConnected, "Connected"},
}

// String names the set bits joined by "|", as in "Reading|EOF"; other bits
// are shown in hex, the empty set as "0".
func (e BEVEvent) String() string {
	if e == 0 {
		return "0"
	}
	var parts []string
	var known BEVEvent
	for _, n := range bevEventNames {
		known |= n.bit
		if e&n.bit != 0 {
			parts = append(parts, n.name)
		}
	}
	if rest := e &^ known; rest != 0 {
		parts = append(parts, "0x"+strconv.FormatUint(uint64(uint16(rest)), 16))
	}
	return strings.Join(parts, "|")
}

// DataFunc is the read or write callback of a buffer event
// (bufferevent_data_cb). It runs on the loop goroutine: the read callback
// after data arrived in the input buffer (at least the read low watermark),
// the write callback when the output buffer drained to its low watermark
// (0 by default: empty).
type DataFunc func(be *BufferEvent)

// BufferEventFunc is the event callback of a buffer event
// (bufferevent_event_cb). It runs on the loop goroutine; what holds
// BEVEventReading or BEVEventWriting and one of BEVEventEOF, BEVEventError or
// BEVEventTimeout. libevent has already disabled that direction. err wraps
// the errno (*os.SyscallError) with BEVEventError and is nil otherwise.
type BufferEventFunc func(be *BufferEvent, what BEVEvent, err error)

// BufferEvent is a libevent buffer event on a socket (struct bufferevent):
// libevent reads into its input Buffer and writes its output Buffer, and
// calls Go closures as it goes. Every method, and every method of its
// Buffers, may be called from any goroutine, including from inside
// callbacks; operations are run on the loop thread, where libevent 2.1 can
// do them without the deadlock that bufferevent_disable and _free risk from
// another thread during a callback (libevent_obsolete#105), and the caller
// waits. From the loop goroutine they cost one cgo call and no allocation.
type BufferEvent struct {
	object
	closeOnFree bool

	// Owned by the loop (see Base.call).
	ctx     *C.struct_evl_bev
	ptr     *C.struct_bufferevent
	readCb  DataFunc
	writeCb DataFunc
	eventCb BufferEventFunc
	in, out Buffer
}

// NewBufferEvent wraps the connected, non-blocking socket fd in a buffer
// event (bufferevent_socket_new). It neither reads nor writes until Enable.
// With BEVOptCloseOnFree, Close closes fd; otherwise fd stays the caller's,
// also when NewBufferEvent fails.
func NewBufferEvent(b *Base, fd int, opts BEVOption) (*BufferEvent, error) {
	if b == nil {
		return nil, errNilBase
	}
	if fd < 0 {
		return nil, os.NewSyscallError("bufferevent_socket_new", syscall.EBADF)
	}
	if rest := opts &^ knownBEVOptions; rest != 0 {
		return nil, errors.New("evlistener: NewBufferEvent: unknown options 0x" + strconv.FormatUint(uint64(rest), 16))
	}
	be := &BufferEvent{closeOnFree: opts&BEVOptCloseOnFree != 0}
	if err := newObject(b, be, fd, (*BufferEvent).open, opts); err != nil {
		return nil, err
	}
	return be, nil
}

func (be *BufferEvent) open(opts BEVOption) error {
	// The binding closes fd itself: libevent would close it only when its
	// finalizer runs, on a later turn of the loop.
	c := C.evl_bev_new(be.base.ptr, C.int(be.fd), C.int(opts&^BEVOptCloseOnFree), C.uintptr_t(be.h))
	if c == nil {
		return errors.New("evlistener: bufferevent_socket_new failed")
	}
	be.ctx = c
	be.ptr = c.bev
	be.in = Buffer{be: be, ptr: c.in}
	be.out = Buffer{be: be, ptr: c.out}
	be.opened(be, unsafe.Pointer(c.bev))
	return nil
}

// bevCallbacks are the arguments of SetCallbacks.
type bevCallbacks struct {
	read, write DataFunc
	event       BufferEventFunc
}

// SetCallbacks sets the read, write and event callbacks
// (bufferevent_setcb); any of them may be nil. On a closed buffer event it
// does nothing.
func (be *BufferEvent) SetCallbacks(read, write DataFunc, event BufferEventFunc) {
	do1(be, (*BufferEvent).setCallbacks, bevCallbacks{read, write, event})
}

func (be *BufferEvent) setCallbacks(cbs bevCallbacks) error {
	be.readCb, be.writeCb, be.eventCb = cbs.read, cbs.write, cbs.event
	var set C.int
	if cbs.read != nil {
		set |= C.EVL_BEV_READ
	}
	if cbs.write != nil {
		set |= C.EVL_BEV_WRITE
	}
	if cbs.event != nil {
		set |= C.EVL_BEV_EVENT
	}
	be.ctx.cbs = set
	return nil
}

// Enable starts reading (EvRead) and/or writing (EvWrite)
// (bufferevent_enable).
func (be *BufferEvent) Enable(what Events) error { return do1(be, (*BufferEvent).enable, what) }

func (be *BufferEvent) enable(what Events) error {
	if r, errno := C.bufferevent_enable(be.ptr, C.short(what)); r != 0 {
		return os.NewSyscallError("bufferevent_enable", errnoOr(errno, syscall.EINVAL))
	}
	return nil
}

// Disable stops reading (EvRead) and/or writing (EvWrite)
// (bufferevent_disable). Data already read stays in the input buffer.
func (be *BufferEvent) Disable(what Events) error { return do1(be, (*BufferEvent).disable, what) }

func (be *BufferEvent) disable(what Events) error {
	if C.bufferevent_disable(be.ptr, C.short(what)) != 0 {
		return errors.New("evlistener: bufferevent_disable failed")
	}
	return nil
}

// Enabled reports which of EvRead and EvWrite are enabled
// (bufferevent_get_enabled); 0 once closed.
func (be *BufferEvent) Enabled() Events {
	what, _ := get(be, (*BufferEvent).enabled)
	return what
}

func (be *BufferEvent) enabled() (Events, error) {
	return Events(C.bufferevent_get_enabled(be.ptr)), nil
}

// watermark is the argument of SetWatermark.
type watermark struct {
	what      Events
	low, high int
}

// SetWatermark sets the low and high watermarks of reading (EvRead) and/or
// writing (EvWrite) (bufferevent_setwatermark). Reading: the read callback
// waits for low bytes, and libevent stops reading while the input holds
// high bytes (0: no limit). Writing: the write callback runs when the
// output drains to low bytes; high is unused.
func (be *BufferEvent) SetWatermark(what Events, low, high int) error {
	if low < 0 || high < 0 || (high != 0 && high < low) {
		return errors.New("evlistener: SetWatermark: want 0 <= low <= high, or high == 0")
	}
	return do1(be, (*BufferEvent).setWatermark, watermark{what, low, high})
}

func (be *BufferEvent) setWatermark(w watermark) error {
	C.bufferevent_setwatermark(be.ptr, C.short(w.what), C.size_t(w.low), C.size_t(w.high))
	return nil
}

// timeouts is the argument of SetTimeouts.
type timeouts struct{ read, write time.Duration }

// SetTimeouts sets the read and write timeouts (bufferevent_set_timeouts);
// 0 means none. The read timeout passes when reading is enabled and nothing
// arrived for that long, the write timeout when output is pending and
// nothing could be written for that long; either calls the event callback
// with BEVEventTimeout and disables that direction.
func (be *BufferEvent) SetTimeouts(read, write time.Duration) error {
	return do1(be, (*BufferEvent).setTimeouts, timeouts{read, write})
}

func (be *BufferEvent) setTimeouts(t timeouts) error {
	if C.evl_bev_set_timeouts(be.base.ptr, be.ptr, C.int64_t(usec(t.read)), C.int64_t(usec(t.write))) != 0 {
		return errors.New("evlistener: bufferevent_set_timeouts failed")
	}
	return nil
}

// EchoInput sends everything in the input buffer back to the peer and
// returns how many bytes then wait in the output buffer. When the output
// buffer is empty and writing is enabled it writes the input to the socket
// at once (evbuffer_write), saving the loop the round of adding and removing
// its write event; what the socket does not take, and everything when output
// is already waiting, moves to the output buffer (evbuffer_add_buffer: no
// copy), so the bytes go out in order either way. A write error leaves the
// data in the output buffer, where libevent's own write reports it to the
// event callback.
func (be *BufferEvent) EchoInput() (pending int, err error) {
	return get(be, (*BufferEvent).echoInput)
}

func (be *BufferEvent) echoInput() (int, error) {
	return int(C.evl_bev_echo(be.ctx)), nil
}

// Read reads from the input buffer (bufferevent_read); see Buffer.Read.
func (be *BufferEvent) Read(p []byte) (int, error) { return be.in.Read(p) }

// Write appends to the output buffer (bufferevent_write); libevent sends
// it while writing is enabled. See Buffer.Write.
func (be *BufferEvent) Write(p []byte) (int, error) { return be.out.Write(p) }

// Input returns the buffer libevent reads into
// (bufferevent_get_input). It is valid until Close.
func (be *BufferEvent) Input() *Buffer { return &be.in }

// Output returns the buffer libevent writes from
// (bufferevent_get_output). It is valid until Close.
func (be *BufferEvent) Output() *Buffer { return &be.out }

// Close frees the buffer event (bufferevent_free), and with
// BEVOptCloseOnFree closes the socket. Data still in the output buffer is
// not sent. Once Close returns no callback of the buffer event starts;
// called inside one of its callbacks, it takes effect as the callback
// returns. Later calls return ErrClosed.
func (be *BufferEvent) Close() error { return do(be, (*BufferEvent).close) }

func (be *BufferEvent) close() error {
	be.closed.Store(true)
	// bufferevent_free clears the callbacks first, and inside a callback
	// libevent holds a reference until it returns: no callback reaches the
	// handle after this.
	C.evl_bev_free(be.ctx)
	if be.closeOnFree {
		syscall.Close(be.fd)
	}
	be.ctx, be.ptr = nil, nil
	be.in.ptr, be.out.ptr = nil, nil
	be.release()
	be.readCb, be.writeCb, be.eventCb = nil, nil, nil
	return nil
}

func (be *BufferEvent) onRead() {
	if cb := be.readCb; cb != nil {
		be.base.callback(func() { cb(be) })
	}
}

func (be *BufferEvent) onWrite() {
	if cb := be.writeCb; cb != nil {
		be.base.callback(func() { cb(be) })
	}
}

func (be *BufferEvent) onEvent(what BEVEvent, errno syscall.Errno) {
	cb := be.eventCb
	if cb == nil {
		return
	}
	var err error
	if what&BEVEventError != 0 {
		op := "read"
		if what&BEVEventWriting != 0 {
			op = "write"
		}
		err = os.NewSyscallError(op, errnoOr(errno, syscall.EIO))
	}
	be.base.callback(func() { cb(be, what, err) })
}

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
	return copy(p, tmp[:n]), err
}

func (buf *Buffer) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := C.evbuffer_remove(buf.ptr, unsafe.Pointer(&p[0]), C.size_t(len(p)))
	if n < 0 {
		return 0, errors.New("evlistener: evbuffer_remove failed")
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
		return 0, errors.New("evlistener: evbuffer_add failed")
	}
	return len(p), nil
}

// MoveTo moves everything in buf to the end of dst (evbuffer_add_buffer):
// the data is handed over, not copied, and buf is left empty. Both buffers
// must belong to buffer events on the same base. It returns how many bytes
// moved.
func (buf *Buffer) MoveTo(dst *Buffer) (int, error) {
	if dst == nil || dst.be.base != buf.be.base {
		return 0, errors.New("evlistener: MoveTo: buffers on different bases")
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
		return 0, errors.New("evlistener: evbuffer_add_buffer failed")
	}
	return n, nil
}

// Drain discards up to n bytes from the front of the buffer
// (evbuffer_drain).
func (buf *Buffer) Drain(n int) error {
	if n < 0 {
		return errors.New("evlistener: Drain: negative count")
	}
	return do1(buf, (*Buffer).drain, n)
}

func (buf *Buffer) drain(n int) error {
	if C.evbuffer_drain(buf.ptr, C.size_t(n)) != 0 {
		return errors.New("evlistener: evbuffer_drain failed")
	}
	return nil
}
