package evlistener_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"

	"github.com/evlistener/evlistener"
	"github.com/evlistener/evlistener/internal/ctest"
)

// Serving net/http on libevent's accept path. Accept only gets connections
// while the loop runs, so Dispatch runs on its own goroutine; it returns by
// itself once the server has closed the listener, the only thing on the base.
func ExampleNetListener() {
	base, err := evlistener.NewBase()
	if err != nil {
		log.Fatal(err)
	}
	defer base.Close()
	l, err := evlistener.NewBind(base, nil, evlistener.CloseOnFree|evlistener.Reuseable, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ln := evlistener.NetListener(l, 64) // at most 64 accepted connections wait for Accept
	loop := make(chan error, 1)
	go func() { loop <- base.Dispatch() }()

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from libevent's listener")
	})}
	go srv.Serve(ln)

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(body))

	http.DefaultClient.CloseIdleConnections()
	srv.Shutdown(context.Background()) // closes ln, and with it l
	fmt.Println("Dispatch returned:", <-loop)
	// Output:
	// hello from libevent's listener
	// Dispatch returned: <nil>
}

// An accepted socket handed to Go's net: the net.Conn can be served from any
// goroutine, with deadlines, io.Copy and the rest, while the loop goes on
// accepting.
func ExampleFileConn() {
	base, err := evlistener.NewBase()
	if err != nil {
		log.Fatal(err)
	}
	defer base.Close()
	l, err := evlistener.NewBind(base, func(l *evlistener.Listener, fd int, addr net.Addr) {
		c, err := evlistener.FileConn(fd) // c owns the socket; fd is closed
		if err != nil {
			log.Print(err)
			return
		}
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "hello, %T\n", c)
		}()
		l.Close() // one connection is all this example takes
	}, evlistener.CloseOnFree, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	client := dialOrExit(l.Addr())
	defer client.Close()
	if err := base.Dispatch(); err != nil { // returns once l is closed
		log.Fatal(err)
	}
	reply, _ := io.ReadAll(client)
	fmt.Print(string(reply))
	// Output: hello, *net.TCPConn
}

// A base that C code created, adopted by Go. Here a test helper plays the C
// side; in a program of your own it is a few lines of cgo:
//
//	/*
//	#cgo pkg-config: libevent_core libevent_pthreads
//	#include <event2/event.h>
//	*/
//	import "C"
//
//	evlistener.UsePthreads()                // before C creates its first base
//	p := unsafe.Pointer(C.event_base_new()) // or a base a C library hands you
//	base, err := evlistener.FromCPtr(p)
//	...
//	base.Close()                            // Go's objects on it, not the base
//	C.event_base_free((*C.struct_event_base)(p))
func ExampleFromCPtr() {
	// Before C creates its first base: bases get the locks that calls from
	// other goroutines need.
	if err := evlistener.UsePthreads(); err != nil {
		log.Fatal(err)
	}
	p, err := ctest.NewBase() // C: event_base_new()
	if err != nil {
		log.Fatal(err)
	}
	base, err := evlistener.FromCPtr(p)
	if err != nil {
		log.Fatal(err)
	}
	l, err := evlistener.NewBind(base, func(l *evlistener.Listener, fd int, addr net.Addr) {
		if c, err := evlistener.FileConn(fd); err == nil {
			fmt.Println("accepted on C's base from", c.LocalAddr().Network())
			c.Close()
		}
		l.Close()
	}, evlistener.CloseOnFree, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	client := dialOrExit(l.Addr())
	defer client.Close()
	base.Dispatch()
	base.Close()      // closes what Go opened on the base, not the base
	ctest.FreeBase(p) // C: event_base_free(), after Go's Close
	// Output: accepted on C's base from tcp
}

// C code adding its own events to a base that Go created: they run inside
// Dispatch, on its thread, next to the Go listeners. A test helper plays the
// C side, a libevent timer firing 3 times, 1 ms apart; in a program of your
// own, C receives the base as base.CPtr() and calls, for instance:
//
//	struct event *ev = event_new((struct event_base *)p, -1, EV_PERSIST, cb, arg);
//	struct timeval tv = {0, 1000};
//	event_add(ev, &tv);
//	...
//	event_free(ev); /* before base.Close() */
func ExampleBase_CPtr() {
	base, err := evlistener.NewBase()
	if err != nil {
		log.Fatal(err)
	}
	defer base.Close()
	timer, err := ctest.NewTimer(base.CPtr(), 1000, 3) // C: event_new(base, -1, 0, cb, arg); event_add(...)
	if err != nil {
		log.Fatal(err)
	}
	base.Dispatch() // returns when nothing is pending: the timer is done
	fmt.Println("C timer fired", timer.Fired(), "times")
	timer.Free() // C frees its events before the base goes
	// Output: C timer fired 3 times
}

// dialOrExit is the client of the accept examples: it connects to addr,
// and the kernel queues it until the loop accepts.
func dialOrExit(addr net.Addr) net.Conn {
	c, err := net.Dial(addr.Network(), addr.String())
	if err != nil {
		log.Fatal(err)
	}
	return c
}
