// Command goecho is the Go net reference echo server: one goroutine per
// connection copying through a 16 KiB buffer. It is what a Go user writes
// instead of binding libevent. Go sets TCP_NODELAY by default.
package main

import (
	"errors"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/evlistener/evlistener/bench/internal/echocli"
)

const prog = "goecho"

func main() {
	addr := echocli.Parse(prog)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		echocli.Fatal(prog, err)
	}
	echocli.Listening(ln.Addr())
	echocli.OnSignal(func() {
		ln.Close()
		os.Exit(0)
	})
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				select {} // the signal handler exits
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
				time.Sleep(10 * time.Millisecond) // a shortage: let connections close
				continue
			}
			echocli.Fatal(prog, err)
		}
		go serve(c)
	}
}

func serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 16<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
