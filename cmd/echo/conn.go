package main

import (
	"syscall"

	"github.com/evlistener/evlistener"
)

// defaultEngine is the faster engine by the benchmark (bench/, and
// BENCHMARKS in README.md): event does one read() and one write() per
// message, where a buffer event also adds and removes its write event.
const defaultEngine = "event"

// bufferEventConn is a client served by a buffer event: libevent reads into
// the input buffer, SetEcho moves it to the output buffer in C, and libevent
// writes that back. Go runs only at the edges: back-pressure, end of stream,
// errors and timeouts.
type bufferEventConn struct {
	lp *loop
	be *evlistener.BufferEvent
	// The callbacks, made once so that switching them costs nothing.
	onFull, onDrained, onFlushed evlistener.DataFunc
	onEvent                      evlistener.BufferEventFunc
}

func newBufferEventConn(lp *loop, fd int) (conn, error) {
	be, err := evlistener.NewBufferEvent(lp.base, fd, evlistener.BEVOptCloseOnFree)
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	c := &bufferEventConn{lp: lp, be: be}
	c.onFull, c.onDrained, c.onFlushed, c.onEvent = c.full, c.drained, c.flushed, c.event
	cfg := lp.srv.cfg
	be.SetCallbacks(c.onFull, nil, c.onEvent)
	// The read callback runs only once max-pending bytes wait to go out;
	// reading resumes when they are down to half.
	be.SetEcho(cfg.maxPending)
	be.SetWatermark(evlistener.EvWrite, cfg.maxPending/2, 0)
	// Idle: nothing arrived, or nothing could be sent, for that long.
	be.SetTimeouts(cfg.idle, cfg.idle)
	if err := be.Enable(evlistener.EvRead | evlistener.EvWrite); err != nil {
		be.Close()
		return nil, err
	}
	return c, nil
}

// full: the client sends faster than it reads. Stop reading until the
// output has drained to the write low watermark.
func (c *bufferEventConn) full(be *evlistener.BufferEvent) {
	be.Disable(evlistener.EvRead)
	be.SetCallbacks(c.onFull, c.onDrained, c.onEvent)
}

func (c *bufferEventConn) drained(be *evlistener.BufferEvent) {
	be.SetCallbacks(c.onFull, nil, c.onEvent)
	be.Enable(evlistener.EvRead)
}

// event: end of stream, an error or a timeout.
func (c *bufferEventConn) event(be *evlistener.BufferEvent, what evlistener.BEVEvent, err error) {
	const (
		reading = evlistener.BEVEventReading
		eof     = evlistener.BEVEventEOF
		timeout = evlistener.BEVEventTimeout
	)
	switch {
	case what == reading|eof && be.Output().Len() > 0:
		// The client has finished sending: send the rest of its echo,
		// then close.
		be.SetWatermark(evlistener.EvWrite, 0, 0)
		be.SetCallbacks(nil, c.onFlushed, c.onEvent)
	case what == reading|timeout && be.Output().Len() > 0:
		// Quiet, but still taking its echo: not idle. The write timeout
		// watches that; listen again.
		be.Enable(evlistener.EvRead)
	default:
		c.close()
	}
}

func (c *bufferEventConn) flushed(*evlistener.BufferEvent) { c.close() }

func (c *bufferEventConn) close() {
	c.be.Close()
	c.lp.closed(c)
}

func (c *bufferEventConn) release() { c.be.Close() }

// eventConn is a client served by one event: an echo event reads and writes
// back in C. When the socket takes only part of an echo, the rest waits here,
// reading stops, and a write event sends it; then reading resumes. So a
// connection holds at most one read's worth (min(max-pending, 64 KiB)).
type eventConn struct {
	lp      *loop
	fd      int
	echo    *evlistener.Event
	write   *evlistener.Event // made the first time a write stops short
	pending []byte
	sent    int // of pending
	// The callbacks, made once.
	onEcho     evlistener.EchoFunc
	onWritable evlistener.EventFunc
}

func newEventConn(lp *loop, fd int) (conn, error) {
	c := &eventConn{lp: lp, fd: fd}
	c.onEcho, c.onWritable = c.echoed, c.writable
	size := min(lp.srv.cfg.maxPending, evlistener.MaxEchoSize)
	var err error
	if c.echo, err = evlistener.NewEchoEvent(lp.base, fd, size, c.onEcho); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	// The timeout restarts with every read: it closes idle clients.
	if err := c.echo.Add(lp.srv.cfg.idle); err != nil {
		c.release()
		return nil, err
	}
	return c, nil
}

// echoed runs when the C echo step did not finish: unsent is what the
// socket did not take, or err says why the connection ends (EOF, idle
// timeout, an error).
func (c *eventConn) echoed(ev *evlistener.Event, unsent []byte, err error) {
	if err != nil {
		c.close()
		return
	}
	c.pending = append(c.pending[:0], unsent...)
	c.sent = 0
	if c.write == nil {
		c.write, err = evlistener.NewEvent(c.lp.base, c.fd, evlistener.EvWrite|evlistener.EvPersist, c.onWritable)
		if err != nil {
			c.close()
			return
		}
	}
	ev.Del()
	// Idle while writing: the client read nothing for that long.
	if err := c.write.Add(c.lp.srv.cfg.idle); err != nil {
		c.close()
	}
}

// writable sends what is pending; once all is out, reading resumes.
func (c *eventConn) writable(ev *evlistener.Event, fd int, what evlistener.Events) {
	if what&evlistener.EvTimeout != 0 {
		c.close()
		return
	}
	for c.sent < len(c.pending) {
		n, err := syscall.SendmsgN(fd, c.pending[c.sent:], nil, nil, syscall.MSG_NOSIGNAL)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return
		}
		if err != nil {
			c.close()
			return
		}
		c.sent += n
	}
	ev.Del()
	if err := c.echo.Add(c.lp.srv.cfg.idle); err != nil {
		c.close()
	}
}

func (c *eventConn) close() {
	c.release()
	c.lp.closed(c)
}

func (c *eventConn) release() {
	c.echo.Close()
	if c.write != nil {
		c.write.Close()
	}
	syscall.Close(c.fd)
}
