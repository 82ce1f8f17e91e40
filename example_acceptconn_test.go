package evlistener_test

import (
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/evlistener/evlistener"
)

// An echo server whose connections cost what they cost in C: the listener
// makes each connection's event in libevent's accept callback, and Go hears
// of the connection once (OnAccept) and of each message (OnEvent). The
// state a connection needs lives in a slice indexed by its descriptor, as
// a C server keeps it; the event's Close closes the socket too.
func ExampleListener_AcceptEvents() {
	base, err := evlistener.NewBase()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer base.Close()
	l, err := evlistener.NewBind(base, nil, evlistener.CloseOnFree, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}

	buf := make([]byte, 4096) // one per loop: callbacks run one at a time
	var echoed []int          // bytes echoed, by descriptor
	err = l.AcceptEvents(evlistener.EventOptions{
		What:    evlistener.EvRead | evlistener.EvPersist,
		Timeout: time.Minute, // idle clients are closed
		OnAccept: func(l *evlistener.Listener, ev *evlistener.Event) {
			for len(echoed) <= ev.FD() {
				echoed = append(echoed, 0)
			}
			echoed[ev.FD()] = 0
		},
		OnEvent: func(ev *evlistener.Event, fd int, what evlistener.Events) {
			n := 0
			if what&evlistener.EvRead != 0 {
				n, _ = syscall.Read(fd, buf)
			}
			if n <= 0 { // end of stream, an error, or the timeout
				fmt.Println("echoed", echoed[fd], "bytes")
				ev.Close()
				l.Close() // one client is enough for this example
				return
			}
			w, _ := syscall.Write(fd, buf[:n])
			echoed[fd] += w
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	go echoClient(base, l.Addr())
	// Dispatch returns once the listener and the connection are closed:
	// nothing is pending.
	if err := base.Dispatch(); err != nil {
		fmt.Println(err)
	}
	// Output: echoed 5 bytes
}

// The libevent book's echo server, with each connection's buffer event
// made in libevent's accept callback: bufferevent_socket_new, setcb and
// enable in C, then one call into Go.
func ExampleListener_AcceptBufferEvents() {
	base, err := evlistener.NewBase()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer base.Close()
	l, err := evlistener.NewBind(base, nil, evlistener.CloseOnFree, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	err = l.AcceptBufferEvents(evlistener.BufferEventOptions{
		Enable: evlistener.EvRead,
		OnRead: func(be *evlistener.BufferEvent) { be.EchoInput() },
		OnEvent: func(be *evlistener.BufferEvent, what evlistener.BEVEvent, err error) {
			if what&(evlistener.BEVEventEOF|evlistener.BEVEventError) != 0 {
				fmt.Println("client gone:", what)
				be.Close()
				l.Close()
			}
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	go echoClient(base, l.Addr())
	if err := base.Dispatch(); err != nil {
		fmt.Println(err)
	}
	// Output: client gone: BEVEventReading|BEVEventEOF
}

// echoClient is the client of the echo examples: it sends "hello" to addr,
// reads the echo and hangs up; if it cannot connect, it ends the loop.
func echoClient(base *evlistener.Base, addr net.Addr) {
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		base.LoopBreak()
		return
	}
	c.Write([]byte("hello"))
	io.ReadFull(c, make([]byte, 5))
	c.Close()
}
