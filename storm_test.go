package evlistener

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Control storm: goroutines call every control method at random on
// listeners that clients keep connecting to, while Dispatch runs on its own
// goroutine. Each call must return nil or ErrClosed, nothing may deadlock or
// crash, no descriptor or handle may be left behind, and afterwards every
// listener must serve a fresh client.

const (
	stormWorkers   = 8
	stormClients   = 2
	stormListeners = 4
	stormDuration  = 3 * time.Second
	stormDeadline  = 20 * time.Second // for stopping, after stormDuration
)

// stormLength is stormDuration, or a second with -short, which the -asan
// run uses (make asan): a second is enough for ASan to see every path.
func stormLength() time.Duration {
	if testing.Short() {
		return time.Second
	}
	return stormDuration
}

// listenerStorm is the shared state of one storm: a few listener slots whose
// listeners get closed and replaced while everything else goes on.
type listenerStorm struct {
	t *testing.T
	b *Base
	// baseClosing: Base.Close may come at any time, so NewBind may fail
	// with ErrClosed.
	baseClosing bool
	slots       [stormListeners]atomic.Pointer[Listener]
	accepted    atomic.Int64
	created     atomic.Int64
	badFD       atomic.Int64
	ops         [stormOps]atomic.Int64
}

// The operations a storm worker picks from.
const (
	opEnable = iota
	opDisable
	opSetCallback
	opSetNilCallback
	opSetErrorCallback
	opSetNilErrorCallback
	opClose
	stormOps
)

var stormOpNames = [stormOps]string{"Enable", "Disable", "SetCallback", "SetCallback(nil)",
	"SetErrorCallback", "SetErrorCallback(nil)", "Close and NewBind"}

// accept returns one of the storm's accept callbacks for slot: all close the
// accepted socket; some also disable their listener, or close it and put a
// new one in its place, from inside the callback.
func (s *listenerStorm) accept(slot int, kind int) AcceptFunc {
	return func(l *Listener, fd int, addr net.Addr) {
		if err := syscall.Close(fd); err != nil {
			s.badFD.Add(1)
		}
		s.accepted.Add(1)
		switch kind {
		case 1:
			if err := l.Disable(); err != nil {
				s.t.Errorf("Disable inside the accept callback: %v", err)
			}
		case 2:
			if err := l.Close(); err != nil {
				s.t.Errorf("Close inside the accept callback: %v", err)
				return
			}
			s.replace(slot, l)
		}
	}
}

func (s *listenerStorm) randomAccept(slot int, r *rand.Rand) AcceptFunc {
	// Closing from inside the callback is rarer than the rest, so that
	// listeners live long enough to be stormed.
	kind := 0
	switch n := r.IntN(16); {
	case n < 3:
		kind = 1
	case n < 4:
		kind = 2
	}
	return s.accept(slot, kind)
}

// replace puts a new listener in slot after old was closed. Only the caller
// whose Close of old returned nil calls it, so a slot never loses its
// listener.
func (s *listenerStorm) replace(slot int, old *Listener) {
	l, err := NewBind(s.b, s.accept(slot, 0), CloseOnFree|Reuseable, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		if !s.baseClosing || !errors.Is(err, ErrClosed) {
			s.t.Errorf("NewBind of a replacement listener: %v", err)
		}
		return
	}
	s.created.Add(1)
	if !s.slots[slot].CompareAndSwap(old, l) {
		s.t.Errorf("slot %d changed under its closer", slot)
	}
}

// work calls control methods at random until stop is closed.
func (s *listenerStorm) work(r *rand.Rand, stop <-chan struct{}) {
	onError := func(l *Listener, err error) {}
	for {
		select {
		case <-stop:
			return
		default:
		}
		slot := r.IntN(stormListeners)
		l := s.slots[slot].Load()
		op := r.IntN(stormOps)
		var err error
		switch op {
		case opEnable:
			err = l.Enable()
		case opDisable:
			err = l.Disable()
		case opSetCallback:
			l.SetCallback(s.randomAccept(slot, r))
		case opSetNilCallback:
			l.SetCallback(nil)
		case opSetErrorCallback:
			l.SetErrorCallback(onError)
		case opSetNilErrorCallback:
			l.SetErrorCallback(nil)
		case opClose:
			if err = l.Close(); err == nil {
				s.replace(slot, l)
			}
		}
		if err != nil && !errors.Is(err, ErrClosed) {
			s.t.Errorf("%s: %v", stormOpNames[op], err)
		}
		s.ops[op].Add(1)
	}
}

// dialLoop connects to the slots' listeners until stop is closed and
// returns how many connections the kernel completed. Listeners come and go,
// so refused and timed-out dials are expected.
func (s *listenerStorm) dialLoop(r *rand.Rand, stop <-chan struct{}) int {
	d := net.Dialer{Timeout: 100 * time.Millisecond}
	n := 0
	for {
		select {
		case <-stop:
			return n
		default:
		}
		addr := s.slots[r.IntN(stormListeners)].Load().Addr()
		if addr == nil {
			continue
		}
		c, err := d.Dial("tcp", addr.String())
		if err != nil {
			continue
		}
		n++
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
}

// runningStorm is a listener storm under way.
type runningStorm struct {
	*listenerStorm
	loop    *running
	stop    chan struct{}
	stormed chan struct{} // closed when every storm goroutine returned
	dials   atomic.Int64
}

// startListenerStorm opens the listeners, starts Dispatch, the workers and
// the clients. With baseClosing the test closes the base mid-storm, so
// NewBind may fail with ErrClosed.
func startListenerStorm(t *testing.T, b *Base, baseClosing bool) *runningStorm {
	s := &runningStorm{listenerStorm: &listenerStorm{t: t, b: b, baseClosing: baseClosing},
		stop: make(chan struct{}), stormed: make(chan struct{})}
	for i := range s.slots {
		l, err := NewBind(b, s.accept(i, 0), CloseOnFree|Reuseable, -1, "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.slots[i].Store(l)
	}
	// Kept running while every listener happens to be disabled;
	// Base.Close ends it.
	s.loop = startDispatch(t, b, atCleanup)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var workers sync.WaitGroup
	for i := range stormWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			s.work(rand.New(rand.NewPCG(seed, uint64(i))), s.stop)
		}()
	}
	for i := range stormClients {
		workers.Add(1)
		go func() {
			defer workers.Done()
			s.dials.Add(int64(s.dialLoop(rand.New(rand.NewPCG(seed, uint64(stormWorkers+i))), s.stop)))
		}()
	}
	go func() { workers.Wait(); close(s.stormed) }()
	return s
}

// endStorm closes stop and waits for stormed, closed once every storm
// goroutine has returned; goroutines that do not return are a deadlock,
// reported with every stack.
func endStorm(t *testing.T, stop, stormed chan struct{}) {
	t.Helper()
	close(stop)
	select {
	case <-stormed:
	case <-time.After(stormDeadline):
		t.Fatalf("storm goroutines still running %v after the stop: deadlock?\n%s", stormDeadline, dumpGoroutines())
	}
}

// opCounts totals a storm's per-operation counters and lists them as
// "Name n, Name n".
func opCounts(ops []atomic.Int64, names []string) (total int64, list string) {
	parts := make([]string, len(ops))
	for op := range ops {
		n := ops[op].Load()
		total += n
		parts[op] = fmt.Sprintf("%s %d", names[op], n)
	}
	return total, strings.Join(parts, ", ")
}

// stopAfter lets the storm run for d, stops it and waits for its
// goroutines, failing with every stack if they do not return.
func (s *runningStorm) stopAfter(d time.Duration) {
	t := s.t
	select {
	case <-s.stormed:
		t.Fatal("storm goroutines returned before they were stopped")
	case <-time.After(d):
	}
	endStorm(t, s.stop, s.stormed)
	total, counts := opCounts(s.ops[:], stormOpNames[:])
	t.Logf("%v storm: %d control calls (%s), %d listeners replaced, %d dials completed, %d accepted",
		d, total, counts, s.created.Load(), s.dials.Load(), s.accepted.Load())
	if n := s.badFD.Load(); n != 0 {
		t.Errorf("%d accepted descriptors could not be closed", n)
	}
}

// waitDispatch waits for Dispatch to return after Base.Close.
func (s *runningStorm) waitDispatch() {
	if err := s.loop.wait(s.t); err != nil {
		s.t.Fatal(err)
	}
}

func TestListenerControlStorm(t *testing.T) { forEachBaseKind(t, listenerControlStorm) }

func listenerControlStorm(t *testing.T, kind baseKind) {
	checkNoLeaks(t)
	b, err := kind.open()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := startListenerStorm(t, b, false)
	if s.loop.finished() {
		t.Fatalf("Dispatch returned during the storm: %v", s.loop.err)
	}
	s.stopAfter(stormLength())
	if s.accepted.Load() == 0 {
		t.Error("no connection was accepted during the storm")
	}

	// Whatever state the storm left, Enable and a callback bring every
	// listener back.
	for i := range s.slots {
		serveOne(t, s.slots[i].Load())
	}
	for i := range s.slots {
		if err := s.slots[i].Load().Close(); err != nil {
			t.Errorf("slot %d: Close: %v", i, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	s.waitDispatch()
}

// Base.Close in the middle of a storm: it ends Dispatch and closes what is
// open, calls racing with it return nil or ErrClosed, and afterwards every
// listener is closed with nothing left behind.
func TestBaseCloseDuringStorm(t *testing.T) { forEachBaseKind(t, baseCloseDuringStorm) }

func baseCloseDuringStorm(t *testing.T, kind baseKind) {
	checkNoLeaks(t)
	b, err := kind.open()
	if err != nil {
		t.Fatal(err)
	}
	s := startListenerStorm(t, b, true)
	closed := make(chan error, 1)
	time.AfterFunc(stormLength()/3, func() { closed <- b.Close() })
	if err := <-closed; err != nil {
		t.Fatalf("Base.Close during the storm: %v", err)
	}
	s.waitDispatch()
	// Calls keep coming after the close.
	s.stopAfter(stormLength() / 3)
	for i := range s.slots {
		l := s.slots[i].Load()
		if err := l.Enable(); !errors.Is(err, ErrClosed) {
			t.Errorf("slot %d: Enable after Base.Close: %v, want ErrClosed", i, err)
		}
		if fd := l.FD(); fd != -1 {
			t.Errorf("slot %d: FD() after Base.Close: %d, want -1", i, fd)
		}
	}
	if err := b.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Base.Close: %v, want ErrClosed", err)
	}
}

// serveOne sets a callback that answers "ok", enables l and checks that a
// fresh client gets the answer.
func serveOne(t *testing.T, l *Listener) {
	t.Helper()
	l.SetCallback(func(l *Listener, fd int, addr net.Addr) {
		// Storm clients still queued were reset already; the
		// fresh client's read is what counts.
		syscall.Write(fd, []byte("ok"))
		syscall.Close(fd)
	})
	if err := l.Enable(); err != nil {
		t.Fatalf("Enable after the storm: %v", err)
	}
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %v after the storm: %v", l.Addr(), err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ok" {
		t.Fatalf("listener %v after the storm: read %q, %v; want \"ok\"", l.Addr(), got, err)
	}
}

// The same for buffer events: goroutines call the control methods at random
// on buffer events that clients keep sending to and that echo, and close and
// replace them; afterwards each one still open echoes again once enabled.

const (
	stormBufferEvents = 8
	stormInFlight     = 64 << 10 // bytes a client has sent and not yet read back
)

// bevConn is a buffer event on the server side of a connection and the
// client side of it.
type bevConn struct {
	be       *BufferEvent
	peer     net.Conn
	replaced chan struct{} // closed once another connection took the slot
}

type bufferEventStorm struct {
	t       *testing.T
	b       *Base
	lnMu    sync.Mutex   // one dial and accept at a time pair up
	ln      net.Listener // makes the connections the buffer events wrap
	slots   [stormBufferEvents]atomic.Pointer[bevConn]
	created atomic.Int64
	echoed  atomic.Int64
	ops     [bevStormOps]atomic.Int64
}

const (
	bevOpEnable = iota
	bevOpDisable
	bevOpSetCallbacks
	bevOpSetWatermark
	bevOpWrite
	bevOpLen
	bevOpClose
	bevStormOps
)

var bevStormOpNames = [bevStormOps]string{"Enable", "Disable", "SetCallbacks", "SetWatermark",
	"Write", "Len", "Close and replace"}

func (s *bufferEventStorm) echo(be *BufferEvent) {
	n, err := be.EchoInput()
	if err != nil {
		s.t.Errorf("EchoInput in the read callback: %v", err)
	}
	s.echoed.Add(int64(n))
}

func (s *bufferEventStorm) onEvent(be *BufferEvent, what BEVEvent, err error) {
	// Only a replaced connection's client goes away, and its buffer
	// event is closed by then: nothing may report here.
	s.t.Errorf("event callback of a live buffer event: %v, %v", what, err)
}

// open makes a connection and wraps its server side in an echoing buffer
// event.
func (s *bufferEventStorm) open() (*bevConn, error) {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	peer, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	srv, err := s.ln.Accept()
	if err != nil {
		peer.Close()
		return nil, err
	}
	defer srv.Close()
	raw, err := srv.(*net.TCPConn).SyscallConn()
	if err != nil {
		peer.Close()
		return nil, err
	}
	fd := -1
	// A dup shares the file status flags, so it stays non-blocking.
	raw.Control(func(s uintptr) { fd, err = syscall.Dup(int(s)) })
	if err != nil {
		peer.Close()
		return nil, err
	}
	syscall.CloseOnExec(fd)
	be, err := NewBufferEvent(s.b, fd, BEVOptCloseOnFree)
	if err != nil {
		syscall.Close(fd)
		peer.Close()
		return nil, err
	}
	be.SetCallbacks(s.echo, nil, s.onEvent)
	if err := be.Enable(EvRead | EvWrite); err != nil {
		be.Close()
		peer.Close()
		return nil, err
	}
	s.created.Add(1)
	return &bevConn{be: be, peer: peer, replaced: make(chan struct{})}, nil
}

// replace puts a new connection in slot after old's buffer event was
// closed by the caller, and closes old's client.
func (s *bufferEventStorm) replace(slot int, old *bevConn) {
	c, err := s.open()
	if err != nil {
		s.t.Errorf("opening a replacement connection: %v", err)
		return
	}
	if !s.slots[slot].CompareAndSwap(old, c) {
		s.t.Errorf("slot %d changed under its closer", slot)
	}
	old.peer.Close()
	close(old.replaced)
}

func randomEvents(r *rand.Rand) Events {
	return [...]Events{EvRead, EvWrite, EvRead | EvWrite}[r.IntN(3)]
}

func (s *bufferEventStorm) work(r *rand.Rand, stop <-chan struct{}) {
	write := func(be *BufferEvent) {}
	for {
		select {
		case <-stop:
			return
		default:
		}
		slot := r.IntN(stormBufferEvents)
		c := s.slots[slot].Load()
		be := c.be
		op := r.IntN(bevStormOps)
		var err error
		switch op {
		case bevOpEnable:
			err = be.Enable(randomEvents(r))
		case bevOpDisable:
			err = be.Disable(randomEvents(r))
		case bevOpSetCallbacks:
			read, wr, event := DataFunc(nil), DataFunc(nil), BufferEventFunc(nil)
			if r.IntN(4) != 0 {
				read = s.echo
			}
			if r.IntN(2) == 0 {
				wr = write
			}
			if r.IntN(2) == 0 {
				event = s.onEvent
			}
			be.SetCallbacks(read, wr, event)
		case bevOpSetWatermark:
			low := r.IntN(256)
			err = be.SetWatermark(EvRead, low, [...]int{0, low, 4096}[r.IntN(3)])
		case bevOpWrite:
			_, err = be.Write([]byte("from the server"))
		case bevOpLen:
			be.Input().Len()
			be.Output().Len()
		case bevOpClose:
			if err = be.Close(); err == nil {
				s.replace(slot, c)
			}
		}
		if err != nil && !errors.Is(err, ErrClosed) {
			s.t.Errorf("%s: %v", bevStormOpNames[op], err)
		}
		s.ops[op].Add(1)
	}
}

// client keeps data flowing through slot's connection, whichever it is
// now, with at most stormInFlight bytes unanswered; it returns how many
// bytes it got back.
func (s *bufferEventStorm) client(slot int, stop <-chan struct{}) int64 {
	msg := make([]byte, 1024)
	buf := make([]byte, 16<<10)
	var total int64
	for {
		c := s.slots[slot].Load()
		inFlight := 0
		for {
			select {
			case <-stop:
				return total
			default:
			}
			if inFlight < stormInFlight {
				c.peer.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
				n, err := c.peer.Write(msg)
				inFlight += n
				if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
			}
			c.peer.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
			n, err := c.peer.Read(buf)
			inFlight -= n
			total += int64(n)
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
		}
		// The buffer event was closed; wait for its replacement.
		select {
		case <-stop:
			return total
		case <-c.replaced:
		}
	}
}

func TestBufferEventControlStorm(t *testing.T) { forEachBaseKind(t, bufferEventControlStorm) }

func bufferEventControlStorm(t *testing.T, kind baseKind) {
	checkNoLeaks(t)
	b, err := kind.open()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &bufferEventStorm{t: t, b: b, ln: ln}
	for i := range s.slots {
		c, err := s.open()
		if err != nil {
			t.Fatal(err)
		}
		s.slots[i].Store(c)
	}
	loop := startDispatch(t, b, atCleanup)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	stop := make(chan struct{})
	var workers sync.WaitGroup
	for i := range stormWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			s.work(rand.New(rand.NewPCG(seed, uint64(i))), stop)
		}()
	}
	var received atomic.Int64
	for i := range s.slots {
		workers.Add(1)
		go func() {
			defer workers.Done()
			received.Add(s.client(i, stop))
		}()
	}
	stormed := make(chan struct{})
	go func() { workers.Wait(); close(stormed) }()

	select {
	case <-loop.done:
		t.Fatalf("Dispatch returned during the storm: %v", loop.err)
	case <-stormed:
		t.Fatal("storm goroutines returned before they were stopped")
	case <-time.After(stormLength()):
	}
	endStorm(t, stop, stormed)
	total, counts := opCounts(s.ops[:], bevStormOpNames[:])
	t.Logf("%v storm: %d control calls (%s), %d buffer events opened, %d bytes echoed, %d received by clients",
		stormLength(), total, counts, s.created.Load(), s.echoed.Load(), received.Load())
	if received.Load() == 0 {
		t.Error("no data came back during the storm")
	}

	// Whatever state the storm left, callbacks, a watermark of 0 and
	// Enable make every buffer event echo again.
	for i := range s.slots {
		echoAgain(t, s, s.slots[i].Load())
	}
	for i := range s.slots {
		c := s.slots[i].Load()
		if err := c.be.Close(); err != nil {
			t.Errorf("slot %d: Close: %v", i, err)
		}
		c.peer.Close()
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := loop.wait(t); err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

// echoAgain resets c's buffer event to a plain echo and checks that a
// marker sent after everything else comes back.
func echoAgain(t *testing.T, s *bufferEventStorm, c *bevConn) {
	t.Helper()
	c.be.SetCallbacks(s.echo, nil, s.onEvent)
	if err := c.be.SetWatermark(EvRead, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.be.Enable(EvRead | EvWrite); err != nil {
		t.Fatal(err)
	}
	marker := []byte("-- the end of the storm --")
	c.peer.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.peer.Write(marker); err != nil {
		t.Fatal(err)
	}
	// What was sent before the marker comes back first, in order.
	var got []byte
	buf := make([]byte, 64<<10)
	for !bytes.HasSuffix(got, marker) {
		n, err := c.peer.Read(buf)
		if err != nil {
			t.Fatalf("buffer event did not echo after the storm: %v (%d bytes back)", err, len(got))
		}
		got = append(got, buf[:n]...)
		if len(got) > 2*len(marker) {
			got = got[len(got)-2*len(marker):]
		}
	}
}
