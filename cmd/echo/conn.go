package main

import (
	"syscall"
	"time"
	"unsafe"

	"github.com/evlistener/evlistener"
	"github.com/evlistener/evlistener/internal/cmdline"
)

// defaultEngine is event: it does one read() and one write() per message,
// where a buffer event also adds and removes its write event
// (bench/README.md compares the two).
const defaultEngine = "event"

// Both engines accept with the connection's object made in C, as a C
// server makes it in its accept callback (the Server's Events and
// BufferEvents, through Listener.AcceptEvents and AcceptBufferEvents): the
// listener makes, arms and pools each connection's event or buffer event,
// and the callbacks below are shared by the connections. So a connection costs the server no state of its own
// besides what libevent and the binding keep, except while an event
// connection's write stops short (stall).

// maxRead is the most the event engine reads at once.
const maxRead = 64 << 10

// defaultBusyPoll is the most a loop polls after a burst of work before it
// sleeps; the budget (-busy-poll-budget) decides how much of it is spent. A
// client's next request commonly follows the answer within tens of
// microseconds: catching it saves a sleep and a wake-up.
const defaultBusyPoll = 50 * time.Microsecond

// echo is the server's per-connection design: the engine's options for
// the Server, and each loop's state.
type echo struct {
	cfg   config
	loops []*loop // one per loop, appended by loopStart before serving
	// The bufferevent engine's callbacks, made once so that switching
	// them costs nothing.
	onRead, onDrained, onFlushed evlistener.DataFunc
	onEvent                      evlistener.BufferEventFunc
}

// loop is what a loop keeps for its connections, touched on that loop
// only.
type loop struct {
	base *evlistener.Base
	buf  []byte        // the event engine reads into it
	idle time.Duration // -idle
	// The event engine: the connections whose write stopped short, by
	// descriptor.
	stalls []*stall
}

// serveOn sets srv to accept into the engine's objects.
func (e *echo) serveOn(srv *evlistener.Server) {
	cfg := e.cfg
	srv.OnLoopStart = e.loopStart
	if cfg.engine == "bufferevent" {
		e.onRead, e.onDrained, e.onFlushed, e.onEvent = e.bevRead, e.bevDrained, e.bevFlushed, e.bevEvent
		srv.BufferEvents = &evlistener.BufferEventOptions{
			// Idle: nothing arrived, or nothing could be sent, for
			// that long.
			ReadTimeout:  cfg.idle,
			WriteTimeout: cfg.idle,
			// Reading resumes once a full output is down to half.
			WriteLowWatermark: cfg.maxPending / 2,
			NoDelay:           true,
			OnRead:            e.onRead,
			OnEvent:           e.onEvent,
		}
		return
	}
	srv.Events = &evlistener.EventOptions{
		What: evlistener.EvRead | evlistener.EvPersist,
		// The timeout restarts with every read: it closes idle clients.
		Timeout: cfg.idle,
		NoDelay: true,
		OnEvent: e.readable,
	}
}

// loopStart sets up a loop of the Server as it is made.
func (e *echo) loopStart(b *evlistener.Base) {
	b.SetBusyPoll(e.cfg.busyPoll)
	b.SetBusyPollBudget(e.cfg.pollBudget)
	e.loops = append(e.loops, &loop{base: b, buf: make([]byte, min(e.cfg.maxPending, maxRead)), idle: e.cfg.idle})
	cmdline.GOMAXPROCSAbove(len(e.loops))
}

// loopOf returns the state of the loop of base b: a scan, as loops are
// few and the first is the one there is most often.
func (e *echo) loopOf(b *evlistener.Base) *loop {
	for _, lp := range e.loops {
		if lp.base == b {
			return lp
		}
	}
	panic("echo: a connection on a loop the Server did not start")
}

// bevRead echoes what arrived: libevent read it into the input buffer, and
// EchoInput sends it back with one call into C (written at once when
// nothing is waiting, else queued in the output buffer, which libevent
// writes). Once max-pending bytes wait to go out, the client sends faster
// than it reads: stop reading until the output has drained to the write low
// watermark.
func (e *echo) bevRead(be *evlistener.BufferEvent) {
	pending, err := be.EchoInput()
	if err != nil {
		be.Close()
		return
	}
	if pending >= e.cfg.maxPending {
		be.Disable(evlistener.EvRead)
		be.SetCallbacks(e.onRead, e.onDrained, e.onEvent)
	}
}

func (e *echo) bevDrained(be *evlistener.BufferEvent) {
	be.SetCallbacks(e.onRead, nil, e.onEvent)
	be.Enable(evlistener.EvRead)
}

// bevEvent: end of stream, an error or a timeout.
func (e *echo) bevEvent(be *evlistener.BufferEvent, what evlistener.BEVEvent, err error) {
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
		be.SetCallbacks(nil, e.onFlushed, e.onEvent)
	case what == reading|timeout && be.Output().Len() > 0:
		// Quiet, but still taking its echo: not idle. The write timeout
		// watches that; listen again.
		be.Enable(evlistener.EvRead)
	default:
		be.Close()
	}
}

func (e *echo) bevFlushed(be *evlistener.BufferEvent) { be.Close() }

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

// readable reads what arrived into the loop's buffer and writes it back.
func (e *echo) readable(ev *evlistener.Event, fd int, what evlistener.Events) {
	lp := e.loopOf(ev.Base())
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
	if err := s.write.Add(lp.idle); err != nil {
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
	if err := s.read.Add(lp.idle); err != nil {
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
}

// rawIO is read(2) on a non-blocking socket.
func rawIO(trap uintptr, fd int, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

// The calls on a connection's socket are raw system calls: none of them
// blocks (the socket is non-blocking), so the loop thread needs no
// scheduler round trip.

// rawSend is send(2) with MSG_NOSIGNAL on a non-blocking socket: a peer that
// went away gives EPIPE, not SIGPIPE.
func rawSend(fd int, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_NOSIGNAL, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(n), 0
}
