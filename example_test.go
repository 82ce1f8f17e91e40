package evlistener_test

import (
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/evlistener/evlistener"
)

// The listener example of the libevent book ("Connection listeners:
// accepting TCP connections"), in Go: accept a connection, write a
// greeting, close it. Port 0 picks a free port; the client connects before
// the loop runs, and the kernel queues it.
func Example() {
	base, err := evlistener.NewBase()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer base.Close()

	acceptConn := func(l *evlistener.Listener, fd int, addr net.Addr) {
		// The callback owns fd.
		syscall.Write(fd, []byte("hello from libevent\n"))
		syscall.Close(fd)
		l.Close() // one connection is enough for this example
	}
	acceptError := func(l *evlistener.Listener, err error) {
		fmt.Println("Got an error on the listener:", err, "- shutting down.")
		l.Base().LoopExit(0)
	}

	l, err := evlistener.NewBind(base, acceptConn,
		evlistener.Reuseable|evlistener.CloseOnFree, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("Couldn't create listener:", err)
		return
	}
	l.SetErrorCallback(acceptError)

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// Dispatch returns once the listener is closed: nothing is pending.
	if err := base.Dispatch(); err != nil {
		fmt.Println(err)
		return
	}
	greeting, _ := io.ReadAll(c)
	fmt.Print(string(greeting))
	// Output: hello from libevent
}
