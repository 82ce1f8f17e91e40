package main

import (
	"fmt"
	"net"
	"syscall"

	"github.com/evlistener/evlistener"
)

// client is one connection in the chat, served by a buffer event: libevent
// reads into its input, the read callback takes whole lines out and queues
// them for the others, and libevent writes its output.
type client struct {
	srv   *server
	be    *evlistener.BufferEvent
	peer  net.Addr
	index int // in srv.clients; -1 once out of the chat
}

func newClient(srv *server, fd int, peer net.Addr) (*client, error) {
	be, err := evlistener.NewBufferEvent(srv.base, fd, evlistener.BEVOptCloseOnFree)
	if err != nil {
		// Not closed by NewBufferEvent when it fails.
		syscall.Close(fd)
		return nil, err
	}
	c := &client{srv: srv, be: be, peer: peer, index: -1}
	be.SetCallbacks(c.read, nil, c.event)
	// Back-pressure: once more than -max-pending bytes wait to go to this
	// client, its event callback gets BEVEventOutputFull and the client is
	// dropped. Low 0: nothing to resume, so no write callback is needed
	// before the output is empty.
	if err := be.SetWatermark(evlistener.EvWrite, 0, srv.cfg.maxPending); err != nil {
		be.Close()
		return nil, err
	}
	// Writing is enabled from the start (libevent's default) and its event
	// added only once output waits; enabling it here would add it now, for
	// a writable socket with nothing to write.
	if err := be.Enable(evlistener.EvRead); err != nil {
		be.Close()
		return nil, err
	}
	return c, nil
}

// read takes every whole line out of the input and sends it on. What is
// left is the start of a line: if it is already longer than -max-line, the
// line can only be too long.
func (c *client) read(be *evlistener.BufferEvent) {
	maxLine := c.srv.cfg.maxLine
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
		c.srv.broadcast(c, append(line, '\n'))
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
		c.drop(fmt.Sprintf("more than -max-pending %d bytes waiting for it", c.srv.cfg.maxPending))
	case what == evlistener.BEVEventReading|evlistener.BEVEventEOF:
		// The client has said all it will say, and leaves: what was
		// queued for it still goes out. A line it did not finish is
		// dropped.
		c.srv.remove(c)
		be.CloseAfterFlush(flushTimeout)
	default:
		// A reset or another error: nothing more can go either way.
		c.srv.remove(c)
		be.Close()
	}
}

// drop disconnects a client that broke a limit, dropping what was queued
// for it, and says so.
func (c *client) drop(why string) {
	fmt.Fprintf(c.srv.stderr, "chat: disconnected %v: %s\n", c.peer, why)
	c.srv.remove(c)
	c.be.Close()
}
