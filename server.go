package evlistener

// Server: the machinery a production server needs around the listener,
// shaped like net/http.Server: many loops sharing the port, a connection
// bound, adoption of inherited sockets, graceful shutdown and the upgrade
// to a new process.
//
// The upgrade hands over, from the old process to the new one:
//   - fds 3 to 3+N-1: the N listening sockets (Listener.File);
//   - fd 3+N: the write end of a pipe, on which the new process writes one
//     byte once its listeners are open and its loops started;
//   - EVLISTENER_UPGRADE=N in the environment.
// systemd's LISTEN_PID cannot be used for this: it must hold the new
// process's pid, which os/exec does not know before exec.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// ErrServerClosed is returned by Serve after Shutdown or Close, and after
// an upgrade handed the sockets to a new process and the drain ended, as
// net/http's is.
var ErrServerClosed = errors.New("evlistener: Server closed")

// UpgradeEnv is the environment variable that tells a process started by
// Upgrade how many sockets it was handed (see Listen). A program that
// handed its sockets over by a name of its own before it ran on Server
// can rename its variable to this one, before Listen, to take them over.
const UpgradeEnv = "EVLISTENER_UPGRADE"

const upgradeEnv = UpgradeEnv

// Defaults of the Server's fields.
const (
	defaultServerBacklog  = 1024
	defaultUpgradeTimeout = 10 * time.Second
)

// ConnFunc handles a connection a Server accepted. It runs on the loop
// goroutine of the loop that accepted it, as an AcceptFunc does, and owns
// c: it must end it exactly once, by one of Conn's methods (Close,
// NewBufferEvent and then closing the buffer event, or Done).
type ConnFunc func(c Conn)

// Conn is a connection a Server accepted, handed to its ConnFunc. It is a
// value, copied freely: keep it with the connection's state, and end the
// connection through it, so that the Server counts it for MaxConns, Stats
// and Shutdown.
type Conn struct {
	FD   int      // the connected socket: non-blocking, close-on-exec
	Addr net.Addr // the peer's address
	Base *Base    // the loop it was accepted on; it belongs to the Server: do not Close it
	loop *serverLoop
}

// NewBufferEvent wraps the connection's socket in a buffer event on its
// loop, which owns the socket from then on (BEVOptCloseOnFree is added to
// opts). The connection ends when the buffer event is gone: at Close, at
// the end of CloseAfterFlush, or when the Server closes its loop. On an
// error the socket is closed and the connection has ended.
func (c Conn) NewBufferEvent(opts BEVOption) (*BufferEvent, error) {
	if c.loop == nil {
		return nil, errNotServerConn
	}
	be, err := NewBufferEvent(c.Base, c.FD, opts|BEVOptCloseOnFree)
	if err != nil {
		syscall.Close(c.FD)
		c.Done()
		return nil, err
	}
	lp := c.loop
	if c.Base.onLoop() {
		// No one else has be yet: it cannot have been released.
		be.serverConn = true
	} else if c.Base.Do(func() {
		if be.ctx == nil { // released already, not just flushing
			lp.ended()
		} else {
			be.serverConn = true
		}
	}) != nil {
		// The Server closed the loop, and be with it, before the hook
		// was set.
		lp.closedN.Add(1)
	}
	return be, nil
}

// Close closes the connection's socket and ends the connection, for a
// ConnFunc that serves the descriptor itself.
func (c Conn) Close() error {
	if c.loop == nil {
		return errNotServerConn
	}
	err := syscall.Close(c.FD)
	c.Done()
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// Done tells the Server that the connection has ended, for a ConnFunc that
// handed the socket on (to an Event, FileConn, another process) and knows
// when it is closed. Call it once per connection, from any goroutine.
func (c Conn) Done() {
	lp := c.loop
	if lp == nil {
		return
	}
	if c.Base.onLoop() {
		lp.ended()
		return
	}
	if c.Base.Do(lp.endFn) != nil {
		lp.closedN.Add(1) // the loop is closed: only the count is left
	}
}

// errNotServerConn answers a Conn that no Server made: it has no socket
// to close.
var errNotServerConn = errors.New("evlistener: Conn: not a connection a Server accepted")

// ServerStats are a Server's counts since Listen, for logs and tests.
type ServerStats struct {
	Accepted uint64 // connections handed to the Handler, or made into an Event or BufferEvent
	Open     uint64 // of those, not ended yet
	Closed   uint64 // of those, ended
	// AtLimit counts the times a loop reached its share of MaxConns and
	// left further clients in the kernel's backlog until a connection
	// ended. No connection is refused at the limit.
	AtLimit      uint64
	AcceptErrors uint64 // accept failures: resource shortages and fatal ones
}

// Server serves connections on Loops event loops, each its own Base on a
// locked OS thread with its own listener on the address (ReuseablePort),
// or its share of the sockets it inherited. Set its fields, then call
// Serve; the fields must not change afterwards. The zero value, with a
// Handler and an Addr, serves TCP on one loop with no connection limit.
//
// The library installs no signal handler: a program wires SIGTERM to
// Shutdown and SIGHUP to Upgrade.
type Server struct {
	// Network is "tcp" (the default), "tcp4", "tcp6" or "unix".
	Network string
	// Addr is the address to listen on, as net.Listen takes it
	// ("127.0.0.1:9876", ":0" for a free port, a unix path). It is not
	// used when the process inherited sockets (see Listen).
	Addr string
	// Loops is the number of event loops (default 1). Each waits in the
	// kernel on its own thread; keep GOMAXPROCS above Loops (see
	// Base.Dispatch).
	Loops int
	// MaxConns bounds the connections open at once (0: no bound); each
	// loop serves its share. At its share a loop stops accepting, and
	// clients wait in the kernel's backlog until a connection ends: none
	// is refused. It must be at least Loops.
	MaxConns int
	// Backlog is the listen() queue (default 1024).
	Backlog int
	// Flags are added to the listener flags the Server always uses
	// (CloseOnFree, Reuseable, CloseOnExec, and ReuseablePort with more
	// than one TCP loop).
	Flags Flag
	// BaseFlags are the loops' options (NewBaseWithFlags); BaseNoLock
	// where no C code shares the loops.
	BaseFlags BaseFlag
	// Handler serves each accepted connection. Exactly one of Handler,
	// Events and BufferEvents is set.
	Handler ConnFunc
	// Events, instead of Handler, makes each loop's listener accept every
	// connection into an event made and armed in C (Listener.AcceptEvents):
	// no allocation per connection. A connection counts as open (MaxConns,
	// Stats, Shutdown) from its OnAccept until its event's Close.
	Events *EventOptions
	// BufferEvents, instead of Handler, accepts every connection into a
	// buffer event made in C (Listener.AcceptBufferEvents), counted as
	// open until the buffer event is closed (CloseAfterFlush included).
	BufferEvents *BufferEventOptions
	// OnLoopStart, if set, runs once for each loop as Listen creates it,
	// before the loop accepts, on the goroutine that calls Listen: the
	// place for a loop's settings (SetBusyPoll) and for state of its own.
	OnLoopStart func(b *Base)
	// OnShutdown, if set, runs on each loop once it has stopped
	// accepting, at Shutdown and at the drain after an upgrade: the place
	// to close idle connections and flush the others (CloseAfterFlush).
	OnShutdown func(b *Base)
	// DrainTimeout bounds how long the connections may take to end after
	// a successful Upgrade before they are closed (0: no bound of its
	// own; a Shutdown or Close during the drain ends it too).
	DrainTimeout time.Duration
	// UpgradeTimeout bounds how long Upgrade waits for the new process
	// to be ready (default 10s).
	UpgradeTimeout time.Duration
	// ErrorLog receives resource shortages while accepting, which the
	// Server rides out; nil: the log package's standard logger.
	ErrorLog *log.Logger

	mu        sync.Mutex
	state     serverState
	stopping  bool // Shutdown or the drain after an upgrade began
	started   bool // the loops run
	loops     []*serverLoop
	sockets   []*Listener // one per distinct socket: what Upgrade hands on
	addrs     []net.Addr
	ready     *os.File // an upgrading parent's readiness pipe
	self      string   // the executable Upgrade starts
	selfErr   error
	upgrade   *pendingUpgrade
	handedOff bool
	successor int        // the pid the sockets were handed to
	fatal     chan error // an accept error or a loop that stopped: Serve ends
}

type serverState int

const (
	stateNew serverState = iota
	stateListening
	stateServing
	stateClosed
)

// serverLoop is one loop of a Server. Fields without a note are touched
// only on the loop goroutine (or once it has ended).
type serverLoop struct {
	srv      *Server
	base     *Base
	ln       *Listener
	limit    int
	full     bool // ln disabled at the limit
	stopping bool // accepting stopped; the loop ends with its last connection
	endFn    func()
	done     chan struct{} // closed when the loop's goroutine has ended

	closing      atomic.Bool // the Server closes the base: only count
	accepted     atomic.Uint64
	closedN      atomic.Uint64
	atLimit      atomic.Uint64
	acceptErrors atomic.Uint64
}

func (lp *serverLoop) open() int { return int(lp.accepted.Load() - lp.closedN.Load()) }

// Listen binds the Server's sockets, or adopts inherited ones, and
// creates its loops, without serving yet: connections wait in the
// backlog. Serve calls it when it has not been called; calling it first
// tells Addrs before the Server serves. Sockets are inherited from an
// upgrading parent (Upgrade), or by systemd's socket activation
// (ListenFDs): then Network and Addr are not used, and the Server runs as
// many loops as sockets, or Loops if that is more.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateClosed:
		return ErrServerClosed
	case stateListening, stateServing:
		return errors.New("evlistener: Server: Listen called twice")
	}
	if err := s.check(); err != nil {
		return err
	}
	// Before anything could change the working directory.
	s.self, s.selfErr = startPath()
	inherited, ready, err := s.inheritedSockets()
	if err != nil {
		return err
	}
	if ready != nil {
		s.ready = ready
	}
	if err := s.listen(inherited); err != nil {
		closeLoops(s.loops, false)
		s.loops, s.sockets, s.addrs = nil, nil, nil
		if s.ready != nil {
			s.ready.Close()
			s.ready = nil
		}
		return err
	}
	s.fatal = make(chan error, 1)
	s.state = stateListening
	return nil
}

// check reports a configuration the Server cannot serve.
func (s *Server) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("evlistener: Server: "+format, a...)
	}
	serving := 0
	for _, set := range []bool{s.Handler != nil, s.Events != nil, s.BufferEvents != nil} {
		if set {
			serving++
		}
	}
	switch {
	case serving == 0:
		return bad("Handler is nil, and so are Events and BufferEvents: nothing would serve the connections")
	case serving > 1:
		return bad("more than one of Handler, Events and BufferEvents is set: set one")
	case s.Loops < 0:
		return bad("Loops %d: want 1 or more (0: 1)", s.Loops)
	case s.MaxConns < 0:
		return bad("MaxConns %d: want 0 (no bound) or more", s.MaxConns)
	case s.MaxConns > 0 && s.MaxConns < max(s.Loops, 1):
		return bad("MaxConns %d is less than Loops %d: each loop serves at least one connection", s.MaxConns, s.Loops)
	case s.Backlog < 0:
		return bad("Backlog %d: want 1 or more (0: %d)", s.Backlog, defaultServerBacklog)
	case s.DrainTimeout < 0:
		return bad("DrainTimeout %v: want 0 (no bound) or more", s.DrainTimeout)
	case s.Flags&Disabled != 0:
		return bad("Flags hold Disabled: no loop would accept")
	case s.UpgradeTimeout < 0:
		return bad("UpgradeTimeout %v: want 0 (%v) or more", s.UpgradeTimeout, defaultUpgradeTimeout)
	}
	switch s.Network {
	case "", "tcp", "tcp4", "tcp6", "unix":
	default:
		return bad("Network %q: want tcp, tcp4, tcp6 or unix", s.Network)
	}
	if err := checkFlags(s.Flags); err != nil {
		return bad("Flags: %v", err)
	}
	return nil
}

// listen creates the loops and their listeners. With inherited sockets,
// loop i serves socket i and loops past the last take turns on duplicates
// of them (sharing their backlog); a unix socket is bound once and shared
// the same way; TCP loops each bind their own socket on one port.
func (s *Server) listen(inherited []int) error {
	network := s.Network
	if network == "" {
		network = "tcp"
	}
	loops := max(s.Loops, 1, len(inherited))
	if len(inherited) == 0 && s.Addr == "" {
		return errors.New("evlistener: Server: Addr is empty and no socket was inherited")
	}
	backlog := s.Backlog
	if backlog == 0 {
		backlog = defaultServerBacklog
	}
	flags := CloseOnFree | Reuseable | CloseOnExec | s.Flags
	if loops > 1 && network != "unix" {
		flags |= ReuseablePort
	}
	maxConns := s.MaxConns
	if maxConns > 0 {
		maxConns = max(maxConns, loops)
	}
	addr := s.Addr
	for i := range loops {
		base, err := NewBaseWithFlags(s.BaseFlags)
		if err != nil {
			return err
		}
		lp := &serverLoop{srv: s, base: base, limit: math.MaxInt, done: make(chan struct{})}
		// Only Shutdown and Close end a loop, not a lack of events
		// (a listener paused at the limit, its connections served
		// elsewhere): with libevent's flag for it, not a timer, which
		// would make every wait of the loop arm a kernel timer.
		base.keepRunning = true
		lp.endFn = lp.ended
		// One func per loop: nothing allocated per connection.
		base.connEnded = lp.endFn
		if s.Events != nil || s.BufferEvents != nil {
			base.poolOpened, base.poolEnded = lp.opened, lp.endFn
		}
		if maxConns > 0 {
			lp.limit = maxConns / loops
			if i < maxConns%loops {
				lp.limit++
			}
		}
		s.loops = append(s.loops, lp)
		if s.OnLoopStart != nil {
			s.OnLoopStart(base)
		}
		switch {
		case len(inherited) > 0:
			lp.ln, err = adoptShared(base, lp.accept, flags, inherited, i)
		case i > 0 && network == "unix":
			lp.ln, err = adoptShared(base, lp.accept, flags, []int{s.loops[0].ln.FD()}, 1)
		default:
			lp.ln, err = NewBind(base, lp.accept, flags, backlog, network, addr)
		}
		if err == nil {
			err = lp.acceptPooled()
		}
		if err != nil {
			return err
		}
		lp.ln.SetErrorCallback(lp.acceptError)
		if i == 0 && network != "unix" && len(inherited) == 0 {
			// Port 0 picked one: the other loops share it.
			if ta, ok := lp.ln.Addr().(*net.TCPAddr); ok {
				if host, _, err := net.SplitHostPort(addr); err == nil {
					addr = net.JoinHostPort(host, strconv.Itoa(ta.Port))
				}
			}
		}
		if i < len(inherited) || len(inherited) == 0 && (i == 0 || network != "unix") {
			s.sockets = append(s.sockets, lp.ln)
			s.addAddr(lp.ln.Addr())
		}
	}
	return nil
}

// adoptShared serves inherited socket i (or, past the last, a duplicate of
// one) on base. Closing the listener closes the descriptor it was given.
func adoptShared(base *Base, cb AcceptFunc, flags Flag, fds []int, i int) (*Listener, error) {
	fd := fds[i%len(fds)]
	if i >= len(fds) {
		var err error
		if fd, err = sysFcntl(fd, syscall.F_DUPFD_CLOEXEC, 3); err != nil {
			return nil, os.NewSyscallError("fcntl", err)
		}
	}
	ln, err := New(base, cb, (flags|CloseOnFree)&^(Reuseable|ReuseablePort), 0, fd)
	if err != nil && i >= len(fds) {
		syscall.Close(fd)
	}
	return ln, err
}

func (s *Server) addAddr(a net.Addr) {
	for _, b := range s.addrs {
		if a.String() == b.String() {
			return
		}
	}
	s.addrs = append(s.addrs, a)
}

// Addrs returns the addresses the Server listens on, each once, after
// Listen (or once Serve has called it); nil before.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Addr(nil), s.addrs...)
}

// inheritedSockets returns the listening sockets this process was given,
// by an upgrading parent or by systemd, with the readiness pipe of an
// upgrade (nil otherwise). None: bind as usual.
func (s *Server) inheritedSockets() (fds []int, ready *os.File, err error) {
	if v, ok := os.LookupEnv(upgradeEnv); ok {
		os.Unsetenv(upgradeEnv)
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1<<16 {
			return nil, nil, fmt.Errorf("evlistener: Server: %s=%q: want the number of sockets handed over", upgradeEnv, v)
		}
		for i := range n + 1 {
			if _, err := sysFcntl(3+i, syscall.F_GETFD, 0); err != nil {
				return nil, nil, fmt.Errorf("evlistener: Server: %s=%d, but fd %d is not open: %w", upgradeEnv, n, 3+i, err)
			}
			// Not for this process's own children, which get theirs
			// through ExtraFiles.
			syscall.CloseOnExec(3 + i)
		}
		for i := range n {
			fds = append(fds, 3+i)
		}
		return fds, os.NewFile(uintptr(3+n), "upgrade-ready"), nil
	}
	lfds, err := ListenFDs()
	if errors.Is(err, ErrListenPID) {
		// The variables are another process's: not socket activation.
		s.logf("not socket-activated: %v", err)
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	for _, f := range lfds {
		fds = append(fds, f.FD)
	}
	return fds, nil, nil
}

func (s *Server) logf(format string, a ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, a...)
	} else {
		log.Printf(format, a...)
	}
}

// Serve listens (see Listen) if that has not been done, runs each loop on
// its own locked OS thread, and returns when the Server has stopped: with
// ErrServerClosed after Shutdown, Close or an upgrade's drain; with the
// error after an accept error that is not a resource shortage, a callback
// panic (a *CallbackPanic), or a loop that stopped on its own, having
// closed every connection. Serve after Shutdown or Close returns
// ErrServerClosed at once.
func (s *Server) Serve() error {
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	if state == stateNew {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	switch s.state {
	case stateClosed:
		s.mu.Unlock()
		return ErrServerClosed
	case stateServing:
		s.mu.Unlock()
		return errors.New("evlistener: Server: Serve called twice")
	}
	s.state = stateServing
	s.started = true
	loops := s.loops
	ready := s.ready
	s.ready = nil
	s.mu.Unlock()

	for _, lp := range loops {
		go lp.run()
	}
	if ready != nil {
		// An error means the parent gave up on this process already; it
		// has said so, and this one serves on.
		ready.Write([]byte{1})
		ready.Close()
	}
	allDone := make(chan struct{})
	go func() {
		for _, lp := range loops {
			<-lp.done
		}
		close(allDone)
	}()
	var err error
	select {
	case err = <-s.fatal:
	case <-allDone:
		select {
		case err = <-s.fatal:
		default:
		}
	}
	s.Close()
	if err != nil {
		return err
	}
	return ErrServerClosed
}

// run runs the loop until Shutdown, Close or a failure.
func (lp *serverLoop) run() {
	defer close(lp.done)
	// Dispatch keeps the loop on its thread as it runs: libevent's notion
	// of the loop thread stays put.
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				cp, ok := p.(*CallbackPanic)
				if !ok {
					panic(p)
				}
				err = cp
			}
		}()
		return lp.base.Dispatch()
	}()
	if _, panicked := err.(*CallbackPanic); !panicked && (lp.stopping || lp.closing.Load()) {
		return
	}
	if err == nil {
		err = errors.New("evlistener: Server: event loop stopped with nothing to do")
	}
	lp.srv.fail(err)
}

func (s *Server) fail(err error) {
	select {
	case s.fatal <- err:
	default:
	}
}

// acceptPooled makes the loop's listener accept into events or buffer
// events made in C, with Events or BufferEvents. The base counts each
// connection (poolOpened, set with the loop), before OnAccept.
func (lp *serverLoop) acceptPooled() error {
	s := lp.srv
	switch {
	case s.Events != nil:
		return lp.ln.AcceptEvents(*s.Events)
	case s.BufferEvents != nil:
		return lp.ln.AcceptBufferEvents(*s.BufferEvents)
	}
	return nil
}

// opened counts a new connection; at the loop's limit it stops accepting.
func (lp *serverLoop) opened(l *Listener) {
	lp.accepted.Add(1)
	if !lp.stopping && lp.open() >= lp.limit && !lp.full {
		// Inside the accept callback this stops libevent's accept loop
		// at once; the next clients wait in the backlog.
		lp.full = true
		lp.atLimit.Add(1)
		l.Disable()
	}
}

// accept runs on the loop for each new connection, with a Handler.
func (lp *serverLoop) accept(l *Listener, fd int, addr net.Addr) {
	lp.opened(l)
	served := false
	defer func() {
		if !served {
			// The Handler panicked: the listener closes fd, and Serve
			// stops with the panic.
			lp.closedN.Add(1)
		}
	}()
	lp.srv.Handler(Conn{FD: fd, Addr: addr, Base: lp.base, loop: lp})
	served = true
}

// ended runs on the loop, or while the Server closes the base, when a
// connection has ended.
func (lp *serverLoop) ended() {
	lp.closedN.Add(1)
	if lp.closing.Load() {
		// Base.Close is freeing what is open: nothing may call into
		// the loop now.
		return
	}
	switch {
	case lp.stopping:
		lp.endIfIdle()
	case lp.full && lp.open() < lp.limit:
		lp.full = false
		lp.ln.Enable()
	}
}

// acceptError runs on the loop when accept failed. The listener has
// paused and retries on its own; only errors that a pause cannot cure stop
// the server.
func (lp *serverLoop) acceptError(_ *Listener, err error) {
	lp.acceptErrors.Add(1)
	for _, shortage := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, shortage) {
			lp.srv.logf("%v; accepting again shortly", err)
			return
		}
	}
	lp.srv.fail(err)
}

// Stats returns the Server's counts.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	loops := s.loops
	s.mu.Unlock()
	var st ServerStats
	for _, lp := range loops {
		// Closed first: a connection counted closed was accepted before.
		closed := lp.closedN.Load()
		st.Accepted += lp.accepted.Load()
		st.Closed += closed
		st.AtLimit += lp.atLimit.Load()
		st.AcceptErrors += lp.acceptErrors.Load()
	}
	if st.Accepted > st.Closed { // Done called twice would make it negative
		st.Open = st.Accepted - st.Closed
	}
	return st
}

// Shutdown stops accepting at once and lets the open connections end,
// until ctx is done; then it closes those left, and returns ctx.Err().
// Nothing queued is refused: the connections already waiting in the
// backlog are accepted and handed to the Handler first (after an Upgrade
// the new process accepts them instead); only a client whose handshake
// the kernel completes in the instant between the last accept and the
// close of the socket is reset. OnShutdown runs on each loop once
// it has stopped accepting. Shutdown returns nil once every connection
// has ended and the loops are closed; Serve then returns ErrServerClosed.
// A pending Upgrade is cancelled: its new process is stopped. Shutdown may
// be called from any goroutine but the loops', also more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.notOnLoop("Shutdown"); err != nil {
		return err
	}
	s.mu.Lock()
	if s.state == stateNew || s.state == stateClosed {
		s.state = stateClosed
		s.mu.Unlock()
		return nil
	}
	first := !s.stopping
	s.stopping = true
	up, started := s.upgrade, s.started
	if !started {
		s.state = stateClosed
	}
	s.mu.Unlock()
	if up != nil {
		up.cancel()
	}
	if !started {
		return s.Close()
	}
	if first {
		s.stopAccepting(!s.handedOver())
	}
	allDone := make(chan struct{})
	go func() {
		for _, lp := range s.loops {
			<-lp.done
		}
		close(allDone)
	}()
	select {
	case <-allDone:
		return s.Close()
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

func (s *Server) handedOver() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handedOff
}

// stopAccepting closes every loop's listener, after serving what waits
// in its backlog when serveQueued (no process took the sockets over, and
// closing the last descriptor of a listening socket resets what is
// queued); then each loop runs OnShutdown and ends with its last
// connection.
func (s *Server) stopAccepting(serveQueued bool) {
	var wg sync.WaitGroup
	for _, lp := range s.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lp.base.Do(func() { lp.stopAccepting(serveQueued) })
		}()
	}
	wg.Wait()
}

func (lp *serverLoop) stopAccepting(serveQueued bool) {
	lp.stopping = true
	if serveQueued {
		lp.acceptQueued()
	}
	lp.ln.Close()
	if f := lp.srv.OnShutdown; f != nil {
		f(lp.base)
	}
	lp.endIfIdle()
}

// endIfIdle ends a stopping loop that has no connection left. LoopExit,
// not LoopBreak: run on a loop whose Dispatch has not started yet, a
// break would be lost, and the keep-alive timer would hold it forever.
func (lp *serverLoop) endIfIdle() {
	if lp.open() <= 0 {
		lp.base.LoopExit(0)
	}
}

// acceptQueued accepts what waits in the backlog now, and hands it to the
// Handler, ignoring the limit: served late beats reset.
func (lp *serverLoop) acceptQueued() {
	fd := lp.ln.FD()
	for {
		var rsa syscall.RawSockaddrAny
		n := uint32(unsafe.Sizeof(rsa))
		nfd, _, errno := syscall.Syscall6(syscall.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)),
			uintptr(unsafe.Pointer(&n)), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
		switch errno {
		case 0:
		case syscall.EINTR, syscall.ECONNABORTED:
			continue
		default:
			return // EAGAIN: the backlog is empty; anything else: give up
		}
		if lp.ln.conns != nil {
			lp.ln.acceptConn(int(nfd))
		} else {
			lp.accept(lp.ln, int(nfd), sockaddrToAddr(unsafe.Pointer(&rsa), int(n)))
		}
	}
}

// notOnLoop refuses a call that waits for the loops from one of them,
// where it would wait for itself.
func (s *Server) notOnLoop(method string) error {
	s.mu.Lock()
	loops := s.loops
	s.mu.Unlock()
	for _, lp := range loops {
		if lp.base.onLoop() {
			return fmt.Errorf("evlistener: Server.%s called on one of its loops; it waits for them: call it from another goroutine", method)
		}
	}
	return nil
}

// Close closes every listener and connection at once and stops the loops;
// Serve then returns ErrServerClosed. A pending Upgrade is cancelled. It
// may be called from any goroutine but the loops', also more than once.
func (s *Server) Close() error {
	if err := s.notOnLoop("Close"); err != nil {
		return err
	}
	s.mu.Lock()
	s.state = stateClosed
	up, loops, started, ready := s.upgrade, s.loops, s.started, s.ready
	s.ready = nil
	s.mu.Unlock()
	if up != nil {
		up.cancel()
	}
	if ready != nil {
		ready.Close() // Listen without Serve: the parent hears EOF
	}
	closeLoops(loops, started)
	return nil
}

// closeLoops closes each loop's base, in parallel (each Close waits for
// its loop to finish the callback it is in), and waits for the loops.
func closeLoops(loops []*serverLoop, started bool) {
	var wg sync.WaitGroup
	for _, lp := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lp.closing.Store(true)
			lp.base.Close()
			if started {
				<-lp.done
			}
		}()
	}
	wg.Wait()
}

// Upgrade may be called once the Server listens (Listen or Serve): a
// signal that comes before Serve has started the loops is not lost.
//
// Upgrade starts the executable this process was started from (os.Args[0],
// resolved against the directory it started in, so that a replaced file is
// picked up), with the same arguments, hands it every listening socket,
// and waits until the new process is ready (its Server serves). Then this
// Server stops accepting (what waits in the backlog goes to the new
// process: nothing is refused or reset) and drains as Shutdown does, for
// at most DrainTimeout; Serve returns ErrServerClosed once it has drained.
//
// On an error (the new process exited, was not ready within
// UpgradeTimeout, or the Server was shut down meanwhile) the new process
// is gone and this Server serves on, unless it is shutting down. One
// upgrade runs at a time. Upgrade may be called from any goroutine but the
// loops'.
func (s *Server) Upgrade() error {
	if err := s.notOnLoop("Upgrade"); err != nil {
		return err
	}
	s.mu.Lock()
	var err error
	switch {
	case s.state == stateNew:
		err = errors.New("evlistener: Server: Upgrade before Listen")
	case s.state == stateClosed || s.stopping:
		err = ErrServerClosed
		if s.handedOff {
			err = errors.New("evlistener: Server: the sockets are handed over already")
		}
	case s.upgrade != nil:
		err = fmt.Errorf("evlistener: Server: an upgrade to pid %d is under way", s.upgrade.cmd.Process.Pid)
	case s.selfErr != nil:
		err = fmt.Errorf("evlistener: Server: cannot find the executable: %w", s.selfErr)
	}
	if err != nil {
		s.mu.Unlock()
		return err
	}
	timeout := s.UpgradeTimeout
	if timeout == 0 {
		timeout = defaultUpgradeTimeout
	}
	u, err := startUpgrade(s.self, s.sockets, timeout)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("evlistener: Server: upgrade: %w", err)
	}
	s.upgrade = u
	s.mu.Unlock()

	err = <-u.done
	s.mu.Lock()
	s.upgrade = nil
	if err == nil && s.stopping {
		// Shut down as it became ready: cancel has stopped it.
		err = errors.New("shut down meanwhile")
	}
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("evlistener: Server: upgrade: %w", err)
	}
	s.handedOff = true
	s.successor = u.cmd.Process.Pid
	s.stopping = true
	s.mu.Unlock()
	s.stopAccepting(false)
	if d := s.DrainTimeout; d > 0 {
		go func() {
			t := time.NewTimer(d)
			defer t.Stop()
			done := make(chan struct{})
			go func() {
				for _, lp := range s.loops {
					<-lp.done
				}
				close(done)
			}()
			select {
			case <-t.C:
				s.Close()
			case <-done:
			}
		}()
	}
	return nil
}

// Successor returns the pid of the process a successful Upgrade handed
// the sockets to, or 0.
func (s *Server) Successor() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.successor
}

// Upgrading returns the pid of the new process that an Upgrade under way
// waits for, or 0: for a program's log when a second signal comes.
func (s *Server) Upgrading() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.upgrade == nil {
		return 0
	}
	return s.upgrade.cmd.Process.Pid
}

// pendingUpgrade is a new process being started.
type pendingUpgrade struct {
	cmd      *exec.Cmd
	done     chan error // nil once it is ready
	canceled chan struct{}
	finished chan struct{} // the watch has ended: a stopped process is reaped
	once     sync.Once
}

// startUpgrade starts path with this process's arguments, handing it the
// listeners' sockets, and reports on u.done whether it became ready
// within timeout. On a failure the new process is gone.
func startUpgrade(path string, sockets []*Listener, timeout time.Duration) (*pendingUpgrade, error) {
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, ln := range sockets {
		f, err := ln.File()
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	files = append(files, w)
	cmd := exec.Command(path, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", upgradeEnv, len(sockets)))
	if err := cmd.Start(); err != nil {
		r.Close()
		return nil, err
	}
	u := &pendingUpgrade{cmd: cmd, done: make(chan error, 1), canceled: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(u.finished)
		defer r.Close()
		// The new process, and so the pipe's only writer, has the write
		// end now (closed on return here): EOF means it exited, or
		// closed it, without saying it was ready.
		r.SetReadDeadline(time.Now().Add(timeout))
		n, err := r.Read(make([]byte, 1))
		select {
		case <-u.canceled:
			cmd.Wait()
			u.done <- fmt.Errorf("pid %d stopped: the server is shutting down", cmd.Process.Pid)
			return
		default:
		}
		switch {
		case n == 1:
			// Not waited for: it normally outlives this process, and
			// one that exits first is left for whoever inherits it
			// (init, a service manager) to reap and report.
			u.done <- nil
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			cmd.Process.Kill()
			cmd.Wait()
			err = fmt.Errorf("pid %d not ready within %v", cmd.Process.Pid, timeout)
		default:
			if werr := cmd.Wait(); werr != nil {
				err = fmt.Errorf("pid %d: %v", cmd.Process.Pid, werr)
			} else {
				err = fmt.Errorf("pid %d exited without saying it was ready", cmd.Process.Pid)
			}
		}
		u.done <- err
	}()
	return u, nil
}

// cancel stops a new process that is not ready yet, and waits until it
// is gone: the Server is shutting down. Upgrade reports it.
func (u *pendingUpgrade) cancel() {
	u.once.Do(func() {
		close(u.canceled)
		u.cmd.Process.Kill()
	})
	<-u.finished
}

// startPath is the path this process was started from, made absolute
// against the directory it started in: os.Args[0], looked up in PATH when
// it has no slash. Symbolic links are not resolved and the file is not
// opened, so that an upgrade runs what is at that path now (a deploy that
// replaced the file or moved a link), not os.Executable's file.
func startPath() (string, error) {
	p := os.Args[0]
	if !strings.Contains(p, "/") {
		var err error
		if p, err = exec.LookPath(p); err != nil && !errors.Is(err, exec.ErrDot) {
			return "", err
		}
	}
	return filepath.Abs(p)
}
