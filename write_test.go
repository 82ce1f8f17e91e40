package evlistener

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// Write and EchoInput send at once only when nothing waits in the output
// buffer and writing is enabled; otherwise they queue, and the peer gets
// every byte in order.
func TestWriteGoesOutAtOnce(t *testing.T) {
	var p []byte
	for _, tc := range []struct {
		name string
		send func(be *BufferEvent) (pending int, err error) // from the read callback
	}{
		{"Write", func(be *BufferEvent) (int, error) {
			p, _ = be.Input().AppendTo(p[:0])
			_, err := be.Write(p)
			return be.Output().Len(), err
		}},
		{"EchoInput", (*BufferEvent).EchoInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			b := newBase(t)
			be, peer := bevPair(t, b)
			pending := make(chan int, 3)
			var calls int
			be.SetCallbacks(func(be *BufferEvent) {
				calls++
				if calls == 2 {
					be.Enable(EvWrite) // the write event is only now added: "hello" still waits
				}
				n, err := tc.send(be)
				if err != nil {
					t.Error(err)
				}
				pending <- n
			}, nil, nil)
			be.Enable(EvRead)
			be.Disable(EvWrite) // enabled from the start, as in libevent
			startDispatch(t, b, atCleanup)
			expect := func(send, want string, wantPending int) {
				t.Helper()
				peer.Write([]byte(send))
				if n := recv(t, pending, "the read callback"); n != wantPending {
					t.Fatalf("after %q: %d bytes pending, want %d", send, n, wantPending)
				}
				if want == "" {
					return
				}
				got := make([]byte, len(want))
				peer.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(peer, got); err != nil || string(got) != want {
					t.Fatalf("peer read %q, %v; want %q", got, err, want)
				}
			}
			expect("hello", "", 5)            // writing disabled: queued
			expect("world", "helloworld", 10) // output waiting: appended behind it
			expect("!", "!", 0)               // nothing waiting: written at once
		})
	}
}

// A peer that does not read: Write sends what the socket takes, queues the
// rest in order behind it, and back-pressure is reported as for any queued
// output; once the peer reads, every byte arrives in order.
func TestWritePartial(t *testing.T) {
	checkNoLeaks(t)
	const high = 64 << 10
	b, be, peer, full := backPressured(t, high, nil)
	data := make([]byte, 8*high)
	rand.Read(data)
	queued := make(chan [2]int, 1)
	b.Do(func() { // on the loop, as a callback would write
		be.Write(data[:4*high])
		first := be.Output().Len()
		be.Write(data[4*high:])
		queued <- [2]int{first, be.Output().Len()}
	})
	q := recv(t, queued, "the writes")
	if q[0] <= 0 || q[0] >= 4*high {
		t.Fatalf("after the first write %d bytes queued; want some sent at once and the rest queued", q[0])
	}
	if q[1] != q[0]+4*high {
		t.Fatalf("after the second write %d bytes queued, want %d: all of it behind the first", q[1], q[0]+4*high)
	}
	if what := recv(t, full, "BEVEventOutputFull"); what != BEVEventWriting|BEVEventOutputFull {
		t.Fatalf("event %v, want Writing|OutputFull", what)
	}
	got := make([]byte, len(data))
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the peer got the bytes changed or out of order")
	}
}

// backPressured returns a buffer event, with its base running and its peer,
// whose socket buffers are so small (8 KiB each side) that what the kernel
// takes is far below high, its write high watermark; onWrite is its write
// callback, and full gets what its event callback is told.
func backPressured(t *testing.T, high int, onWrite func(*BufferEvent)) (*Base, *BufferEvent, *net.TCPConn, <-chan BEVEvent) {
	t.Helper()
	b := newBase(t)
	be, peer := bevPair(t, b)
	syscall.SetsockoptInt(be.FD(), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 8<<10)
	peer.SetReadBuffer(8 << 10)
	full := make(chan BEVEvent, 4)
	be.SetCallbacks(nil, onWrite, func(_ *BufferEvent, what BEVEvent, err error) { full <- what })
	if err := be.SetWatermark(EvWrite, 0, high); err != nil {
		t.Fatal(err)
	}
	be.Enable(EvWrite)
	startDispatch(t, b, atCleanup)
	return b, be, peer, full
}

// A program that waits on the write callback after a Write does not hang
// when the Write went out at once: the callback runs after the callback
// that wrote, never inside Write, once per drain.
func TestWriteCallbackAfterImmediateWrite(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, b *Base, be *BufferEvent, p []byte)
	}{
		{"from the read callback", nil},
		{"from another goroutine", func(t *testing.T, b *Base, be *BufferEvent, p []byte) {
			if _, err := be.Write(p); err != nil {
				t.Error(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			b := newBase(t)
			be, peer := bevPair(t, b)
			drained := make(chan int, 4)
			var writing bool
			read := func(be *BufferEvent) {
				p, _ := be.Input().AppendTo(nil)
				writing = true
				be.Write(p)
				be.Write(p) // a second Write in the same callback: still one callback
				writing = false
			}
			if tc.write != nil {
				read = nil
			}
			be.SetCallbacks(read, func(be *BufferEvent) {
				if writing {
					t.Error("the write callback ran inside Write")
				}
				drained <- be.Output().Len()
			}, nil)
			be.Enable(EvRead | EvWrite)
			startDispatch(t, b, atCleanup)
			// libevent's own: enabling writing adds the write event,
			// and its first run calls the write callback.
			recv(t, drained, "the write callback on enabling writing")
			for i := range 3 {
				msg := []byte{'a' + byte(i)}
				if tc.write != nil {
					tc.write(t, b, be, append(msg, msg...))
				} else {
					peer.Write(msg)
				}
				if n := recv(t, drained, "the write callback"); n != 0 {
					t.Fatalf("write callback with %d bytes queued, want 0", n)
				}
				got := make([]byte, 2)
				peer.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(peer, got); err != nil || got[0] != msg[0] || got[1] != msg[0] {
					t.Fatalf("peer read %q, %v", got, err)
				}
			}
			b.Do(func() {})
			if len(drained) != 0 {
				t.Fatalf("%d write callbacks more than drains", len(drained))
			}
		})
	}
}

// CloseAfterFlush after a Write that went out at once closes at once; after
// one that queued, it waits for the rest, which the peer gets whole.
func TestWriteThenCloseAfterFlush(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	fd, peer := tcpPair(t)
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 8<<10)
	be := newBEV(t, b, fd)
	be.Enable(EvWrite)
	startDispatch(t, b, atCleanup)
	data := make([]byte, 1<<20)
	rand.Read(data)
	if _, err := be.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := be.CloseAfterFlush(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(peer)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("peer read %d bytes, %v; want the %d written, then EOF", len(got), err, len(data))
	}
}

// Closing right after a Write that went out at once, with a write callback
// set: the scheduled callback never runs, and nothing is left behind (the
// ASan build checks for leaks), whether the buffer event or its base closes.
func TestCloseAfterImmediateWriteWithWriteCallback(t *testing.T) {
	for _, closeBase := range []bool{false, true} {
		t.Run(map[bool]string{false: "BufferEvent.Close", true: "Base.Close"}[closeBase], func(t *testing.T) {
			checkNoLeaks(t)
			b := newBase(t)
			be, peer := bevPair(t, b)
			enabled := make(chan struct{}, 1)
			be.SetCallbacks(nil, func(*BufferEvent) { enabled <- struct{}{} }, nil)
			be.Enable(EvRead | EvWrite)
			r := startDispatch(t, b, whenIdle)
			// libevent's own: enabling writing calls the write callback once.
			recv(t, enabled, "the write callback on enabling writing")
			wrote := make(chan int, 1)
			be.SetCallbacks(func(be *BufferEvent) {
				p, _ := be.Input().AppendTo(nil)
				be.Write(p)
				wrote <- be.Output().Len()
				if closeBase {
					b.Close()
				} else {
					be.Close()
				}
			}, func(*BufferEvent) { t.Error("write callback after Close") }, nil)
			peer.Write([]byte("x"))
			if n := recv(t, wrote, "the read callback"); n != 0 {
				t.Fatalf("%d bytes queued, want the write to have gone out at once", n)
			}
			got := make([]byte, 1)
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(peer, got); err != nil || got[0] != 'x' {
				t.Fatalf("peer read %q, %v", got, err)
			}
			if !closeBase {
				b.Do(func() {}) // a turn of the loop, where the callback would run
				b.Close()
			}
			if err := r.wait(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A Write on a buffer event still connecting is queued, not written: the
// bytes follow the connection, and a refused connect is reported as such,
// not swallowed by a write that read the socket's error.
func TestWriteWhileConnecting(t *testing.T) {
	t.Run("accepted", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		ln := listen(t)
		be, events := connectingBEV(t, b, BEVOptCloseOnFree)
		be.Enable(EvRead | EvWrite)
		startDispatch(t, b, atCleanup)
		queued := make(chan int, 1)
		b.Do(func() {
			if err := be.Connect("tcp", ln.Addr().String()); err != nil {
				t.Error(err)
			}
			be.Write([]byte("hello"))
			queued <- be.Output().Len()
		})
		if n := recv(t, queued, "the write"); n != 5 {
			t.Fatalf("%d bytes queued while connecting, want 5", n)
		}
		if what := recv(t, events, "the connect"); what != BEVEventConnected {
			t.Fatalf("event %v, want Connected", what)
		}
		readAccepted(t, ln, "hello")
	})
	t.Run("refused", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		addr := nowhere(t)
		be, _ := connectingBEV(t, b, BEVOptCloseOnFree)
		errs := make(chan error, 4)
		be.SetCallbacks(nil, nil, func(_ *BufferEvent, what BEVEvent, err error) {
			if what != BEVEventError {
				err = errors.New("event " + what.String())
			}
			errs <- err
		})
		be.Enable(EvRead | EvWrite)
		startDispatch(t, b, atCleanup)
		b.Do(func() {
			if err := be.Connect("tcp", addr); err != nil {
				errs <- err
				return
			}
			be.Write([]byte("hello"))
		})
		if err := recv(t, errs, "the connect's outcome"); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("%v, want ECONNREFUSED", err)
		}
	})
}

// A connection whose output passes the write high watermark reports
// BEVEventOutputFull once; its write callback tells when it drained; a later
// rise is reported again.
func TestOutputBackPressure(t *testing.T) {
	checkNoLeaks(t)
	const high = 256 << 10
	drained := make(chan struct{}, 1)
	b, be, peer, full := backPressured(t, high, func(*BufferEvent) {
		select { // each drain to the low watermark calls it
		case drained <- struct{}{}:
		default:
		}
	})
	// One Write takes the output past high at once, whatever the socket
	// takes meanwhile.
	chunk := make([]byte, 4*high)
	rand.Read(chunk)
	if _, err := be.Write(chunk); err != nil {
		t.Fatal(err)
	}
	if what := recv(t, full, "BEVEventOutputFull"); what != BEVEventWriting|BEVEventOutputFull {
		t.Fatalf("event %v, want Writing|OutputFull", what)
	}
	// The peer has not read: the output is still above high, and a
	// Write while it is reports nothing new.
	if n := be.Output().Len(); n <= high {
		t.Fatalf("output %d bytes with an unread peer, want above %d (socket buffers too big for the test)", n, high)
	}
	be.Write(chunk[:1])
	got := make([]byte, len(chunk)+1)
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	recv(t, drained, "the write callback once the output drained")
	b.Do(func() {}) // anything the loop queued meanwhile has run
	if len(full) != 0 {
		t.Fatalf("OutputFull reported %d more times while the output stayed above high", len(full))
	}
	// Above high again: reported again.
	be.Write(chunk)
	recv(t, full, "the second BEVEventOutputFull")
	be.Close()
}
