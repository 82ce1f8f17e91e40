package evlistener

/*
#include <stdlib.h>
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

// Accepting with the connection's object made in C: AcceptEvents and
// AcceptBufferEvents. libevent's accept callback, in C, makes and arms the
// connection's event or buffer event, as a C server does in the same frame,
// and then makes one call into Go. A connection then costs one C→Go call
// to accept and one Go→C call to close (the object freed and the socket
// closed together), and no allocation: the Go objects and their C storage
// live in a table of the base, one slot per descriptor number, made the
// first time a connection gets that number and reused by every later one.

// EventAcceptFunc is called on the loop goroutine for each connection a
// listener accepts after AcceptEvents, once its event is made and added and
// before the event's callback first runs. ev is the connection's event; it
// owns the socket (ev.FD()): Close closes both.
type EventAcceptFunc func(l *Listener, ev *Event)

// BufferEventAcceptFunc is called on the loop goroutine for each connection
// a listener accepts after AcceptBufferEvents, once its buffer event is made,
// set up and enabled and before any of its callbacks runs. be owns the
// socket: Close closes both.
type BufferEventAcceptFunc func(l *Listener, be *BufferEvent)

// EventOptions says how AcceptEvents makes each connection's event.
type EventOptions struct {
	// What the event waits for, as NewEvent takes it: EvRead, EvWrite
	// and EvClosed, with EvPersist and EvET. 0 means EvRead|EvPersist.
	What Events
	// Timeout is Add's: with Timeout > 0 the event fires with EvTimeout
	// once that long passed without it firing. 0 means none.
	Timeout time.Duration
	// NoDelay sets TCP_NODELAY on each TCP connection, in C, as it is
	// accepted (as Go's net does for every TCP connection): small writes
	// go out at once instead of waiting for the peer's acknowledgement.
	// A server that would set it in OnAccept saves a system call from Go
	// and, when OnAccept has nothing else to do, the call of OnAccept.
	NoDelay bool
	// OnAccept, if not nil, runs once for each connection.
	OnAccept EventAcceptFunc
	// OnEvent is the callback of every connection's event; it may not be
	// nil. It runs on the loop goroutine, from Go: libevent's turn of the
	// loop notes the connections whose events fired, and Dispatch runs
	// their callbacks once the turn is over, in the order libevent
	// reported them, without a call from C into Go each.
	OnEvent EventFunc
}

// BufferEventOptions says how AcceptBufferEvents makes and sets up each
// connection's buffer event, as the libevent book's accept callback does:
// bufferevent_socket_new, setcb, and the settings below.
type BufferEventOptions struct {
	// Options of bufferevent_socket_new (BEVOptThreadSafe,
	// BEVOptDeferCallbacks, ...). The socket is the buffer event's either
	// way: Close closes it.
	Options BEVOption
	// Enable is what starts at once (bufferevent_enable): EvRead and/or
	// EvWrite; 0 means EvRead. Writing is enabled from the start anyway, as
	// libevent does, and its event is added only once output waits.
	Enable Events
	// ReadTimeout and WriteTimeout are SetTimeouts'; 0 means none.
	ReadTimeout, WriteTimeout time.Duration
	// The watermarks, as SetWatermark sets them; 0 means none.
	// WriteHighWatermark is the binding's output back-pressure.
	ReadLowWatermark, ReadHighWatermark   int
	WriteLowWatermark, WriteHighWatermark int
	// NoDelay sets TCP_NODELAY on each TCP connection, as
	// EventOptions.NoDelay does.
	NoDelay bool
	// OnAccept, if not nil, runs once for each connection.
	OnAccept BufferEventAcceptFunc
	// The callbacks of every connection's buffer event, as SetCallbacks
	// sets them; any may be nil, and OnAccept may set a connection's own.
	OnRead, OnWrite DataFunc
	OnEvent         BufferEventFunc
}

// AcceptEvents makes the listener accept every connection into an event:
// for each one, libevent's accept callback makes the event on the socket
// (event_new, or the storage of an earlier connection on the same
// descriptor again) and adds it with opts.Timeout, in C, and then calls
// opts.OnAccept. The connection costs one call from C into Go to accept
// and no allocation once the descriptor numbers in use have been seen; its
// event's callbacks cost no call from C (see EventOptions.OnEvent), and a
// Close from one of them none from Go: the event leaves the loop and the
// socket closes as the loop's next turn starts, in the call into C that
// starts it, before libevent waits again (Close from anywhere else closes
// at once, in one call). It replaces the AcceptFunc; SetCallback
// goes back to plain accepting (nil pauses, as ever). Accept errors back off
// as with an AcceptFunc; an event that cannot be made closes the socket and
// is reported to the ErrorFunc in the same way.
//
// The event is an *Event whose Close also closes the socket, in one call
// into C; do not close the socket any other way. After Close, the same
// *Event may serve a later connection that gets the same descriptor number:
// keep it only while the connection is open, and keep per-connection state
// in a slice indexed by FD, as a C server would. As with a descriptor, a
// Close that comes late (from another goroutine, after the connection
// closed itself and a new one took the number) closes the new connection:
// close a connection on the loop, or once, where its callbacks know it. A connection's address is
// made only when asked for (RemoteAddr). The connections outlive the
// listener's Close; Base.Close closes those still open.
func (l *Listener) AcceptEvents(opts EventOptions) error {
	if l.closed.Load() { // said before the options are looked at
		return l.endpoints().opError("accept", ErrClosed)
	}
	if opts.What == 0 {
		opts.What = EvRead | EvPersist
	}
	var err error
	switch {
	case opts.OnEvent == nil:
		err = errNilCallback
	case opts.What&^(EvRead|EvWrite|EvClosed|EvPersist|EvET) != 0:
		err = errors.New("unsupported event bits " + (opts.What &^ (EvRead | EvWrite | EvClosed | EvPersist | EvET)).String())
	case opts.What&(EvRead|EvWrite|EvClosed) == 0:
		err = errors.New("a connection's event must wait for EvRead, EvWrite or EvClosed")
	}
	if err != nil {
		return l.endpoints().opError("accept", err)
	}
	return l.acceptVia(&connAcceptor{kind: C.EVL_ACCEPT_EVENT, ev: opts})
}

// AcceptBufferEvents makes the listener accept every connection into a
// buffer event, the libevent book's design: for each one, libevent's accept
// callback makes the buffer event on the socket (bufferevent_socket_new),
// sets its callbacks, watermarks and timeouts and enables it, in C, and then
// calls opts.OnAccept. The connection costs one call from C into Go to
// accept, one from Go into C to close, and no allocation of the binding's
// once the descriptor numbers in use have been seen (libevent allocates
// the buffer event, as in C). The rest is as for AcceptEvents: the
// *BufferEvent owns the socket and may serve a later connection on the same
// descriptor once closed.
func (l *Listener) AcceptBufferEvents(opts BufferEventOptions) error {
	if l.closed.Load() { // said before the options are looked at
		return l.endpoints().opError("accept", ErrClosed)
	}
	if opts.Enable == 0 {
		opts.Enable = EvRead
	}
	var err error
	switch {
	case opts.Options&^knownBEVOptions != 0:
		err = errors.New("unknown options 0x" + strconv.FormatUint(uint64(opts.Options&^knownBEVOptions), 16))
	case opts.Enable&^(EvRead|EvWrite) != 0:
		err = errors.New("Enable takes EvRead and EvWrite only")
	case opts.ReadTimeout < 0 || opts.WriteTimeout < 0:
		err = errors.New("negative timeout")
	case !validWatermark(opts.ReadLowWatermark, opts.ReadHighWatermark) ||
		!validWatermark(opts.WriteLowWatermark, opts.WriteHighWatermark):
		err = errors.New("watermarks: want 0 <= low <= high, or high == 0")
	}
	if err != nil {
		return l.endpoints().opError("accept", err)
	}
	return l.acceptVia(&connAcceptor{kind: C.EVL_ACCEPT_BEV, bev: opts})
}

func validWatermark(low, high int) bool {
	return low >= 0 && high >= 0 && (high == 0 || high >= low)
}

// connAcceptor is a listener's way of accepting into events or buffer
// events: the options, and their C copy that the accept shim reads.
type connAcceptor struct {
	kind C.int
	ev   EventOptions
	bev  BufferEventOptions
	c    *C.struct_evl_acceptor
}

func (l *Listener) acceptVia(a *connAcceptor) error {
	return loopRunWith("accept", l, (*Listener).setAcceptor, a)
}

func (l *Listener) setAcceptor(a *connAcceptor) error {
	t, err := l.base.connTable()
	if err != nil {
		return err
	}
	p := (*C.struct_evl_acceptor)(C.calloc(1, C.sizeof_struct_evl_acceptor))
	if p == nil {
		return os.NewSyscallError("calloc", syscall.ENOMEM)
	}
	p.h, p.conns, p.kind = C.uintptr_t(l.h), t.c, a.kind
	p.what = C.short(a.ev.What)
	o := &a.bev
	p.bev_opts, p.enable = C.int(o.Options&^BEVOptCloseOnFree), C.short(o.Enable)
	p.read_low, p.read_high = C.size_t(o.ReadLowWatermark), C.size_t(o.ReadHighWatermark)
	p.write_low = C.size_t(o.WriteLowWatermark)
	if _, tcp := l.addr.(*net.TCPAddr); tcp && (a.ev.NoDelay || o.NoDelay) {
		p.nodelay = 1
	}
	C.evl_acceptor_timeouts(p, l.base.ptr, C.int64_t(usec(a.ev.Timeout)),
		C.int64_t(usec(o.ReadTimeout)), C.int64_t(usec(o.WriteTimeout)))
	a.c = p
	had, old := l.hasCallback(), l.conns
	l.cb, l.conns = nil, a
	C.evl_listener_set_acceptor(l.ptr, p)
	if !had && l.active() {
		C.evconnlistener_enable(l.ptr)
	}
	old.free()
	return nil
}

// free releases the C copy once libevent no longer passes it: the
// listener was freed, or has another callback (the accept shim reads it
// only before it calls Go).
func (a *connAcceptor) free() {
	if a != nil && a.c != nil {
		C.free(unsafe.Pointer(a.c))
		a.c = nil
	}
}

// hasCallback reports whether the listener accepts anything: an AcceptFunc
// or an acceptor.
func (l *Listener) hasCallback() bool { return l.cb != nil || l.conns != nil }

// onAcceptConn runs on the loop for each connection accepted through an
// acceptor: slot is its slot in the table, or nil with errno, why its
// object could not be made.
func (l *Listener) onAcceptConn(fd int, slot unsafe.Pointer, errno syscall.Errno) {
	a := l.conns
	if errno != 0 || a == nil || slot == nil {
		// The socket has no object, and nobody else will take it: close
		// it, and say so as an accept that failed.
		syscall.Close(fd)
		l.onAcceptError(errnoOr(errno, syscall.ENOMEM))
		return
	}
	l.delay = 0
	t := l.base.conns
	t.forget(fd)
	if f := l.base.poolOpened; f != nil {
		f(l)
	}
	var ok bool
	if a.kind == C.EVL_ACCEPT_EVENT {
		ev := t.takeEvent(fd, (*C.struct_evl_conn_ev)(slot), a.ev.OnEvent)
		ok = true
		if cb := a.ev.OnAccept; cb != nil {
			ok = l.base.callback(func() { cb(l, ev) })
		}
		if !ok && !ev.closed.Load() {
			t.closeEvent(ev)
		}
	} else {
		be := t.takeBufferEvent(fd, (*C.struct_evl_conn_bev)(slot), &a.bev)
		ok = true
		if cb := a.bev.OnAccept; cb != nil {
			ok = l.base.callback(func() { cb(l, be) })
		}
		if !ok && !be.closed.Load() {
			t.closeBufferEvent(be)
		}
	}
	if l.closed.Load() {
		return
	}
	// As onAccept: a panic, a LoopBreak or a Base.Close stops libevent's
	// accept loop, which goes on while connections are queued.
	if !ok || l.base.breakOnLoop {
		l.pauseUntilDispatch()
	}
}

// acceptConn hands fd, a connection accepted outside libevent's accept
// loop, to the listener's acceptor as that loop would. Loop only; l has an
// acceptor.
func (l *Listener) acceptConn(fd int) {
	C.evl_accept_conn_cb(l.ptr, C.evutil_socket_t(fd), nil, 0, unsafe.Pointer(l.conns.c))
}

// connTable is a base's connections accepted through acceptors: the Go
// objects by descriptor, and the C slots (struct evl_conns) that hold their
// C storage. A slot, its object and the object's handle are made the first
// time a connection gets that descriptor number and kept until Base.Close:
// a later connection on the number reuses them. Owned by the loop.
type connTable struct {
	base   *Base
	c      *C.struct_evl_conns
	events chunks[Event]       // by descriptor
	bevs   chunks[BufferEvent] // by descriptor
	open   int                 // connections open now
	link   openLink            // in the base's list, for Base.Close
}

// connTable returns the base's table, made on first use. Loop only.
func (b *Base) connTable() (*connTable, error) {
	if b.conns != nil {
		return b.conns, nil
	}
	c := C.evl_conns_new()
	if c == nil {
		return nil, os.NewSyscallError("calloc", syscall.ENOMEM)
	}
	t := &connTable{base: b, c: c}
	b.conns = t
	b.register(&t.link, t)
	return t, nil
}

// connChunk is how many descriptor numbers a chunk of the table holds:
// objects are made that many at a time, not one by one, so that a
// connection costs its object's bytes and no allocation of its own.
const connChunk = 64

// chunks holds the objects of a table by descriptor, in chunks that never
// move.
type chunks[T any] []*[connChunk]T

// at returns the object of fd, making its chunk on first use. A new chunk's
// objects are zero: not made yet.
func (c *chunks[T]) at(fd int) *T {
	i := fd / connChunk
	if i >= len(*c) {
		// Doubling: the list settles once the numbers in use are seen.
		*c = append(*c, make([]*[connChunk]T, max(len(*c), i+1-len(*c), 8))...)
	}
	if (*c)[i] == nil {
		(*c)[i] = new([connChunk]T)
	}
	return &(*c)[i][fd%connChunk]
}

// get returns the object of fd, or nil where its chunk was never made.
func (c chunks[T]) get(fd int) *T {
	if i := fd / connChunk; i < len(c) && c[i] != nil {
		return &c[i][fd%connChunk]
	}
	return nil
}

// each calls f with every object of the table that was made.
func (c chunks[T]) each(f func(*T)) {
	for _, ch := range c {
		if ch != nil {
			for i := range ch {
				f(&ch[i])
			}
		}
	}
}

// takeEvent readies the Go event of slot c for the connection on fd, whose
// C event is made and added.
func (t *connTable) takeEvent(fd int, c *C.struct_evl_conn_ev, cb EventFunc) *Event {
	ev := t.events.at(fd)
	if ev.pool == nil {
		// The header stays the slot's, as takeBufferEvent says; so
		// does the C event's storage.
		ev.pool = t
		ev.base, ev.fd, ev.h, ev.cptr = t.base, fd, newHandle(ev), unsafe.Pointer(&c.ev)
		c.h = C.uintptr_t(ev.h)
	}
	ev.ptr, ev.cb = &c.ev, cb
	ev.closed.Store(false)
	t.open++
	return ev
}

// forget closes, on the Go side only, the object that the last connection
// on fd left open: its socket was closed without Close and the number came
// back from accept, and the C side has taken the object out.
func (t *connTable) forget(fd int) {
	if ev := t.events.get(fd); ev != nil && ev.pool != nil && !ev.closed.Load() {
		endPooledEvent(ev)
		t.ended()
	}
	if be := t.bevs.get(fd); be != nil && be.pool != nil && (!be.closed.Load() || be.flushing) {
		endPooledBufferEvent(be)
		t.ended()
	}
}

// endPooledEvent ends the Go side of a pooled event's connection: closed,
// with nothing of the connection's C side or callback kept. The header
// (base, handle, descriptor, C storage) is the slot's and stays.
func endPooledEvent(ev *Event) {
	ev.closed.Store(true)
	ev.ptr, ev.cb = nil, nil
}

// endPooledBufferEvent is endPooledEvent for a pooled buffer event: its
// flush or linger ended too, and its timer dropped.
func endPooledBufferEvent(be *BufferEvent) {
	be.dropTimer()
	be.closed.Store(true)
	be.flushing, be.lingering = false, false
	be.ctx, be.ptr, be.in.ptr, be.out.ptr = nil, nil, nil, nil
	be.readCb, be.writeCb, be.eventCb = nil, nil, nil
}

// ended counts a connection of the table gone. A Server's loop hears of it
// through one func on the base: pooled connections never pass through
// object.release, where the Server's other connections end.
func (t *connTable) ended() {
	t.open--
	if f := t.base.poolEnded; f != nil {
		f()
	}
}

// closeEvent is Close of an event from the table: the event out of the
// loop and the socket closed in one call into C. The slot stays for the
// next connection on the number.
func (t *connTable) closeEvent(ev *Event) error {
	endPooledEvent(ev)
	// The event is the first member of its slot, which cptr keeps.
	if !t.base.closeAtTurn((*C.struct_evl_conn_ev)(ev.cptr), ev.fd) {
		C.evl_conn_close_event_u(C.uintptr_t(uintptr(ev.cptr)), C.int(ev.fd))
	}
	t.ended()
	return nil
}

// takeBufferEvent readies the Go buffer event of slot c for the connection
// on fd, whose C buffer event is made and enabled.
func (t *connTable) takeBufferEvent(fd int, c *C.struct_evl_conn_bev, o *BufferEventOptions) *BufferEvent {
	be := t.bevs.at(fd)
	if be.pool == nil {
		be.pool = t
		be.base, be.fd, be.h = t.base, fd, newHandle(be)
		c.bev.h = C.uintptr_t(be.h)
	}
	// Every field but the header (base, handle, descriptor), which is
	// the slot's and stays: another goroutine may still read it, through
	// a Close of the last connection that came late. The list is pinned
	// by TestPooledBufferEventFields, which fails when a field is added.
	be.closeOnFree = true
	be.ctx, be.ptr, be.cptr = &c.bev, c.bev.bev, unsafe.Pointer(c.bev.bev)
	be.readCb, be.writeCb, be.eventCb = o.OnRead, o.OnWrite, o.OnEvent
	be.in = Buffer{be: be, ptr: c.bev.in}
	be.out = Buffer{be: be, ptr: c.bev.out}
	be.outHigh, be.outFull, be.writeTimeout = o.WriteHighWatermark, false, o.WriteTimeout
	be.connecting, be.connected, be.peerEOF = false, false, false
	be.flushing, be.lingering = false, false
	if be.rare != nil { // kept: a flush per connection allocates nothing
		*be.rare = bevRare{}
	}
	be.closed.Store(false)
	be.setFilter()
	t.open++
	return be
}

// closeBufferEvent is Close of a buffer event from the table: the buffer
// event freed and the socket closed in one call into C.
func (t *connTable) closeBufferEvent(be *BufferEvent) error {
	slot := (*C.struct_evl_conn_bev)(unsafe.Pointer(be.ctx)) // the context is its slot
	endPooledBufferEvent(be)
	C.evl_conn_close_bev(slot, C.int(be.fd))
	t.ended()
	return nil
}

// close closes the connections still open and frees the table, for
// Base.Close, with no loop running.
func (t *connTable) close() error {
	t.base.closeNoted() // before the table: those slots are no longer open
	t.events.each(func(ev *Event) {
		if ev.pool != nil {
			endPooledEvent(ev)
			deleteHandle(ev.h)
		}
	})
	t.bevs.each(func(be *BufferEvent) {
		if be.pool != nil {
			endPooledBufferEvent(be)
			deleteHandle(be.h)
		}
	})
	if f := t.base.poolEnded; f != nil {
		for range t.open {
			f()
		}
	}
	C.evl_conns_free(t.c) // closes the sockets still open
	t.c, t.events, t.bevs, t.open = nil, nil, nil, 0
	t.base.unregister(&t.link)
	t.base.conns = nil
	return nil
}

// RemoteAddr returns the address of the peer of the event's socket
// (getpeername), made when asked for: a *net.TCPAddr or *net.UnixAddr, or
// nil once the event is closed or when its descriptor is not a connected
// socket.
func (ev *Event) RemoteAddr() net.Addr {
	a, _ := loopGet("remote addr", ev, (*Event).remoteAddr)
	return a
}

func (ev *Event) remoteAddr() (net.Addr, error) { return peername(ev.fd), nil }

// RemoteAddr returns the address of the peer of the buffer event's socket,
// as Event.RemoteAddr does.
func (be *BufferEvent) RemoteAddr() net.Addr {
	a, _ := loopGet("remote addr", be, (*BufferEvent).remoteAddr)
	return a
}

func (be *BufferEvent) remoteAddr() (net.Addr, error) { return peername(be.fd), nil }

func peername(fd int) net.Addr {
	if fd < 0 {
		return nil
	}
	var raw syscall.RawSockaddrAny
	n := uint32(syscall.SizeofSockaddrAny)
	_, _, errno := syscall.RawSyscall(syscall.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&raw)), uintptr(unsafe.Pointer(&n)))
	if errno != 0 {
		return nil
	}
	return sockaddrToAddr(unsafe.Pointer(&raw), int(n))
}
