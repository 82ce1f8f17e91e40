package evlistener_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/evlistener/evlistener"
)

// An echo server on four loops sharing the port, as a service runs it:
// SIGTERM shuts it down gracefully, SIGHUP upgrades it to the executable
// now at its path without refusing a connection. Here a client talks to
// it, then the example sends itself the SIGTERM a service manager would.
func ExampleServer() {
	srv := &evlistener.Server{
		Addr:     "127.0.0.1:0",
		Loops:    4,
		MaxConns: 10000, // more wait in the backlog
		Handler: func(c evlistener.Conn) {
			be, err := c.NewBufferEvent(0)
			if err != nil {
				return
			}
			echo := func(be *evlistener.BufferEvent) { be.EchoInput() }
			end := func(be *evlistener.BufferEvent, what evlistener.BEVEvent, _ error) {
				if what&(evlistener.BEVEventEOF|evlistener.BEVEventError) != 0 {
					be.Close() // the Server counts the connection's end
				}
			}
			be.SetCallbacks(echo, nil, end)
			be.Enable(evlistener.EvRead)
		},
	}
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigc)
	if err := srv.Listen(); err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	go func() {
		for sig := range sigc {
			if sig == syscall.SIGHUP {
				go func() { log.Print(srv.Upgrade()) }()
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			srv.Shutdown(ctx) // open connections get 30 s to finish
			cancel()
			return
		}
	}()

	c, err := net.Dial("tcp", srv.Addrs()[0].String())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(c, "hello")
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Print(line)
	c.Close()
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	fmt.Println(<-served)
	fmt.Printf("%+v\n", srv.Stats())
	// Output:
	// hello
	// evlistener: Server closed
	// {Accepted:1 Open:0 Closed:1 AtLimit:0 AcceptErrors:0}
}
