package evlistener_test

import (
	"log"
	"net"
	"os"
	"os/exec"
	"syscall"

	"github.com/evlistener/evlistener"
)

// A server started by systemd's socket activation serves the sockets it was
// given; started by hand, it binds its own.
func ExampleListenFDs() {
	base, err := evlistener.NewBase()
	if err != nil {
		log.Fatal(err)
	}
	defer base.Close()
	serve := func(l *evlistener.Listener, fd int, addr net.Addr) {
		syscall.Write(fd, []byte("hello\n"))
		syscall.Close(fd)
	}
	fds, err := evlistener.ListenFDs()
	if err != nil {
		log.Fatal(err) // a descriptor that is not a listening socket, say
	}
	for _, fd := range fds {
		// Backlog 0: the socket already listens.
		if _, err := evlistener.New(base, serve, evlistener.CloseOnFree, 0, fd.FD); err != nil {
			log.Fatal(err)
		}
		log.Printf("serving %s on %v", fd.Name, fd.Addr)
	}
	if len(fds) == 0 {
		if _, err := evlistener.NewBind(base, serve, evlistener.CloseOnFree, -1, "tcp", "127.0.0.1:9876"); err != nil {
			log.Fatal(err)
		}
	}
	base.Dispatch()
}

// A new process of the server takes the listening socket over: it accepts
// what waits in the backlog, and the old one stops accepting without a
// connection refused or reset.
func ExampleListener_File() {
	base, err := evlistener.NewBase()
	if err != nil {
		log.Fatal(err)
	}
	defer base.Close()
	l, err := evlistener.NewBind(base, nil, evlistener.CloseOnFree, -1, "tcp", "127.0.0.1:9876")
	if err != nil {
		log.Fatal(err)
	}
	f, err := l.File()
	if err != nil {
		log.Fatal(err)
	}
	// The new process finds the socket at fd 3 (ExtraFiles[0]).
	cmd := exec.Command("/usr/local/bin/server")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	f.Close()
	// Once the new process says it accepts: this closes only this
	// process's descriptor; the socket lives on in the new process.
	l.Close()
}
