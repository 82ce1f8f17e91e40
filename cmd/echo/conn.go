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

// Both engines accept with the connection's object made in C, as a C
// server makes it in its accept callback (Listener.AcceptEvents,
// AcceptBufferEvents): the listener makes, arms and pools each connection's
// event or buffer event, and the callbacks below are the loop's, shared by
// its connections. So a connection costs the server no state of its own
// besides what libevent and the binding keep, except while an event
// connection's write stops short (stall).

// serve makes lp's listener accept into its engine's objects.
func (lp *loop) serve() error {
	cfg := lp.srv.cfg
	if cfg.engine == "bufferevent" {
		lp.onRead, lp.onDrained, lp.onFlushed = lp.bevRead, lp.bevDrained, lp.bevFlushed
		lp.onEvent = lp.bevEvent
		return lp.ln.AcceptBufferEvents(evlistener.BufferEventOptions{
			// Idle: nothing arrived, or nothing could be sent, for
			// that long.
			ReadTimeout:  cfg.idle,
			WriteTimeout: cfg.idle,
			// Reading resumes once a full output is down to half.
			WriteLowWatermark: cfg.maxPending / 2,
			OnAccept:          lp.acceptBufferEvent,
			OnRead:            lp.onRead,
			OnEvent:           lp.onEvent,
		})
	}
	return lp.ln.AcceptEvents(evlistener.EventOptions{
		What: evlistener.EvRead | evlistener.EvPersist,
		// The timeout restarts with every read: it closes idle clients.
		Timeout:  cfg.idle,
		OnAccept: lp.acceptEvent,
		OnEvent:  lp.readable,
	})
}

// opened counts a new connection; at -max-conns the listener stops.
func (lp *loop) opened(l *evlistener.Listener, fd int) {
	// Small messages go out at once rather than wait for Nagle's timer.
	setNoDelay(fd)
	lp.open++
	if lp.open >= lp.limit && !lp.full {
		// Inside the accept callback this stops libevent's accept loop
		// at once; the next clients wait in the backlog.
		lp.full = true
		l.Disable()
	}
}

// closed runs on the loop when a connection has closed.
func (lp *loop) closed() {
	lp.open--
	if lp.full && lp.open < lp.limit {
		lp.full = false
		lp.ln.Enable()
	}
}

func (lp *loop) acceptBufferEvent(l *evlistener.Listener, be *evlistener.BufferEvent) {
	lp.opened(l, be.FD())
}

// bevRead echoes what arrived: libevent read it into the input buffer, and
// EchoInput sends it back with one call into C (written at once when
// nothing is waiting, else queued in the output buffer, which libevent
// writes). Once max-pending bytes wait to go out, the client sends faster
// than it reads: stop reading until the output has drained to the write low
// watermark.
func (lp *loop) bevRead(be *evlistener.BufferEvent) {
	pending, err := be.EchoInput()
	if err != nil {
		lp.closeBufferEvent(be)
		return
	}
	if pending >= lp.srv.cfg.maxPending {
		be.Disable(evlistener.EvRead)
		be.SetCallbacks(lp.onRead, lp.onDrained, lp.onEvent)
	}
}

func (lp *loop) bevDrained(be *evlistener.BufferEvent) {
	be.SetCallbacks(lp.onRead, nil, lp.onEvent)
	be.Enable(evlistener.EvRead)
}

// bevEvent: end of stream, an error or a timeout.
func (lp *loop) bevEvent(be *evlistener.BufferEvent, what evlistener.BEVEvent, err error) {
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
		be.SetCallbacks(nil, lp.onFlushed, lp.onEvent)
	case what == reading|timeout && be.Output().Len() > 0:
		// Quiet, but still taking its echo: not idle. The write timeout
		// watches that; listen again.
		be.Enable(evlistener.EvRead)
	default:
		lp.closeBufferEvent(be)
	}
}

func (lp *loop) bevFlushed(be *evlistener.BufferEvent) { lp.closeBufferEvent(be) }

func (lp *loop) closeBufferEvent(be *evlistener.BufferEvent) {
	be.Close()
	lp.closed()
}

// The event engine: one event per connection, with read() and write()
// straight from its callback, in Go: the libevent limit, with no buffer
// layer. When the socket takes only part of an echo, the rest waits in a
// stall, reading stops, and a write event sends it; then reading resumes.
// So a connection holds at most one read's worth (min(max-pending, 64 KiB)).

// stall is an event connection whose echo the socket did not take whole.
type stall struct {
	read    *evlistener.Event // the connection's event, deleted meanwhile
	write   *evlistener.Event
	pending []byte
	sent    int // of pending
}

func (lp *loop) acceptEvent(l *evlistener.Listener, ev *evlistener.Event) {
	lp.opened(l, ev.FD())
}

// readable reads what arrived into the loop's buffer and writes it back.
func (lp *loop) readable(ev *evlistener.Event, fd int, what evlistener.Events) {
	if what&evlistener.EvTimeout != 0 {
		lp.closeEvent(ev)
		return
	}
	buf := lp.buf
	n, errno := rawIO(syscall.SYS_READ, fd, buf)
	switch {
	case n == 0:
		lp.closeEvent(ev) // end of stream
		return
	case errno == syscall.EAGAIN || errno == syscall.EINTR:
		return // woken for nothing; libevent polls again
	case errno != 0:
		lp.closeEvent(ev)
		return
	}
	w, errno := rawSend(fd, buf[:n])
	if w == n {
		return
	}
	if errno != 0 && errno != syscall.EAGAIN && errno != syscall.EINTR {
		lp.closeEvent(ev)
		return
	}
	lp.stall(ev, fd, buf[max(w, 0):n])
}

// stall keeps rest, the part of an echo the socket did not take, and
// waits for the socket to take it before reading again.
func (lp *loop) stall(ev *evlistener.Event, fd int, rest []byte) {
	for fd >= len(lp.stalls) {
		lp.stalls = append(lp.stalls, nil)
	}
	s := lp.stalls[fd]
	if s == nil {
		s = &stall{read: ev}
		w, err := evlistener.NewEvent(lp.base, fd, evlistener.EvWrite|evlistener.EvPersist, lp.writable)
		if err != nil {
			lp.closeEvent(ev)
			return
		}
		s.write = w
		lp.stalls[fd] = s
	}
	s.pending = append(s.pending[:0], rest...)
	s.sent = 0
	ev.Del()
	// Idle while writing: the client read nothing for that long.
	if err := s.write.Add(lp.srv.cfg.idle); err != nil {
		lp.closeEvent(ev)
	}
}

// writable sends what is pending; once all is out, reading resumes.
func (lp *loop) writable(w *evlistener.Event, fd int, what evlistener.Events) {
	s := lp.stalls[fd]
	if what&evlistener.EvTimeout != 0 {
		lp.closeEvent(s.read)
		return
	}
	for s.sent < len(s.pending) {
		n, err := syscall.SendmsgN(fd, s.pending[s.sent:], nil, nil, syscall.MSG_NOSIGNAL)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return
		}
		if err != nil {
			lp.closeEvent(s.read)
			return
		}
		s.sent += n
	}
	w.Del()
	if err := s.read.Add(lp.srv.cfg.idle); err != nil {
		lp.closeEvent(s.read)
	}
}

// closeEvent closes an event connection: its event and socket, in one call
// into C, and its stall if it has one.
func (lp *loop) closeEvent(ev *evlistener.Event) {
	fd := ev.FD()
	if fd < len(lp.stalls) {
		if s := lp.stalls[fd]; s != nil {
			s.write.Close() // before the socket: it watches it
			lp.stalls[fd] = nil
		}
	}
	ev.Close()
	lp.closed()
}

// rawIO is read(2) on a non-blocking socket.
func rawIO(trap uintptr, fd int, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

// The calls on a connection's socket are raw system calls: none of them
// blocks (the socket is non-blocking), so the loop thread needs no
// scheduler round trip.

// setNoDelay sets TCP_NODELAY.
func setNoDelay(fd int) {
	one := int32(1)
	syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
}

// rawSend is send(2) with MSG_NOSIGNAL on a non-blocking socket: a peer that
// went away gives EPIPE, not SIGPIPE.
func rawSend(fd int, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_NOSIGNAL, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(n), 0
}
