package evlistener

/*
#cgo noescape evl_bev_write_u
#cgo nocallback evl_bev_write_u
#include "cgo_bridge.h"
*/
import "C"

import (
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// DataFunc is the read or write callback of a buffer event
// (bufferevent_data_cb). It runs on the loop goroutine: the read callback
// after data arrived in the input buffer (at least the read low watermark),
// the write callback when the output buffer drained to its low watermark
// (0 by default: empty).
type DataFunc func(be *BufferEvent)

// BufferEventFunc is the event callback of a buffer event
// (bufferevent_event_cb). It runs on the loop goroutine. what is one of:
//   - BEVEventReading or BEVEventWriting with BEVEventEOF, BEVEventError or
//     BEVEventTimeout: that direction ended, and libevent has disabled it.
//     With BEVEventError, err is a *net.OpError from "read" or "write"
//     around the errno (errors.Is(err, syscall.ECONNRESET)).
//   - BEVEventConnected alone: Connect succeeded.
//   - BEVEventError alone: Connect failed; err is a *net.OpError from
//     "dial", as net.Dial's (errors.Is(err, syscall.ECONNREFUSED)).
//   - BEVEventWriting|BEVEventOutputFull: back-pressure, not an end (see
//     SetWatermark); only with a write high watermark set.
//
// err is nil but with BEVEventError. A callback that closes the
// connection should test for the ends (EOF, Error, Timeout), not close on
// any call: with a write high watermark it would close on back-pressure.
type BufferEventFunc func(be *BufferEvent, what BEVEvent, err error)

// BufferEvent is a libevent buffer event on a socket (struct bufferevent):
// libevent reads into its input Buffer and writes its output Buffer, and
// calls Go closures as it goes. Its methods, and those of its Buffers, run
// libevent on the loop thread, where libevent 2.1 can do them without the
// deadlock that bufferevent_disable and _free risk from another thread
// during a callback (libevent_obsolete#105), and the caller waits. From the
// loop goroutine they cost one cgo call and no allocation.
type BufferEvent struct {
	object

	// Owned by the loop (see Base.call). The flags together: one word.
	closeOnFree bool
	outFull     bool // BEVEventOutputFull reported, no write callback since
	connecting  bool // Connect started, no outcome yet
	connected   bool // Connect succeeded
	peerEOF     bool // the peer's EOF was read: nothing more will come
	flushing    bool // CloseAfterFlush: closed to the user, output still going
	lingering   bool // CloseAfterFlush: output in the kernel, reading to the peer's EOF

	ctx     *C.struct_evl_bev
	ptr     *C.struct_bufferevent
	readCb  DataFunc
	writeCb DataFunc
	eventCb BufferEventFunc
	in, out Buffer

	outHigh      int           // the write high watermark: above it, BEVEventOutputFull
	writeTimeout time.Duration // SetTimeouts', kept through CloseAfterFlush
	pool         *connTable    // for a connection's buffer event (AcceptBufferEvents): its table
	// rare is what only Connect and CloseAfterFlush use, made by the
	// first of them: an idle connection does not carry it. A pooled
	// buffer event keeps it for the next connection.
	rare *bevRare
}

// bevRare is the state of Connect and CloseAfterFlush.
type bevRare struct {
	peer       net.Addr        // Connect's address, for its errors
	timer      *C.struct_event // CloseAfterFlush's deadline, then the linger's checks
	flushEnd   time.Duration   // CloseAfterFlush's deadline (since clockStart), 0: none yet
	lingerTick time.Duration   // the wait before the linger's next check
	lingerSeen uint64          // the input dropped by the linger's last check
}

// rareState returns be.rare, made on first use.
func (be *BufferEvent) rareState() *bevRare {
	if be.rare == nil {
		be.rare = new(bevRare)
	}
	return be.rare
}

// peer is Connect's address, nil without one.
func (be *BufferEvent) peer() net.Addr {
	if be.rare == nil {
		return nil
	}
	return be.rare.peer
}

// endpoints: a buffer event's errors name the address Connect connected
// to; one on an accepted socket names none (it would take two system calls
// on every error, and a closed one has no socket left to ask).
func (be *BufferEvent) endpoints() endpoints {
	peer := be.peer()
	if peer == nil {
		return endpoints{}
	}
	return endpoints{net: peer.Network(), addr: peer}
}

// armTimer makes CloseAfterFlush's timer fire after d, made on first use:
// a flush that ends at once, with no deadline, makes none. It reports
// whether the timer is set.
func (be *BufferEvent) armTimer(d time.Duration) bool {
	r := be.rare
	if r.timer == nil {
		if r.timer = C.evl_timer_new(be.base.ptr, C.uintptr_t(be.h)); r.timer == nil {
			return false
		}
	}
	return C.evl_timer_add(r.timer, C.int64_t(usec(d))) == 0
}

// dropTimer frees CloseAfterFlush's timer, if there is one.
func (be *BufferEvent) dropTimer() {
	if r := be.rare; r != nil && r.timer != nil {
		C.event_free(r.timer)
		r.timer = nil
	}
}

// NewBufferEvent wraps the connected, non-blocking socket fd in a buffer
// event (bufferevent_socket_new). It neither reads nor writes until Enable.
// With BEVOptCloseOnFree, Close closes fd; otherwise fd stays the caller's,
// also when NewBufferEvent fails. With fd -1 the buffer event has no socket
// yet: Connect makes one.
func NewBufferEvent(b *Base, fd int, opts BEVOption) (*BufferEvent, error) {
	const op = "new buffer event"
	var err error
	switch {
	case b == nil:
		err = errNilBase
	case fd < -1:
		err = os.NewSyscallError("bufferevent_socket_new", syscall.EBADF)
	case opts&^knownBEVOptions != 0:
		err = errors.New("unknown options 0x" + strconv.FormatUint(uint64(opts&^knownBEVOptions), 16))
	}
	if err != nil {
		return nil, endpoints{}.opError(op, err)
	}
	be := &BufferEvent{closeOnFree: opts&BEVOptCloseOnFree != 0}
	if err := newObject(op, b, be, fd, (*BufferEvent).open, opts); err != nil {
		return nil, err
	}
	return be, nil
}

func (be *BufferEvent) open(opts BEVOption) error {
	// The binding closes fd itself: libevent would close it only when its
	// finalizer runs, on a later turn of the loop.
	c := C.evl_bev_new(be.base.ptr, C.int(be.fd), C.int(opts&^BEVOptCloseOnFree), C.uintptr_t(be.h))
	if c == nil {
		return errors.New("bufferevent_socket_new failed")
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
// does nothing: it has no error result, and there is nothing left to call
// back.
func (be *BufferEvent) SetCallbacks(read, write DataFunc, event BufferEventFunc) {
	loopRunWith("set callbacks", be, (*BufferEvent).setCallbacks, bevCallbacks{read, write, event})
}

func (be *BufferEvent) setCallbacks(cbs bevCallbacks) error {
	be.readCb, be.writeCb, be.eventCb = cbs.read, cbs.write, cbs.event
	be.setFilter()
	return nil
}

// setFilter tells the C side which callbacks reach Go: those the user set,
// and the write callback while a write high watermark is set (it ends a
// BEVEventOutputFull).
func (be *BufferEvent) setFilter() {
	var set C.int
	if be.readCb != nil {
		set |= C.EVL_BEV_READ
	}
	if be.writeCb != nil || be.outHigh > 0 || be.flushing {
		set |= C.EVL_BEV_WRITE
	}
	if be.eventCb != nil || be.flushing || be.connecting {
		set |= C.EVL_BEV_EVENT
	}
	if be.flushing {
		set |= C.EVL_BEV_DISCARD
	}
	be.ctx.cbs = set
}

// Enable starts reading (EvRead) and/or writing (EvWrite)
// (bufferevent_enable).
func (be *BufferEvent) Enable(what Events) error {
	return loopRunWith("enable", be, (*BufferEvent).enable, what)
}

func (be *BufferEvent) enable(what Events) error {
	if r, errno := C.bufferevent_enable(be.ptr, C.short(what)); r != 0 {
		return os.NewSyscallError("bufferevent_enable", errnoOr(errno, syscall.EINVAL))
	}
	return nil
}

// Disable stops reading (EvRead) and/or writing (EvWrite)
// (bufferevent_disable). Data already read stays in the input buffer.
func (be *BufferEvent) Disable(what Events) error {
	return loopRunWith("disable", be, (*BufferEvent).disable, what)
}

func (be *BufferEvent) disable(what Events) error {
	if C.bufferevent_disable(be.ptr, C.short(what)) != 0 {
		return errors.New("bufferevent_disable failed")
	}
	return nil
}

// Enabled reports which of EvRead and EvWrite are enabled
// (bufferevent_get_enabled); 0 once closed.
func (be *BufferEvent) Enabled() Events {
	what, _ := loopGet("enabled", be, (*BufferEvent).enabled)
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
// output drains to low bytes, and, where libevent 2.1 ignores the high
// watermark, the binding honours it: this is output back-pressure.
//
// Back-pressure: when Write, MoveTo or EchoInput takes the output buffer
// above high bytes (0: no limit), the event callback is called with
// BEVEventWriting|BEVEventOutputFull, once, after the callback that runs
// now; the write callback runs when the output has drained to low again
// (and then a later rise above high is reported again). A program pauses
// its producers on the one and resumes them on the other, or closes a
// consumer too slow to keep up. Nothing is dropped: Write still appends.
func (be *BufferEvent) SetWatermark(what Events, low, high int) error {
	return loopRunWith("set watermark", be, (*BufferEvent).setWatermark, watermark{what, low, high})
}

func (be *BufferEvent) setWatermark(w watermark) error {
	if w.low < 0 || w.high < 0 || (w.high != 0 && w.high < w.low) {
		return errors.New("want 0 <= low <= high, or high == 0")
	}
	C.bufferevent_setwatermark(be.ptr, C.short(w.what), C.size_t(w.low), C.size_t(w.high))
	if w.what&EvWrite != 0 {
		be.outHigh, be.outFull = w.high, false
		be.setFilter()
	}
	return nil
}

// outputGrew runs on the loop after the output buffer grew to n bytes.
func (be *BufferEvent) outputGrew(n int) {
	if be.outHigh == 0 || n <= be.outHigh || be.outFull || be.flushing {
		return
	}
	be.outFull = true
	// Reported after the callback that runs now, not inside the Write
	// of a callback that may be serving another connection.
	be.base.postLocal(func() {
		if !be.closed.Load() && be.outFull {
			be.onEvent(BEVEventWriting|BEVEventOutputFull, 0)
		}
	})
}

// timeouts is the argument of SetTimeouts.
type timeouts struct{ read, write time.Duration }

// SetTimeouts sets the read and write timeouts (bufferevent_set_timeouts);
// 0 means none. The read timeout passes when reading is enabled and nothing
// arrived for that long, the write timeout when output is pending and
// nothing could be written for that long; either calls the event callback
// with BEVEventTimeout and disables that direction.
func (be *BufferEvent) SetTimeouts(read, write time.Duration) error {
	return loopRunWith("set timeouts", be, (*BufferEvent).setTimeouts, timeouts{read, write})
}

func (be *BufferEvent) setTimeouts(t timeouts) error {
	if C.evl_bev_set_timeouts(be.base.ptr, be.ptr, C.int64_t(usec(t.read)), C.int64_t(usec(t.write))) != 0 {
		return errors.New("bufferevent_set_timeouts failed")
	}
	be.writeTimeout = t.write
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
	return loopGet("echo input", be, (*BufferEvent).echoInput)
}

func (be *BufferEvent) echoInput() (int, error) {
	n := int(C.evl_bev_echo_u(C.uintptr_t(uintptr(unsafe.Pointer(be.ctx)))))
	be.outputGrew(n)
	return n, nil
}

// Read reads from the input buffer (bufferevent_read); see Buffer.Read.
func (be *BufferEvent) Read(p []byte) (int, error) { return be.in.Read(p) }

// Write sends p to the peer (bufferevent_write), at once where it can:
// when nothing is queued, writing is enabled and no connect is pending, p
// goes to the socket now, and only what the socket does not take is queued
// in the output buffer, behind which later writes wait. It always takes all
// of p: watermarks, back-pressure, write timeouts and CloseAfterFlush see
// what stays queued as they see libevent's own writes, and a write error
// reaches the event callback through libevent's next write. The write
// callback still follows: after a Write that went out whole it runs once
// the callback that runs now returns. Output().Write only queues.
func (be *BufferEvent) Write(p []byte) (int, error) {
	const op = "write"
	if be.base.onLoop() { // p itself, see loopcall.go
		if err := errIfClosed(op, be); err != nil {
			return 0, err
		}
		n, err := be.write(p)
		return n, wrapError(op, be, err)
	}
	return loopGetWith(op, be, (*BufferEvent).write, append([]byte(nil), p...))
}

// Input returns the buffer libevent reads into
// (bufferevent_get_input). It is valid until Close.
func (be *BufferEvent) Input() *Buffer { return &be.in }

// Output returns the buffer libevent writes from
// (bufferevent_get_output). It is valid until Close.
func (be *BufferEvent) Output() *Buffer { return &be.out }

// Close frees the buffer event (bufferevent_free), and with
// BEVOptCloseOnFree closes the socket. Data still in the output buffer is
// not sent. Once Close returns no callback of the buffer event starts, and
// nothing of it touches the socket again, also when Close is called inside
// one of its callbacks: a descriptor number that the program reuses next
// never gets this buffer event's output. Later calls fail with ErrClosed.
func (be *BufferEvent) Close() error { return loopRun("close", be, (*BufferEvent).close) }

func (be *BufferEvent) close() error {
	if be.pool != nil {
		return be.pool.closeBufferEvent(be)
	}
	be.closed.Store(true)
	be.flushing, be.lingering = false, false
	be.dropTimer()
	// evl_bev_free deletes the buffer event's events and clears its
	// callbacks before it frees it: libevent neither touches the socket
	// nor reaches the handle after this, also when it still holds a
	// reference because one of the buffer event's callbacks runs now. The
	// socket is closed only then.
	C.evl_bev_free(be.ctx)
	if be.closeOnFree && be.fd >= 0 {
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
	if be.flushing { // CloseAfterFlush: all is in the kernel
		if !be.lingering {
			be.linger()
		}
		return
	}
	be.outFull = false
	if cb := be.writeCb; cb != nil {
		be.base.callback(func() { cb(be) })
	}
}

// onTimer ends CloseAfterFlush at its deadline, or checks on its linger.
func (be *BufferEvent) onTimer() {
	switch {
	case be.lingering:
		be.lingerCheck()
	case be.flushing:
		be.close()
	}
}

func (be *BufferEvent) onEvent(what BEVEvent, errno syscall.Errno) {
	connect := be.connecting
	if what&(BEVEventConnected|BEVEventError) != 0 {
		be.connecting = false
		be.connected = what&BEVEventConnected != 0
	}
	if what&(BEVEventReading|BEVEventEOF) == BEVEventReading|BEVEventEOF {
		be.peerEOF = true
	}
	if be.flushing {
		be.flushEvent(what)
		return
	}
	cb := be.eventCb
	if cb == nil {
		return
	}
	var err error
	if what&BEVEventError != 0 {
		err = be.eventError(what, connect, errnoOr(errno, syscall.EIO))
	}
	be.base.callback(func() { cb(be, what, err) })
}

// eventError is the error the event callback gets with BEVEventError: a
// failed Connect is a dial error, as net.Dial's, with the connect errno;
// otherwise the read or write failed.
func (be *BufferEvent) eventError(what BEVEvent, connect bool, errno syscall.Errno) error {
	switch {
	case connect && what&(BEVEventReading|BEVEventWriting) == 0:
		return be.endpoints().opError("dial", os.NewSyscallError("connect", errno))
	case what&BEVEventWriting != 0:
		return be.endpoints().opError("write", errno)
	default:
		return be.endpoints().opError("read", errno)
	}
}

// CloseAfterFlush closes the buffer event once everything in its output
// buffer has been written, as a server that must not lose a reply closes:
// once the output is in the kernel it shuts down the sending side, so that
// the peer reads all of it and then EOF, and it reads and drops what the
// peer still sends until the peer's EOF; only then does it close the
// socket. Closing earlier, with input unread, would make the kernel send a
// reset, and the peer would lose what it had not read yet. What arrives
// after CloseAfterFlush is dropped; what was in the input buffer too.
//
// What it guarantees: the output reaches the peer's kernel, unless the
// peer resets the connection or timeout passes first (0: no limit for the
// output; the wait for the peer's EOF after it is then bounded by
// LingerTimeout). The timeout bounds the whole: at the deadline the socket
// is closed, whatever is left. A write error ends it too. Without
// BEVOptCloseOnFree the socket is not the buffer event's: the output is
// written, and the socket is left open, not shut down. Called while a
// Connect is pending, it waits for the connection and then writes.
//
// To the caller the buffer event is closed when CloseAfterFlush returns:
// its methods fail with ErrClosed, FD returns -1, and none of its callbacks
// runs again; the socket and the output live on until the end, and
// Base.Close ends them too. It may be called from the buffer event's
// callbacks too.
func (be *BufferEvent) CloseAfterFlush(timeout time.Duration) error {
	return loopRunWith("close after flush", be, (*BufferEvent).closeAfterFlush, timeout)
}

// LingerTimeout bounds how long CloseAfterFlush with no timeout waits for
// the peer's EOF once the output is in the kernel (nginx's lingering close
// waits as long).
const LingerTimeout = 5 * time.Second

func (be *BufferEvent) closeAfterFlush(timeout time.Duration) error {
	pending := C.evbuffer_get_length(be.out.ptr) > 0
	if be.fd < 0 || (be.connecting && !pending) {
		return be.close()
	}
	be.closed.Store(true) // for the user: see release, at the end
	be.flushing = true
	be.readCb, be.writeCb, be.eventCb = nil, nil, nil
	be.setFilter()
	// The write callback at empty, not at the user's low watermark; no
	// read limits, and no read timeout: input is read to be dropped.
	C.evbuffer_drain(be.in.ptr, C.evbuffer_get_length(be.in.ptr))
	C.bufferevent_setwatermark(be.ptr, C.EV_READ|C.EV_WRITE, 0, 0)
	C.evl_bev_set_timeouts(be.base.ptr, be.ptr, -1, C.int64_t(usec(be.writeTimeout)))
	r := be.rareState()
	if timeout > 0 {
		r.flushEnd = time.Since(clockStart) + timeout
		if !be.armTimer(timeout) {
			return be.close()
		}
	}
	if !pending {
		return be.linger()
	}
	what := C.short(C.EV_WRITE)
	if be.closeOnFree && !be.peerEOF {
		what |= C.EV_READ
	}
	if C.bufferevent_enable(be.ptr, what) != 0 {
		return be.close()
	}
	return nil
}

// linger runs once CloseAfterFlush's output is in the kernel: close at
// once where no input can come (the peer's EOF was read) or where the
// socket is not ours; otherwise shut down the sending side and read to the
// peer's EOF, within the deadline.
func (be *BufferEvent) linger() error {
	if !be.closeOnFree || be.peerEOF || C.evl_bev_linger(be.ctx) != 0 {
		return be.close()
	}
	be.lingering = true
	r := be.rare // made by closeAfterFlush
	if r.flushEnd == 0 {
		r.flushEnd = time.Since(clockStart) + LingerTimeout
	}
	r.lingerTick = lingerTickMin
	r.lingerSeen = uint64(be.ctx.discarded)
	return be.lingerCheck()
}

// The linger checks on the peer first after lingerTickMin, then at
// doubling intervals up to lingerTickMax.
const (
	lingerTickMin = time.Millisecond
	lingerTickMax = 64 * time.Millisecond
)

// lingerCheck ends the linger at the deadline, or early where waiting for
// the peer's EOF protects nothing: the peer has acknowledged all that was
// sent, our FIN included, and sent nothing since the last check, with
// nothing unread. Closing then sends no reset, and a reset that later
// input draws can no longer discard any of the output, which is in the
// peer's kernel. A peer that keeps sending is read to its EOF. Otherwise
// it looks again later.
func (be *BufferEvent) lingerCheck() error {
	r := be.rare
	now := time.Since(clockStart)
	if now >= r.flushEnd {
		return be.close()
	}
	seen := uint64(be.ctx.discarded)
	quiet := seen == r.lingerSeen
	r.lingerSeen = seen
	if unread, unacked, ok := socketQueues(be.fd); ok && quiet && unread == 0 && unacked == 0 {
		return be.close()
	}
	if !be.armTimer(min(r.lingerTick, r.flushEnd-now)) {
		return be.close()
	}
	r.lingerTick = min(2*r.lingerTick, lingerTickMax)
	return nil
}

// flushEvent is an event of a buffer event that CloseAfterFlush closes.
func (be *BufferEvent) flushEvent(what BEVEvent) {
	switch {
	case what&BEVEventConnected != 0:
		// The pending Connect succeeded: libevent writes the output now.
	case what&(BEVEventReading|BEVEventEOF) == BEVEventReading|BEVEventEOF && !be.lingering:
		// libevent stopped reading; the output goes on.
	default:
		// The peer's EOF after the output, or a failure: the end.
		be.close()
	}
}

// Connect connects the buffer event's socket to address
// (bufferevent_socket_connect); on a buffer event made with fd -1 it makes
// the socket first, which is then the buffer event's own (Close closes it).
// network is "tcp", "tcp4", "tcp6" or "unix", address as net.Dial takes it
// (a missing address or port is an error, as there). Set the callbacks
// first, as in C: the event callback gets BEVEventConnected once
// connected, or BEVEventError alone with a dial error around the errno
// (errors.Is(err, syscall.ECONNREFUSED)); reading and writing as enabled
// start then. Connect returns at once, without waiting for the connection;
// it returns an error when the connection cannot even be started: a dial
// error wrapping EALREADY while a Connect is pending, EISCONN once the
// socket is connected.
//
// A numeric address never blocks the loop. A host name is resolved with
// Go's resolver on the calling goroutine before the connection is handed
// to the loop: called from a callback, that would hold the loop for as long
// as the lookup takes, so resolve names first, or call Connect from another
// goroutine.
func (be *BufferEvent) Connect(network, address string) error {
	const op = "dial"     // as net.Dial's, and the event callback's
	if be.closed.Load() { // before the arguments, as every method
		return endpoints{}.opError(op, ErrClosed)
	}
	err := error(&net.AddrError{Err: "missing address"})
	var sa *sockaddr
	if address != "" {
		sa, err = resolveSockaddr(network, address)
	}
	if err != nil {
		return endpoints{net: network}.opError(op, err)
	}
	return loopRunWith(op, be, (*BufferEvent).connect, sa)
}

func (be *BufferEvent) connect(sa *sockaddr) error {
	switch {
	case be.connecting:
		return os.NewSyscallError("connect", syscall.EALREADY)
	case be.connected:
		// The kernel would report the connection once more (connect(2)
		// returns 0 once after a non-blocking connect completes).
		return os.NewSyscallError("connect", syscall.EISCONN)
	}
	be.rareState().peer = sa.addr // for the errors, the one below included
	r, errno := C.bufferevent_socket_connect(be.ptr, (*C.struct_sockaddr)(unsafe.Pointer(&sa.raw)), C.int(sa.len))
	if fd := int(C.bufferevent_getfd(be.ptr)); fd >= 0 && be.fd < 0 {
		be.fd, be.closeOnFree = fd, true
	}
	if r != 0 {
		return os.NewSyscallError("connect", errnoOr(errno, syscall.EINVAL))
	}
	be.connecting, be.peerEOF = true, false
	be.setFilter()
	return nil
}

// write is Write's loop half: one cgo call (evl_bev_write).
func (be *BufferEvent) write(p []byte) (int, error) {
	if be.connecting {
		// Not on a socket still connecting: a write could take the
		// connect's error, which libevent reads from the socket.
		return be.out.write(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	var wantCb C.int
	if be.writeCb != nil {
		wantCb = 1
	}
	n := C.evl_bev_write_u(C.uintptr_t(uintptr(unsafe.Pointer(be.ctx))), unsafe.Pointer(&p[0]), C.size_t(len(p)), wantCb)
	if n < 0 {
		return 0, errors.New("evbuffer_add failed")
	}
	be.outputGrew(int(n))
	return len(p), nil
}
