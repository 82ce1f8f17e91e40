package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/evlistener/evlistener"
)

// backlog is the listen() queue: clients past -max-conns wait in it.
const backlog = 1024

// defaultBusyPoll is the most a loop polls after a burst of work before it
// sleeps; the budget (-busy-poll-budget) decides how much of it is spent. A
// client's next request commonly follows the answer within tens of
// microseconds: catching it without a sleep and a wake-up took a 64-byte
// round trip on one connection from about 50 to 29 µs in bench/ with no
// budget, for about a third more CPU time per message.
const defaultBusyPoll = 50 * time.Microsecond

// maxRead is the most the event engine reads at once.
const maxRead = 64 << 10

// server is N event loops, each with a listener on the same port.
type server struct {
	cfg    config
	stderr io.Writer
	addrs  []net.Addr // where it listens, each once
	loops  []*loop
	// sockets are the listeners of the distinct listening sockets, the
	// ones an upgrade hands on: every loop's, or with fewer inherited
	// sockets than loops, one per socket.
	sockets []*evlistener.Listener
	// fatal carries an accept error that is not a resource shortage (the
	// server stops on it, as the libevent book's echo does), or a loop
	// that stopped on its own.
	fatal    chan error
	started  bool
	stopping atomic.Bool
	draining atomic.Bool // the listeners are closed; loops end with their last connection
}

// loop is one event base on its own OS thread, its listener and its
// connections. Everything but done is touched only on the loop's goroutine,
// or after it has finished.
type loop struct {
	srv   *server
	base  *evlistener.Base
	ln    *evlistener.Listener
	limit int    // connections this loop serves at once
	open  int    // connections open
	full  bool   // ln disabled because open reached limit
	buf   []byte // the event engine reads into it
	done  chan struct{}

	// The event engine: the connections whose write stopped short, by
	// descriptor (see conn.go).
	stalls []*stall
	// The bufferevent engine's callbacks, made once so that switching
	// them costs nothing.
	onRead, onDrained, onFlushed evlistener.DataFunc
	onEvent                      evlistener.BufferEventFunc
}

// listen creates the loops and binds their listeners, the first one
// choosing the port when it is 0 and the others sharing it. With inherited
// listening sockets it binds nothing: loop i serves socket i, and loops past
// the last socket take turns on duplicates of them (sharing their backlog).
// cfg.loops must be at least len(inherited).
func listen(cfg config, stderr io.Writer, inherited []int) (*server, error) {
	srv := &server{cfg: cfg, stderr: stderr, fatal: make(chan error, 1)}
	flags := evlistener.CloseOnFree | evlistener.Reuseable | evlistener.CloseOnExec
	if cfg.loops > 1 {
		flags |= evlistener.ReuseablePort
	}
	port := cfg.port
	for i := 0; i < cfg.loops; i++ {
		// No C code shares these bases: libevent's locks would only cost.
		base, err := evlistener.NewBaseWithFlags(evlistener.BaseNoLock)
		if err != nil {
			srv.shutdown()
			return nil, err
		}
		base.SetBusyPoll(cfg.busyPoll)
		base.SetBusyPollBudget(cfg.pollBudget)
		// Split -max-conns: each loop counts its own connections, so no
		// loop waits on another.
		lp := &loop{
			srv:   srv,
			base:  base,
			limit: cfg.maxConns / cfg.loops,
			buf:   make([]byte, min(cfg.maxPending, maxRead)),
			done:  make(chan struct{}),
		}
		if i < cfg.maxConns%cfg.loops {
			lp.limit++
		}
		srv.loops = append(srv.loops, lp)
		if len(inherited) > 0 {
			lp.ln, err = adopt(base, inherited, i)
		} else {
			lp.ln, err = evlistener.NewBind(base, nil, flags, backlog, "tcp", net.JoinHostPort(cfg.addr, strconv.Itoa(port)))
		}
		if err == nil {
			err = lp.serve()
		}
		if err != nil {
			srv.shutdown()
			return nil, err
		}
		lp.ln.SetErrorCallback(lp.acceptError)
		if i == 0 {
			if ta, ok := lp.ln.Addr().(*net.TCPAddr); ok {
				port = ta.Port
			}
		}
		if len(inherited) == 0 || i < len(inherited) {
			srv.sockets = append(srv.sockets, lp.ln)
			srv.addAddr(lp.ln.Addr())
		}
	}
	return srv, nil
}

// adopt serves inherited socket i (or, past the last, a duplicate of one)
// on base. Close closes the descriptor it was given.
func adopt(base *evlistener.Base, inherited []int, i int) (*evlistener.Listener, error) {
	fd := inherited[i%len(inherited)]
	if i >= len(inherited) {
		var err error
		if fd, err = syscall.Dup(fd); err != nil {
			return nil, os.NewSyscallError("dup", err)
		}
		syscall.CloseOnExec(fd)
	}
	ln, err := evlistener.New(base, nil, evlistener.CloseOnFree, 0, fd)
	if err != nil && i >= len(inherited) {
		syscall.Close(fd)
	}
	return ln, err
}

func (srv *server) addAddr(a net.Addr) {
	for _, b := range srv.addrs {
		if a.String() == b.String() {
			return
		}
	}
	srv.addrs = append(srv.addrs, a)
}

// start runs every loop on its own locked OS thread.
func (srv *server) start() {
	srv.started = true
	for _, lp := range srv.loops {
		go lp.run()
	}
}

func (lp *loop) run() {
	defer close(lp.done)
	// The loop keeps its thread: libevent's notion of the loop thread stays
	// put, and no other goroutine is scheduled between its callbacks.
	runtime.LockOSThread()
	err := lp.base.Dispatch()
	if lp.srv.stopping.Load() || lp.srv.draining.Load() {
		// Draining, Dispatch returns once nothing is left to serve.
		return
	}
	if err == nil {
		err = errors.New("event loop stopped with nothing to do")
	}
	select {
	case lp.srv.fatal <- err:
	default:
	}
}

// shutdown stops accepting and closes every connection: closing a base
// stops its loop and frees its listener and what is open on it, the
// connections' objects and sockets included.
func (srv *server) shutdown() (conns int) {
	srv.stopping.Store(true)
	// The loops stop in parallel: each Close waits for its loop to finish
	// the callback it is in.
	var wg sync.WaitGroup
	counts := make([]int, len(srv.loops))
	for i, lp := range srv.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lp.base.Close() // waits for a running Dispatch to return
			if srv.started {
				<-lp.done
			}
			counts[i] = lp.open
		}()
	}
	wg.Wait()
	for _, n := range counts {
		conns += n
	}
	return conns
}

// acceptError runs on the loop when accept failed. The listener has paused
// and retries on its own; only errors that a pause cannot cure stop the
// server.
func (lp *loop) acceptError(_ *evlistener.Listener, err error) {
	for _, shortage := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, shortage) {
			fmt.Fprintf(lp.srv.stderr, "echo: %v; accepting again shortly\n", err)
			return
		}
	}
	select {
	case lp.srv.fatal <- err:
	default:
	}
}

// stopAccepting closes every listener, for the process that took the
// sockets over. That closes only this process's descriptors: the sockets,
// and the connections waiting in their backlogs, live on in the new
// process, which accepts them; closing the last descriptor of a listening
// socket would reset them instead. Each loop's Dispatch returns once its
// last connection has closed; drained is closed when all have.
func (srv *server) stopAccepting() (drained <-chan struct{}) {
	srv.draining.Store(true)
	for _, lp := range srv.loops {
		lp.ln.Close()
	}
	done := make(chan struct{})
	go func() {
		for _, lp := range srv.loops {
			<-lp.done
		}
		close(done)
	}()
	return done
}
