package main

import (
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/evlistener/evlistener"
)

// room is the chat: the clients that lines go to, in no particular order.
// Touched on the loop goroutine only.
type room struct {
	cfg        config
	stderr     io.Writer
	clients    []*client
	atShutdown int // clients in the chat when shutdown began
}

// client is one connection in the chat, served by a buffer event: libevent
// reads into its input, the read callback takes whole lines out and queues
// them for the others, and libevent writes its output.
type client struct {
	room  *room
	be    *evlistener.BufferEvent
	peer  net.Addr
	index int // in room.clients; -1 once out of the chat
}

// join runs on the loop for each new client.
func (r *room) join(c evlistener.Conn) {
	// Lines are small and go out as soon as they are read, rather than
	// wait for Nagle's timer.
	syscall.SetsockoptInt(c.FD, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	be, err := c.NewBufferEvent(0)
	// Back-pressure: once more than -max-pending bytes wait to go to this
	// client, its event callback gets BEVEventOutputFull and the client is
	// dropped. Low 0: no write callback is needed before the output is
	// empty.
	if err == nil {
		if err = be.SetWatermark(evlistener.EvWrite, 0, r.cfg.maxPending); err == nil {
			// Writing is enabled from the start (libevent's default)
			// and its event added only once output waits.
			err = be.Enable(evlistener.EvRead)
		}
		if err != nil {
			be.Close()
		}
	}
	if err != nil {
		// Said, not silent: the client sees its connection closed.
		fmt.Fprintf(r.stderr, "chat: cannot serve %v: %v\n", c.Addr, err)
		return
	}
	cl := &client{room: r, be: be, peer: c.Addr, index: len(r.clients)}
	be.SetCallbacks(cl.read, nil, cl.event)
	r.clients = append(r.clients, cl)
}

// shutdown runs on the loop once the server has stopped accepting: every
// client gets up to flushTimeout to take what is queued for it.
func (r *room) shutdown(*evlistener.Base) {
	r.atShutdown = len(r.clients)
	for _, c := range r.clients {
		c.be.CloseAfterFlush(flushTimeout)
	}
	r.clients = nil
}

// remove takes c out of the chat: no more lines go to it.
func (r *room) remove(c *client) {
	if c.index < 0 {
		return
	}
	last := len(r.clients) - 1
	r.clients[c.index] = r.clients[last]
	r.clients[c.index].index = c.index
	r.clients[last] = nil
	r.clients = r.clients[:last]
	c.index = -1
}

// broadcast queues msg, a line with its LF, for every client but from, in
// the order broadcast is called: so every client gets the lines in the
// order the server read them.
func (r *room) broadcast(from *client, msg []byte) {
	var failed []*client
	for _, c := range r.clients {
		// A client whose queue passes -max-pending hears of it through
		// its event callback (BEVEventOutputFull) once this callback
		// returns, so the queue passes the bound by at most one read.
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
	maxLine := c.room.cfg.maxLine
	in := be.Input()
	for {
		line, ok := in.ReadLine(evlistener.EOLCRLF)
		if !ok {
			break
		}
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
		c.drop(fmt.Sprintf("more than -max-pending %d bytes waiting for it", c.room.cfg.maxPending))
	case what == evlistener.BEVEventReading|evlistener.BEVEventEOF:
		// The client has said all it will say, and leaves: what was
		// queued for it still goes out. A line it did not finish is
		// dropped.
		c.room.remove(c)
		be.CloseAfterFlush(flushTimeout)
	default:
		// A reset or another error: nothing more can go either way.
		c.room.remove(c)
		be.Close()
	}
}

// drop disconnects a client that broke a limit, dropping what was queued
// for it, and says so.
func (c *client) drop(why string) {
	fmt.Fprintf(c.room.stderr, "chat: disconnected %v: %s\n", c.peer, why)
	c.room.remove(c)
	c.be.Close()
}
