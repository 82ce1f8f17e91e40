package main

// Slow consumers, shutdown with lines queued, and a fatal accept error.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/evlistener/evlistener/internal/servertest"
)

// payload is what lines are cut from: printable, so that no LF or CR
// shows up inside a line.
var payload = func() []byte {
	b := make([]byte, 8<<10)
	for i := range b {
		b[i] = 'a' + byte(i*7%26)
	}
	return b
}()

// chatLine is line seq of sender from: its name, its number and a piece of
// payload whose length depends on seq (0 to max-1 bytes), with its LF.
func chatLine(dst []byte, from string, seq, max int) []byte {
	dst = fmt.Appendf(dst, "%s %d ", from, seq)
	dst = append(dst, payload[:seq*7919%max]...)
	return append(dst, '\n')
}

// window keeps senders at most a window of lines ahead of their slowest
// reader, as a chat client that waits for its peers would: the readers of
// a test check every line and are slower than the server, and a reader that
// falls behind by -max-pending is dropped, as it should be.
type window struct {
	mu     sync.Mutex
	cond   sync.Cond
	got    map[[2]string]int // lines from sender [1] that reader [0] has
	failed bool              // a reader gave up: senders stop waiting
}

func newWindow() *window {
	w := &window{got: make(map[[2]string]int)}
	w.cond.L = &w.mu
	return w
}

func (w *window) received(reader, from string) {
	w.mu.Lock()
	w.got[[2]string{reader, from}]++
	w.mu.Unlock()
	w.cond.Broadcast()
}

func (w *window) fail() {
	w.mu.Lock()
	w.failed = true
	w.mu.Unlock()
	w.cond.Broadcast()
}

// wait returns once every one of readers has line seq-1 of from, or a
// reader failed.
func (w *window) wait(from string, readers []string, seq int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range readers {
		for !w.failed && w.got[[2]string{r, from}] < seq {
			w.cond.Wait()
		}
	}
}

// sendLines writes lines 0 to n-1 of c, in writes of about 64 KiB, keeping
// at most ahead lines ahead of each of readers (none without w).
func sendLines(c *peer, n, max int, w *window, readers []string, ahead int) error {
	c.c.SetWriteDeadline(time.Now().Add(120 * time.Second))
	var buf []byte
	for seq := range n {
		buf = chatLine(buf, c.name, seq, max)
		if len(buf) >= 64<<10 || seq == n-1 {
			if w != nil {
				w.wait(c.name, readers, seq-ahead)
			}
			if _, err := c.c.Write(buf); err != nil {
				return fmt.Errorf("%s: write of line %d: %w", c.name, seq, err)
			}
			buf = buf[:0]
		}
	}
	return nil
}

// receiveLines reads until it has n lines from each of from, checking that
// each is whole and that each sender's come in order. got counts the lines;
// w, if not nil, hears of each.
func receiveLines(c *peer, from []string, n, max int, got *atomic.Int64, w *window) (err error) {
	if w != nil {
		defer func() {
			if err != nil {
				w.fail()
			}
		}()
	}
	c.c.SetReadDeadline(time.Now().Add(120 * time.Second))
	next := make(map[string]int, len(from))
	for _, f := range from {
		next[f] = 0
	}
	var want []byte
	for left := n * len(from); left > 0; left-- {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("%s: read after %d lines: %w", c.name, got.Load(), err)
		}
		name, _, _ := bytes.Cut(line, []byte(" "))
		seq, ok := next[string(name)]
		if !ok {
			return fmt.Errorf("%s got %q", c.name, trim(string(line)))
		}
		// As chatLine, without its formatting: the reader must keep up.
		want = append(append(append(want[:0], name...), ' '), strconv.Itoa(seq)...)
		want = append(append(append(want, ' '), payload[:seq*7919%max]...), '\n')
		if !bytes.Equal(line, want) {
			return fmt.Errorf("%s got %q, want %q", c.name, trim(string(line)), trim(string(want)))
		}
		next[string(name)] = seq + 1
		got.Add(1)
		if w != nil {
			w.received(c.name, string(name))
		}
	}
	return nil
}

// TestSlowConsumer: while two clients send 256 MiB of lines in all, which
// they and a third client read, a fourth never reads. The server drops it
// once more than -max-pending waits for it, while the others go on; they
// get every line, and the server's memory stays bounded all along.
func TestSlowConsumer(t *testing.T) {
	const (
		maxPending = 1 << 20
		lineMax    = 8 << 10
		perSender  = 32 << 10 // lines: about 128 MiB each
		// The Go runtime, libevent and the buffers of four connections
		// (up to -max-pending queued for each, and what one read brings
		// past it), with room for the garbage of 64 K lines of ReadLine
		// between two collections.
		maxGrow = 32<<20 + 4*maxPending
		// And in all, with the race detector's or AddressSanitizer's
		// own memory (about 20 MiB at rest).
		maxRSS = 64<<20 + 4*maxPending
	)
	p := startChat(t, "-max-pending", strconv.Itoa(maxPending))
	cs := p.join(t, "s1", "s2", "reader", "slow")
	s1, s2, reader, slow := cs[0], cs[1], cs[2], cs[3]
	base, err := p.RSS()
	if err != nil {
		t.Fatal(err)
	}
	stopSampling := make(chan struct{})
	peakc := p.SampleRSS(t, stopSampling)

	start := time.Now()
	var got [3]atomic.Int64 // lines received by s1, s2, reader
	errs := make(chan error, 5)
	// Each sender keeps within 64 lines (about 256 KiB) of its readers:
	// at most 512 KiB waits for the reader, which is not dropped; nothing
	// waits for the slow client, which is.
	w := newWindow()
	go func() { errs <- sendLines(s1, perSender, lineMax, w, []string{"s2", "reader"}, 64) }()
	go func() { errs <- sendLines(s2, perSender, lineMax, w, []string{"s1", "reader"}, 64) }()
	go func() { errs <- receiveLines(s1, []string{"s2"}, perSender, lineMax, &got[0], w) }()
	go func() { errs <- receiveLines(s2, []string{"s1"}, perSender, lineMax, &got[1], w) }()
	go func() { errs <- receiveLines(reader, []string{"s1", "s2"}, perSender, lineMax, &got[2], w) }()

	// The slow client is dropped early, while the others still have most
	// of the way to go.
	dropped := p.WhenLogged(fmt.Sprintf("chat: disconnected %v: more than -max-pending", slow.c.LocalAddr()))
	var droppedAt atomic.Int64
	droppedAt.Store(-1)
	go func() {
		<-dropped
		droppedAt.Store(got[2].Load())
	}()
	for range 5 {
		if err := servertest.Recv(t, errs, 180*time.Second, "the clients"); err != nil {
			t.Error(err)
		}
	}
	took := time.Since(start)
	close(stopSampling)
	peak := <-peakc

	// What the slow client gets is what was in the kernel's buffers and
	// some of what was queued, then the end of the connection. Its last
	// deadline (set as it joined) may have passed while the others ran.
	slow.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, slow.r)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("slow client: %v after %d bytes", err, n)
	}
	if n >= 64<<20 {
		t.Errorf("the slow client got %d MiB before it was dropped", n>>20)
	}
	select {
	case <-dropped:
		if at := droppedAt.Load(); at < 0 || at >= 2*perSender/2 {
			t.Errorf("the slow client was dropped after the reader had %d of %d lines, want before half", at, 2*perSender)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the slow client was not dropped")
	}
	t.Logf("256 MiB of lines in %v; slow client dropped after the reader had %d of %d lines, and got %d KiB; server RSS %d MiB at start, peak %d MiB (+%d MiB)",
		took.Round(time.Millisecond), droppedAt.Load(), 2*perSender, n>>10, base>>20, peak>>20, (peak-base)>>20)
	if grow := peak - base; grow > maxGrow {
		t.Errorf("server RSS grew by %d MiB, want at most %d MiB", grow>>20, maxGrow>>20)
	}
	if peak > maxRSS {
		t.Errorf("server RSS reached %d MiB, want below %d MiB", peak>>20, maxRSS>>20)
	}
	p.stop(t, syscall.SIGTERM)
}

// smallReceiveBuffer keeps what the kernel holds for a client small, so
// that what it has not read waits in the server.
func smallReceiveBuffer(fd uintptr) {
	syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
}

// TestSignal: SIGTERM sends each client what is queued for it, for up to
// a second, then exits 0.
func TestSignal(t *testing.T) {
	const (
		// More than the kernel's buffers take (4 MiB of send buffer at
		// most here, a small receive buffer): some of it waits in the
		// server's output when the signal comes. Not much more: under
		// -race on a loaded machine the server writes a few MiB in the
		// second it has.
		queued   = 6 << 20
		lineMax  = 6 << 10
		lines    = queued / (lineMax / 2)
		pending  = 64 << 20 // not the bound under test
		deadline = 10 * time.Second
	)
	// setup joins a sender, a fast reader and a third client, sends the
	// lines and "end", and returns once the fast reader has them all: by
	// then the server has queued them for the third one too.
	setup := func(t *testing.T) (p *chatProc, third *peer, want []byte) {
		p = startChat(t, "-max-pending", strconv.Itoa(pending))
		cs := join(p.dial(t, "sender", nil), p.dial(t, "fast", nil), p.dial(t, "third", smallReceiveBuffer))
		sender, fast := cs[0], cs[1]
		var got atomic.Int64
		errs := make(chan error, 2)
		go func() { errs <- receiveLines(fast, []string{"sender"}, lines, lineMax, &got, nil) }()
		if err := sendLines(sender, lines, lineMax, nil, nil, 0); err != nil {
			t.Fatal(err)
		}
		sender.send("end")
		if err := servertest.Recv(t, errs, 60*time.Second, "the fast reader"); err != nil {
			t.Fatal(err)
		}
		fast.expect("end\n")
		for seq := range lines {
			want = chatLine(want, "sender", seq, lineMax)
		}
		return p, cs[2], append(want, "end\n"...)
	}

	// readSlowly reads until EOF: it read nothing until now, takes at most
	// its receive buffer per read, and pauses every 256 KiB: 6 MiB in a
	// small part of the second it has.
	readSlowly := func(t *testing.T, slow *peer) []byte {
		slow.c.SetReadDeadline(time.Now().Add(deadline))
		var got bytes.Buffer
		buf := make([]byte, 64<<10)
		var err error
		for next := 256 << 10; err == nil; {
			var n int
			n, err = slow.r.Read(buf)
			got.Write(buf[:n])
			if got.Len() >= next {
				time.Sleep(time.Millisecond) // the client's pace, not synchronisation
				next += 256 << 10
			}
		}
		if err != io.EOF {
			t.Errorf("slow client: %v after %d bytes, want EOF", err, got.Len())
		}
		return got.Bytes()
	}
	checkStopped := func(t *testing.T, p *chatProc) time.Duration {
		conns, took := p.waitStopped(t, syscall.SIGTERM)
		if conns != 3 {
			t.Errorf("flushed %d connections, want 3", conns)
		}
		if took > flushTimeout+shutdownGrace {
			t.Errorf("shutdown took %v, want at most %v", took, flushTimeout+shutdownGrace)
		}
		return took
	}

	t.Run("queued lines reach a client that reads slowly", func(t *testing.T) {
		p, slow, want := setup(t)
		if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		got := readSlowly(t, slow)
		if !bytes.Equal(got, want) {
			t.Errorf("slow client got %d bytes, want the %d queued for it, in order", len(got), len(want))
		}
		took := checkStopped(t, p)
		t.Logf("%d KiB flushed to the slow client; shutdown took %v", len(got)>>10, took)
	})

	t.Run("queued lines reach a client that is still sending", func(t *testing.T) {
		// Closed with its input unread, its connection would be reset,
		// and what it had not read yet lost.
		p, typing, want := setup(t)
		if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		sent := make(chan int, 1)
		go func() { // it types until the server is gone
			n := 0
			for line := []byte("still typing\n"); ; n++ {
				if _, err := typing.c.Write(line); err != nil {
					sent <- n
					return
				}
			}
		}()
		got := readSlowly(t, typing)
		if !bytes.Equal(got, want) {
			t.Errorf("typing client got %d bytes, want the %d queued for it, in order", len(got), len(want))
		}
		took := checkStopped(t, p)
		typing.c.Close() // ends its writes, if the server has not
		t.Logf("%d KiB flushed to the typing client, which sent %d lines meanwhile; shutdown took %v", len(got)>>10, <-sent, took)
	})

	t.Run("a client that never reads holds the exit a second at most", func(t *testing.T) {
		p, stuck, want := setup(t)
		conns, took := p.stop(t, syscall.SIGTERM)
		if conns != 3 {
			t.Errorf("flushed %d connections, want 3", conns)
		}
		// It waited for the flush, and no longer than its bound.
		if took < flushTimeout-50*time.Millisecond || took > flushTimeout+shutdownGrace {
			t.Errorf("shutdown took %v, want about %v", took, flushTimeout)
		}
		n, err := io.Copy(io.Discard, stuck.r)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("stuck client: %v after %d bytes", err, n)
		}
		if n >= int64(len(want)) {
			t.Errorf("stuck client got all %d bytes: the test queued too little", n)
		}
		t.Logf("shutdown took %v; the stuck client then read %d of %d KiB", took, n>>10, len(want)>>10)
	})
}

// TestAcceptErrorEndsServer: an accept error that is not a resource
// shortage stops the server with a message and status 1. Shutting the
// listening socket down (through a duplicate taken with pidfd_getfd) makes
// accept fail with EINVAL.
func TestAcceptErrorEndsServer(t *testing.T) {
	p := startChat(t)
	p.join(t, "a", "b")
	p.ShutdownListener(t)
	if code := p.Wait(t, 10*time.Second, "a fatal accept error"); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if msg := p.Log(); !strings.Contains(msg, "accept") || !strings.Contains(msg, "invalid argument") {
		t.Errorf("stderr does not report the accept error:\n%s", msg)
	}
}
