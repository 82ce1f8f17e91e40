package evlistener

import (
	"sync/atomic"
	"unsafe"
)

// object is the header that Listener, BufferEvent and Event embed, as the
// conns of Go's net embed conn: what every object on a base has, and the
// methods that read it, written once.
//
// A recipe for a new kind of object: embed object; give the type a close
// method (the loop half of Close, see loopcall.go), an open method that
// creates the C side on the loop and calls opened, and an endpoints method
// for its errors; create it with newObject; write each public method as one
// call of loopRun, loopRunWith, loopGet or loopGetWith with the
// method's name and loop half; run each user callback through Base.callback.
type object struct {
	base   *Base
	h      handle // what libevent's callbacks carry back to the object
	fd     int
	cptr   unsafe.Pointer // the C object, for CPtr
	closed atomic.Bool
	// serverConn: a Server's connection, whose release the base reports
	// (Base.connEnded). A flag, not a func of its own: it fits in the
	// padding after closed, and the objects stay in their size class.
	serverConn bool

	// link puts the object in its base's list of open objects, so that
	// Base.Close can close it; guarded by the base's objMu.
	link openLink
}

// loopObject is what the loop hand-off needs of an object: its header, and
// the addresses its errors name (read on the loop only). A Buffer answers
// with those of its buffer event.
type loopObject interface {
	header() *object
	endpoints() endpoints
}

// closer is an open object as its base's list holds it: close is the loop
// half of its Close.
type closer interface{ close() error }

func (o *object) header() *object { return o }

// newObject registers self, whose header is o, in the handle registry and
// runs open(self, arg) on b's loop (see Base.call) for the constructor op.
// open creates the C side and calls opened. When it fails, the handle is
// released again.
func newObject[O loopObject, A any](op string, b *Base, self O, fd int, open func(O, A) error, arg A) error {
	o := self.header()
	o.base, o.fd = b, fd
	o.h = newHandle(self)
	err := loopRunWith(op, self, open, arg)
	if err != nil {
		deleteHandle(o.h)
	}
	return err
}

// opened records the C object and links self into its base's list of open
// objects. It runs on the loop, from an open method.
func (o *object) opened(self closer, cptr unsafe.Pointer) {
	o.cptr = cptr
	o.base.register(&o.link, self)
}

// release is the end of every close: the object leaves its base's list and
// its handle is freed. libevent makes no further callback by then (each
// close says why), so no trampoline looks the handle up again.
func (o *object) release() {
	o.base.unregister(&o.link)
	deleteHandle(o.h)
	if o.serverConn {
		o.serverConn = false
		o.base.connEnded()
	}
}

// FD returns the object's file descriptor, or -1 once it is closed: the
// listening socket of a Listener (evconnlistener_get_fd), the socket of a
// BufferEvent (bufferevent_getfd), the descriptor an Event watches (-1 for
// a timer).
func (o *object) FD() int {
	if o.closed.Load() {
		return -1
	}
	return o.fd
}

// Base returns the base the object runs on (evconnlistener_get_base,
// bufferevent_get_base, event_get_base), also after Close.
func (o *object) Base() *Base { return o.base }

// CPtr returns the C object (struct evconnlistener *, struct bufferevent *
// or struct event *) for C code in the same program, or nil once it is
// closed. C code may read it (the get functions of libevent) on the loop
// thread, but must leave enabling, disabling, freeing and setting callbacks
// to the Go methods: the Go side keeps state that libevent does not (the
// handle its callbacks need, a listener's back-off and pause), and runs
// these operations on the loop thread (libevent issue #1224).
func (o *object) CPtr() unsafe.Pointer {
	if o.closed.Load() {
		return nil
	}
	return o.cptr
}

// openLink links a listener, buffer event or event into the list of open
// objects of its base, so that Base.Close can close it. Each object embeds
// one, so registering allocates nothing. Base.Close calls close on the loop,
// or with no loop running; close must not call back into the base's loop
// machinery.
type openLink struct {
	prev, next *openLink
	obj        closer
}

// register links o, embedded in obj, into the base's list.
func (b *Base) register(o *openLink, obj closer) {
	b.objMu.Lock()
	o.obj = obj
	o.prev, o.next = b.objs.prev, &b.objs
	b.objs.prev.next = o
	b.objs.prev = o
	b.objMu.Unlock()
}

func (b *Base) unregister(o *openLink) {
	b.objMu.Lock()
	if o.next != nil {
		o.prev.next, o.next.prev = o.next, o.prev
		o.prev, o.next, o.obj = nil, nil, nil
	}
	b.objMu.Unlock()
}

func (b *Base) openObjects() []*openLink {
	b.objMu.Lock()
	defer b.objMu.Unlock()
	var list []*openLink
	for o := b.objs.next; o != &b.objs; o = o.next {
		list = append(list, o)
	}
	return list
}
