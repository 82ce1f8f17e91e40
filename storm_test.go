package evlistener

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
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

// listenerStorm is the shared state of one storm: a few listener slots whose
// listeners get closed and replaced while everything else goes on.
type listenerStorm struct {
	t        *testing.T
	b        *Base
	slots    [stormListeners]atomic.Pointer[Listener]
	accepted atomic.Int64
	created  atomic.Int64
	badFD    atomic.Int64
	ops      [stormOps]atomic.Int64
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
		s.t.Errorf("NewBind of a replacement listener: %v", err)
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

func TestListenerControlStorm(t *testing.T) {
	before := takeResources(t)
	b, err := NewBase()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := &listenerStorm{t: t, b: b}
	for i := range s.slots {
		l, err := NewBind(b, s.accept(i, 0), CloseOnFree|Reuseable, -1, "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.slots[i].Store(l)
	}
	// The exit timer keeps Dispatch running while every listener
	// happens to be disabled; Base.Close ends it.
	if err := b.LoopExit(time.Hour); err != nil {
		t.Fatal(err)
	}
	dispatched := make(chan error, 1)
	go func() { dispatched <- b.Dispatch() }()

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
	var dials atomic.Int64
	for i := range stormClients {
		workers.Add(1)
		go func() {
			defer workers.Done()
			dials.Add(int64(s.dialLoop(rand.New(rand.NewPCG(seed, uint64(stormWorkers+i))), stop)))
		}()
	}
	stormed := make(chan struct{})
	go func() { workers.Wait(); close(stormed) }()

	select {
	case err := <-dispatched:
		t.Fatalf("Dispatch returned during the storm: %v", err)
	case <-stormed:
		t.Fatal("storm goroutines returned before they were stopped")
	case <-time.After(stormDuration):
	}
	close(stop)
	select {
	case <-stormed:
	case <-time.After(stormDeadline):
		t.Fatalf("storm goroutines still running %v after the stop: deadlock?\n%s", stormDeadline, dumpGoroutines())
	}

	var total int64
	var counts string
	for op := range s.ops {
		n := s.ops[op].Load()
		total += n
		counts += fmt.Sprintf(" %s %d,", stormOpNames[op], n)
	}
	t.Logf("%v storm: %d control calls (%s), %d listeners replaced, %d dials completed, %d accepted",
		stormDuration, total, counts[1:len(counts)-1], s.created.Load(), dials.Load(), s.accepted.Load())
	if s.accepted.Load() == 0 {
		t.Error("no connection was accepted during the storm")
	}
	if n := s.badFD.Load(); n != 0 {
		t.Errorf("%d accepted descriptors could not be closed", n)
	}

	// Whatever state the storm left, Enable and a callback bring every
	// listener back.
	for i := range s.slots {
		l := s.slots[i].Load()
		serveOne(t, l)
	}
	for i := range s.slots {
		if err := s.slots[i].Load().Close(); err != nil {
			t.Errorf("slot %d: Close: %v", i, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-dispatched:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Dispatch did not return after Close\n%s", dumpGoroutines())
	}
	checkResources(t, before)
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
