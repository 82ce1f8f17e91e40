package main

import (
	"syscall"
	"unsafe"

	"github.com/evlistener/evlistener"
)

// defaultEngine is the faster engine by the benchmark (bench/, and
// BENCHMARKS in README.md): event does one read() and one write() per
// message, where a buffer event also adds and removes its write event.
const defaultEngine = "event"

// bufferEventConn is a client served by a buffer event, as in the libevent
// book: libevent reads into the input buffer; the read callback, in Go,
// sends it back with one call into C (EchoInput: written at once when
// nothing is waiting, else queued in the output buffer, which libevent
// writes) and decides on back-pressure.
type bufferEventConn struct {
	lp *loop
	be *evlistener.BufferEvent
	// The callbacks, made once so that switching them costs nothing.
	onRead, onDrained, onFlushed evlistener.DataFunc
	onEvent                      evlistener.BufferEventFunc
}

func newBufferEventConn(lp *loop, fd int) (conn, error) {
	be, err := evlistener.NewBufferEvent(lp.base, fd, evlistener.BEVOptCloseOnFree)
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	c := &bufferEventConn{lp: lp, be: be}
	c.onRead, c.onDrained, c.onFlushed, c.onEvent = c.read, c.drained, c.flushed, c.event
	cfg := lp.srv.cfg
	be.SetCallbacks(c.onRead, nil, c.onEvent)
	// Reading resumes once a full output is down to half.
	be.SetWatermark(evlistener.EvWrite, cfg.maxPending/2, 0)
	// Idle: nothing arrived, or nothing could be sent, for that long.
	be.SetTimeouts(cfg.idle, cfg.idle)
	// Writing is enabled from the start (libevent's default), and its
	// event is added only once output waits; enabling it here would add it
	// now, wake the loop for a writable socket with nothing to write and
	// remove it again: two epoll_ctl calls per connection for nothing.
	if err := be.Enable(evlistener.EvRead); err != nil {
		be.Close()
		return nil, err
	}
	return c, nil
}

// read echoes what arrived. Once max-pending bytes wait to go out, the
// client sends faster than it reads: stop reading until the output has
// drained to the write low watermark.
func (c *bufferEventConn) read(be *evlistener.BufferEvent) {
	pending, err := be.EchoInput()
	if err != nil {
		c.close()
		return
	}
	if pending >= c.lp.srv.cfg.maxPending {
		be.Disable(evlistener.EvRead)
		be.SetCallbacks(c.onRead, c.onDrained, c.onEvent)
	}
}

func (c *bufferEventConn) drained(be *evlistener.BufferEvent) {
	be.SetCallbacks(c.onRead, nil, c.onEvent)
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

// eventConn is a client served by one event, with read() and write()
// straight from its callback, in Go: the libevent limit, with no buffer
// layer. When the socket takes only part of an echo, the rest waits here,
// reading stops, and a write event sends it; then reading resumes. So a
// connection holds at most one read's worth (min(max-pending, 64 KiB)).
type eventConn struct {
	lp      *loop
	fd      int
	ev      *evlistener.Event // read
	write   *evlistener.Event // made the first time a write stops short
	pending []byte
	sent    int // of pending
	// The read callback, made once.
	onReadable evlistener.EventFunc
}

func newEventConn(lp *loop, fd int) (conn, error) {
	c := &eventConn{lp: lp, fd: fd}
	c.onReadable = c.readable
	var err error
	if c.ev, err = evlistener.NewEvent(lp.base, fd, evlistener.EvRead|evlistener.EvPersist, c.onReadable); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	// The timeout restarts with every read: it closes idle clients.
	if err := c.ev.Add(lp.srv.cfg.idle); err != nil {
		c.release()
		return nil, err
	}
	return c, nil
}

// readable reads what arrived into the loop's buffer and writes it back.
func (c *eventConn) readable(ev *evlistener.Event, fd int, what evlistener.Events) {
	if what&evlistener.EvTimeout != 0 {
		c.close()
		return
	}
	buf := c.lp.buf
	n, errno := rawIO(syscall.SYS_READ, fd, buf)
	switch {
	case n == 0:
		c.close() // end of stream
		return
	case errno == syscall.EAGAIN || errno == syscall.EINTR:
		return // woken for nothing; libevent polls again
	case errno != 0:
		c.close()
		return
	}
	w, errno := rawSend(fd, buf[:n])
	if w == n {
		return
	}
	if errno != 0 && errno != syscall.EAGAIN && errno != syscall.EINTR {
		c.close()
		return
	}
	c.pending = append(c.pending[:0], buf[max(w, 0):n]...)
	c.sent = 0
	if c.write == nil {
		var err error
		c.write, err = evlistener.NewEvent(c.lp.base, c.fd, evlistener.EvWrite|evlistener.EvPersist, c.writable)
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

// rawIO is read(2) on a non-blocking socket.
func rawIO(trap uintptr, fd int, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

// The calls on a connection's socket are raw system calls: none of them
// blocks (the socket is non-blocking, and close(2) on it lingers in the
// kernel, not here), so the loop thread needs no scheduler round trip.

// setNoDelay sets TCP_NODELAY.
func setNoDelay(fd int) {
	one := int32(1)
	syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
}

// rawClose is close(2).
func rawClose(fd int) { syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0) }

// rawSend is send(2) with MSG_NOSIGNAL on a non-blocking socket: a peer that
// went away gives EPIPE, not SIGPIPE.
func rawSend(fd int, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_NOSIGNAL, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(n), 0
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
	if err := c.ev.Add(c.lp.srv.cfg.idle); err != nil {
		c.close()
	}
}

func (c *eventConn) close() {
	c.release()
	c.lp.closed(c)
}

func (c *eventConn) release() {
	c.ev.Close()
	if c.write != nil {
		c.write.Close()
	}
	rawClose(c.fd)
}
