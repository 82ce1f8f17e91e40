package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/evlistener/evlistener"
)

// backlog is the listen() queue.
const backlog = 1024

// shutdownGrace is how much longer than flushTimeout shutdown waits for the
// loop to finish on its own before it closes what is left.
const shutdownGrace = 500 * time.Millisecond

// server is one event loop, its listener and the clients in the chat.
type server struct {
	cfg    config
	stderr io.Writer
	base   *evlistener.Base
	ln     *evlistener.Listener
	// fatal carries an accept error that is not a resource shortage, or
	// a loop that stopped on its own: either ends the server.
	fatal    chan error
	done     chan struct{} // closed when Dispatch has returned
	stopping atomic.Bool
	// clients are the connections that lines go to, in no particular
	// order. Touched on the loop goroutine only.
	clients []*client
}

// listen creates the base and binds the listener; nothing runs until run.
func listen(cfg config, stderr io.Writer) (*server, error) {
	// No C code shares this base: libevent's locks would only cost.
	base, err := evlistener.NewBaseWithFlags(evlistener.BaseNoLock)
	if err != nil {
		return nil, err
	}
	srv := &server{cfg: cfg, stderr: stderr, base: base, fatal: make(chan error, 1), done: make(chan struct{})}
	flags := evlistener.CloseOnFree | evlistener.Reuseable | evlistener.CloseOnExec
	srv.ln, err = evlistener.NewBind(base, srv.accept, flags, backlog, "tcp", net.JoinHostPort(cfg.addr, strconv.Itoa(cfg.port)))
	if err != nil {
		base.Close()
		return nil, err
	}
	srv.ln.SetErrorCallback(srv.acceptError)
	return srv, nil
}

// run runs the loop on this goroutine until shutdown, or until it fails.
func (srv *server) run() {
	defer close(srv.done)
	// The loop keeps its thread: libevent's notion of the loop thread stays
	// put, and no other goroutine is scheduled between its callbacks.
	runtime.LockOSThread()
	err := srv.base.Dispatch()
	if srv.stopping.Load() {
		// Shutting down, Dispatch returns once every client is flushed.
		return
	}
	if err == nil {
		err = errors.New("event loop stopped with nothing to do")
	}
	select {
	case srv.fatal <- err:
	default:
	}
}

// shutdown stops accepting, gives every client up to flushTimeout to take
// what is queued for it, then closes everything. It returns how many
// clients were in the chat.
func (srv *server) shutdown() (conns int) {
	srv.stopping.Store(true)
	err := srv.base.Do(func() {
		srv.ln.Close()
		conns = len(srv.clients)
		for _, c := range srv.clients {
			c.be.CloseAfterFlush(flushTimeout)
		}
		srv.clients = nil
	})
	if err == nil {
		// With the listener closed, Dispatch returns as soon as nothing is
		// pending: the last flush has ended, by writing all or by its
		// timeout. The grace is for a loop that is slow to get there.
		select {
		case <-srv.done:
		case <-time.After(flushTimeout + shutdownGrace):
		}
	}
	srv.base.Close() // stops a Dispatch still running, and frees what is open
	<-srv.done
	return conns
}

// accept runs on the loop for each new client: it joins the chat.
func (srv *server) accept(_ *evlistener.Listener, fd int, addr net.Addr) {
	// Lines are small and go out as soon as they are read, rather than
	// wait for Nagle's timer.
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	c, err := newClient(srv, fd, addr)
	if err != nil {
		// Said, not silent: the client sees its connection closed.
		fmt.Fprintf(srv.stderr, "chat: cannot serve %v: %v\n", addr, err)
		return
	}
	c.index = len(srv.clients)
	srv.clients = append(srv.clients, c)
}

// remove takes c out of the chat: no more lines go to it.
func (srv *server) remove(c *client) {
	if c.index < 0 {
		return
	}
	last := len(srv.clients) - 1
	srv.clients[c.index] = srv.clients[last]
	srv.clients[c.index].index = c.index
	srv.clients[last] = nil
	srv.clients = srv.clients[:last]
	c.index = -1
}

// broadcast queues msg, a line with its LF, for every client but from, in
// the order broadcast is called: so every client gets the lines in the
// order the server read them.
func (srv *server) broadcast(from *client, msg []byte) {
	var failed []*client
	for _, c := range srv.clients {
		if c == from {
			continue
		}
		// A client whose queue passes -max-pending hears of it through its
		// event callback (BEVEventOutputFull) once this callback returns,
		// so the queue passes the bound by at most what one read brings.
		if _, err := c.be.Write(msg); err != nil {
			failed = append(failed, c)
		}
	}
	for _, c := range failed {
		// It would miss this line: better gone than silently wrong.
		c.drop("cannot queue a line for it")
	}
}

// acceptError runs on the loop when accept failed. The listener has paused
// and retries on its own; only errors that a pause cannot cure stop the
// server.
func (srv *server) acceptError(_ *evlistener.Listener, err error) {
	for _, shortage := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, shortage) {
			fmt.Fprintf(srv.stderr, "chat: %v; accepting again shortly\n", err)
			return
		}
	}
	select {
	case srv.fatal <- err:
	default:
	}
}
