// Command chat is a line-based chat server on libevent, through evlistener:
// every whole line a client sends goes to every other client.
//
//	chat [flags] [port]
//
// The port (default 9877, 0 picks a free one) is the only argument. On start
// it prints "chat: listening on HOST:PORT" to stderr. Flags:
//
//	-addr HOST        address to listen on (default 127.0.0.1; 0.0.0.0 or ::
//	                  to serve the network)
//	-max-line B       longest line, in bytes without its terminator
//	                  (default 64 KiB); a client whose line grows past it is
//	                  disconnected
//	-max-pending B    bytes queued for one client (default 1 MiB); a client
//	                  that reads so slowly that more wait for it is
//	                  disconnected
//
// Lines end in LF or CRLF and go out ending in LF, to every client but the
// sender, in the order the server read them. Bytes after the last line
// terminator wait for the rest of their line; when the client leaves first
// they are dropped. A client that ends its side of the connection leaves the
// chat: it gets no more lines, and what was queued for it is still sent, for
// up to a second.
//
// SIGINT or SIGTERM stop accepting, send each client what is queued for it,
// for up to a second, close every connection and exit 0. An accept error
// other than a resource shortage stops the server with status 1; a bad
// argument or flag value exits 2 before anything is bound.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/evlistener/evlistener"
	"github.com/evlistener/evlistener/internal/cmdline"
)

const (
	defaultPort       = 9877
	defaultMaxLine    = 64 << 10
	defaultMaxPending = 1 << 20
	// flushTimeout bounds how long a leaving client, or every client at
	// shutdown, is given to take what is queued for it.
	flushTimeout = time.Second
	// shutdownGrace is how much longer than flushTimeout shutdown waits
	// for the flushes to end on their own before it closes what is left.
	shutdownGrace = 500 * time.Millisecond
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// run is the program; it returns the exit status.
func run(args []string, stderr io.Writer) int {
	cmd, r, err := parseArgs(args, stderr)
	if err != nil {
		return cmdline.Status(err)
	}
	sigc, stopSignals := cmdline.Notify(syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	cmdline.GOMAXPROCSAbove(1)
	srv := &evlistener.Server{
		Addr: cmd.Addr(r.addr),
		// One loop: a line goes to every client, so all are on it. No C
		// code shares it: libevent's locks would only cost.
		BaseFlags:  evlistener.BaseNoLock,
		Handler:    r.join,
		OnShutdown: r.shutdown,
		ErrorLog:   log.New(stderr, "chat: ", 0),
	}
	served, err := cmd.Serve(srv)
	if err != nil {
		return 1
	}

	select {
	case sig := <-sigc:
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), flushTimeout+shutdownGrace)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
		fmt.Fprintf(stderr, "chat: %v: flushed and closed %d connections in %v\n", sig, r.atShutdown, time.Since(start).Round(time.Microsecond))
		return 0
	case err := <-served:
		fmt.Fprintf(stderr, "chat: %v\n", err)
		return 1
	}
}

// parseArgs reads the command line into an empty room. On an error it has
// already told the user on stderr, in one line.
func parseArgs(args []string, stderr io.Writer) (*cmdline.Command, *room, error) {
	r := &room{stderr: stderr, clients: map[*client]struct{}{}}
	cmd := cmdline.New("chat", defaultPort, "Every whole line a client sends (ending in LF or CRLF) goes to every other\n"+
		"client, ending in LF. SIGINT or SIGTERM send what is queued, for up to a\n"+
		"second, and exit 0.", stderr)
	cmd.StringVar(&r.addr, "addr", "127.0.0.1", "address to listen on (0.0.0.0 or :: to serve the network)")
	cmd.IntVar(&r.maxLine, "max-line", defaultMaxLine, "longest line in bytes, without its terminator; a client whose line grows past it is disconnected")
	cmd.IntVar(&r.maxPending, "max-pending", defaultMaxPending, "bytes queued for one client; a client with more waiting is disconnected")
	var err error
	switch err = cmd.Parse(args); {
	case err != nil:
	case !cmdline.ValidHost(r.addr):
		err = cmd.Fail("-addr %q: want an IP address or a host name, without a port", r.addr)
	case r.maxLine < 1:
		err = cmd.Fail("-max-line %d: want at least 1", r.maxLine)
	case r.maxPending < 1:
		err = cmd.Fail("-max-pending %d: want at least 1", r.maxPending)
	case r.maxPending <= r.maxLine:
		// A longest line and its LF must fit in an empty queue, or every
		// such line would disconnect every client it goes to.
		err = cmd.Fail("-max-pending %d: want more than -max-line %d, so that a longest line fits", r.maxPending, r.maxLine)
	}
	return cmd, r, err
}

// room is the chat: its settings, from the command line, and the clients
// that lines go to, touched on the loop goroutine only.
type room struct {
	addr                string
	maxLine, maxPending int
	stderr              io.Writer
	clients             map[*client]struct{}
	atShutdown          int // clients in the chat when shutdown began
}

// client is one connection in the chat, on a buffer event: the read
// callback takes whole lines out of its input and queues them for the others.
type client struct {
	room *room
	be   *evlistener.BufferEvent
	peer net.Addr
}

// join runs on the loop for each new client.
func (r *room) join(c evlistener.Conn) {
	// Lines are small and go out as soon as they are read, rather than
	// wait for Nagle's timer.
	syscall.SetsockoptInt(c.FD, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	be, err := c.NewBufferEvent(0)
	if err == nil {
		cl := &client{room: r, be: be, peer: c.Addr}
		be.SetCallbacks(cl.read, nil, cl.event)
		// Back-pressure: past -max-pending bytes waiting, the event
		// callback gets BEVEventOutputFull and drops the client.
		if err = be.SetWatermark(evlistener.EvWrite, 0, r.maxPending); err == nil {
			err = be.Enable(evlistener.EvRead)
		}
		if err == nil {
			r.clients[cl] = struct{}{}
			return
		}
		be.Close()
	}
	// Said, not silent: the client sees its connection closed.
	fmt.Fprintf(r.stderr, "chat: cannot serve %v: %v\n", c.Addr, err)
}

// shutdown runs on the loop once the server has stopped accepting: every
// client gets up to flushTimeout to take what is queued for it.
func (r *room) shutdown(*evlistener.Base) {
	r.atShutdown = len(r.clients)
	for c := range r.clients {
		c.be.CloseAfterFlush(flushTimeout)
	}
	clear(r.clients)
}

// broadcast queues msg, a line with its LF, for every client but from: each
// gets the lines in the order the server read them.
func (r *room) broadcast(from *client, msg []byte) {
	var failed []*client
	for c := range r.clients {
		// Past -max-pending, BEVEventOutputFull comes once this
		// callback returns: the bound is passed by one read at most.
		if c != from {
			if _, err := c.be.Write(msg); err != nil {
				failed = append(failed, c)
			}
		}
	}
	for _, c := range failed {
		// It would miss this line: better gone than silently wrong.
		c.drop("cannot queue a line for it")
	}
}

// read takes every whole line out of the input and sends it on. What is
// left is the start of a line: if it is already longer than -max-line, the
// line can only be too long.
func (c *client) read(be *evlistener.BufferEvent) {
	maxLine := c.room.maxLine
	in := be.Input()
	for line, ok := in.ReadLine(evlistener.EOLCRLF); ok; line, ok = in.ReadLine(evlistener.EOLCRLF) {
		if len(line) > maxLine {
			c.drop(fmt.Sprintf("a line of %d bytes, more than -max-line %d", len(line), maxLine))
			return
		}
		// ReadLine leaves room for one more byte: no copy here.
		c.room.broadcast(c, append(line, '\n'))
	}
	// A CR at the end may be the start of a CRLF: it is not part of the
	// line, so maxLine bytes and a CR are still within the bound.
	if n := in.Len(); n > maxLine+1 || n == maxLine+1 && in.Peek(n)[maxLine] != '\r' {
		c.drop(fmt.Sprintf("%d bytes with no line end, more than -max-line %d", n, maxLine))
	}
}

// event: back-pressure, end of stream, or an error.
func (c *client) event(be *evlistener.BufferEvent, what evlistener.BEVEvent, err error) {
	switch {
	case what&evlistener.BEVEventOutputFull != 0:
		c.drop(fmt.Sprintf("more than -max-pending %d bytes waiting for it", c.room.maxPending))
	case what == evlistener.BEVEventReading|evlistener.BEVEventEOF:
		// The client has said all it will say, and leaves: what was
		// queued for it still goes out. A line it did not finish is
		// dropped.
		delete(c.room.clients, c)
		be.CloseAfterFlush(flushTimeout)
	default:
		// A reset or another error: nothing more can go either way.
		delete(c.room.clients, c)
		be.Close()
	}
}

// drop disconnects a client that broke a limit, dropping what was queued
// for it, and says so.
func (c *client) drop(why string) {
	fmt.Fprintf(c.room.stderr, "chat: disconnected %v: %s\n", c.peer, why)
	delete(c.room.clients, c)
	c.be.Close()
}
