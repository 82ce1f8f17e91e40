package evlistener_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"syscall"
	"time"

	"github.com/evlistener/evlistener"
)

// A line protocol on buffer events: each line a client sends comes back in
// upper case. ReadLine takes whole lines out of the input buffer, however
// the bytes arrived; a partial line waits for the rest.
func ExampleBufferEvent() {
	base, err := evlistener.NewBase()
	if err != nil {
		log.Fatal(err)
	}
	defer base.Close()
	serve := func(l *evlistener.Listener, fd int, _ net.Addr) {
		be, err := evlistener.NewBufferEvent(base, fd, evlistener.BEVOptCloseOnFree)
		if err != nil {
			syscall.Close(fd)
			return
		}
		be.SetCallbacks(func(be *evlistener.BufferEvent) {
			for {
				line, ok := be.Input().ReadLine(evlistener.EOLCRLF)
				if !ok {
					return // no whole line yet
				}
				be.Write(append(bytes.ToUpper(line), '\n'))
			}
		}, nil, func(be *evlistener.BufferEvent, what evlistener.BEVEvent, err error) {
			if what&(evlistener.BEVEventEOF|evlistener.BEVEventError|evlistener.BEVEventTimeout) != 0 {
				be.Close() // the client is gone; not on back-pressure (BEVEventOutputFull)
			}
		})
		be.Enable(evlistener.EvRead | evlistener.EvWrite)
	}
	l, err := evlistener.NewBind(base, serve, evlistener.CloseOnFree, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go base.Dispatch()

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hello\r\nwor")
	io.WriteString(c, "ld\n")
	r := bufio.NewReader(c)
	for range 2 {
		line, _ := r.ReadString('\n')
		fmt.Print(line)
	}
	// Output:
	// HELLO
	// WORLD
}

// An event on a file descriptor: the callback runs on the loop goroutine
// each time the descriptor is readable.
func ExampleEvent() {
	base, err := evlistener.NewBase()
	if err != nil {
		log.Fatal(err)
	}
	defer base.Close()
	fds := unixPair()
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])

	ev, err := evlistener.NewEvent(base, fds[0], evlistener.EvRead|evlistener.EvPersist,
		func(ev *evlistener.Event, fd int, what evlistener.Events) {
			buf := make([]byte, 64)
			n, _ := syscall.Read(fd, buf)
			fmt.Printf("%v: %q\n", what, buf[:n])
			ev.Close() // nothing else is pending: Dispatch returns
		})
	if err != nil {
		log.Fatal(err)
	}
	ev.Add(0)
	syscall.Write(fds[1], []byte("ping"))
	base.Dispatch()
	// Output: EvRead: "ping"
}

// A timer that fires three times, 10 ms apart, re-armed from its own
// callback.
func ExampleNewTimer() {
	base, err := evlistener.NewBase()
	if err != nil {
		log.Fatal(err)
	}
	defer base.Close()
	n := 0
	tm, err := evlistener.NewTimer(base, func(tm *evlistener.Event, _ int, what evlistener.Events) {
		n++
		fmt.Println("tick", n, what)
		if n < 3 {
			tm.Add(10 * time.Millisecond)
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tm.Close()
	tm.Add(10 * time.Millisecond)
	base.Dispatch() // returns once the timer is no longer pending
	// Output:
	// tick 1 EvTimeout
	// tick 2 EvTimeout
	// tick 3 EvTimeout
}

// State that callbacks own needs no lock when other goroutines reach it
// through Do (run on the loop and wait) or Post (queue for the loop).
func ExampleBase_Do() {
	base, err := evlistener.NewBase()
	if err != nil {
		log.Fatal(err)
	}
	defer base.Close()
	base.LoopExit(time.Hour) // keep the loop running with nothing else to do
	go base.Dispatch()

	clients := map[string]int{} // owned by the loop goroutine
	for _, name := range []string{"ann", "bob", "ann"} {
		base.Post(func() { clients[name]++ }) // returns at once
	}
	var n int
	base.Do(func() { n = clients["ann"] }) // after the Posts, in order
	fmt.Println("ann:", n)
	// Output: ann: 2
}

// Output back-pressure: a producer writes until the connection's output
// passes the write high watermark (BEVEventOutputFull), pauses, and resumes
// when the write callback says the output drained to the low one. Memory
// stays bounded however slowly the peer reads.
func ExampleBufferEvent_SetWatermark() {
	base, err := evlistener.NewBase()
	if err != nil {
		log.Fatal(err)
	}
	defer base.Close()
	fds := unixPair()
	peer := fds[1]
	defer syscall.Close(peer)
	be, err := evlistener.NewBufferEvent(base, fds[0], evlistener.BEVOptCloseOnFree)
	if err != nil {
		log.Fatal(err)
	}
	const total, chunk = 4 << 20, 64 << 10
	sent, paused := 0, false
	produce := func(be *evlistener.BufferEvent) {
		for !paused && sent < total {
			be.Write(make([]byte, chunk))
			sent += chunk
			// BEVEventOutputFull comes after this callback: a real
			// producer also stops at its own bound.
			if be.Output().Len() > 1<<20 {
				break
			}
		}
		if sent == total {
			be.CloseAfterFlush(0)
		}
	}
	be.SetWatermark(evlistener.EvWrite, 64<<10, 256<<10)
	be.SetCallbacks(nil, func(be *evlistener.BufferEvent) {
		paused = false // drained to the low watermark
		produce(be)
	}, func(be *evlistener.BufferEvent, what evlistener.BEVEvent, err error) {
		if what&evlistener.BEVEventOutputFull != 0 {
			paused = true // above the high watermark
		}
	})
	be.Enable(evlistener.EvWrite)
	base.Do(func() { produce(be) })
	go base.Dispatch()

	n, _ := io.Copy(io.Discard, fdReader(peer)) // a reader, until EOF
	fmt.Println("received", n>>20, "MiB")
	// Output: received 4 MiB
}

// unixPair returns a connected pair of unix stream sockets: the first
// non-blocking, for the loop; the second blocking, for the example's peer.
func unixPair() [2]int {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		log.Fatal(err)
	}
	syscall.SetNonblock(fds[0], true)
	return fds
}

// fdReader reads a blocking descriptor.
type fdReader int

func (fd fdReader) Read(p []byte) (int, error) {
	n, err := syscall.Read(int(fd), p)
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	return max(n, 0), err
}
