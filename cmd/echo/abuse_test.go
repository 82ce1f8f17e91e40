package main

// Clients that abuse the server: a flood past -max-conns, idle clients
// holding every slot, clients that reset in the middle of their echo, and
// every byte value. Each must leave the server serving, with its
// descriptors back where they were.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/evlistener/evlistener/internal/servertest"
)

func TestFloodPastMaxConns(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		const limit, clients = 8, 400 // all fit in the server's backlog
		p := startEcho(t, "-engine", engine, "-max-conns", strconv.Itoa(limit))
		fds := p.OpenFDs(t)

		// While the flood lasts, the server never holds more than limit
		// connections.
		var peak atomic.Int64
		stopSampling := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.Cmd.Process.Pid)); err == nil {
					peak.Store(max(peak.Load(), int64(len(ents))))
				}
				select {
				case <-stopSampling:
					return
				default:
				}
			}
		}()

		start := time.Now()
		errs := make(chan error, clients)
		for i := range clients {
			go func() { errs <- floodClient(p.Addr, i) }()
		}
		failed := 0
		for range clients {
			if err := <-errs; err != nil {
				if failed++; failed <= 5 {
					t.Errorf("client: %v", err)
				}
			}
		}
		close(stopSampling)
		<-sampled
		t.Logf("%d clients served %d at a time in %v; server fds %d at rest, %d at most",
			clients, limit, time.Since(start).Round(time.Millisecond), fds, peak.Load())
		if failed > 0 {
			t.Fatalf("%d of %d clients not served", failed, clients)
		}
		if peak.Load() > int64(fds+limit) {
			t.Errorf("server held %d descriptors, want at most %d + %d connections", peak.Load(), fds, limit)
		}
		servertest.WaitFor(t, 5*time.Second, "the server's fds back to baseline", func() bool { return p.OpenFDs(t) <= fds })
		p.stop(t, syscall.SIGTERM)
	})
}

// floodClient connects, has a message that names it echoed, and leaves.
func floodClient(addr string, i int) error {
	c, err := net.DialTimeout("tcp", addr, 20*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	msg := []byte(fmt.Sprintf("client %d of the flood", i))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("client %d: %w", i, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("client %d: %w", i, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("client %d: echo %q", i, got)
	}
	return nil
}

func TestIdleClientsHoldingEverySlot(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		// Slowloris: idle clients take every slot and twice as many wait
		// behind them. -idle frees the slots, so a client that comes
		// after them is served within about three idle periods.
		const limit, idlers, idle = 4, 12, 300 * time.Millisecond
		p := startEcho(t, "-engine", engine, "-max-conns", strconv.Itoa(limit), "-idle", idle.String())
		fds := p.OpenFDs(t)
		closedAfter := make(chan time.Duration, idlers)
		for i := range idlers {
			c := p.Dial(t)
			// One byte, as a slow request would start; then nothing.
			if _, err := c.Write([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
			go func() {
				start := time.Now()
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				got, err := io.ReadAll(c)
				if err != nil || len(got) != 1 || got[0] != byte(i) {
					t.Errorf("idle client %d: read %q, %v; want its byte, then EOF", i, got, err)
				}
				closedAfter <- time.Since(start)
			}()
		}
		late := p.Dial(t)
		start := time.Now()
		if err := echoByte(late, 'L', 30*time.Second); err != nil {
			t.Fatalf("client behind %d idle ones: %v", idlers, err)
		}
		waited := time.Since(start)
		var last time.Duration
		for range idlers {
			last = max(last, <-closedAfter)
		}
		t.Logf("the client behind %d idle ones was served after %v; the last idle one closed after %v",
			idlers, waited.Round(time.Millisecond), last.Round(time.Millisecond))
		if want := idlers / limit * idle; waited < want-30*time.Millisecond {
			t.Errorf("served after %v, while %d idle clients held %d slots for %v each", waited, idlers, limit, idle)
		}
		if bound := (idlers/limit+1)*idle + 2*time.Second; waited > bound {
			t.Errorf("served after %v, want within %v", waited, bound)
		}
		late.Close()
		servertest.WaitFor(t, 5*time.Second, "the server's fds back to baseline", func() bool { return p.OpenFDs(t) <= fds })
		p.stop(t, syscall.SIGTERM)
	})
}

func TestResetMidEcho(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		const rounds = 20
		p := startEcho(t, "-engine", engine)
		fds := p.OpenFDs(t)
		// A client that stays throughout must not notice the others.
		steady := p.Dial(t)
		for i := range rounds {
			resetMidEcho(t, p.Addr, uint64(i))
			if err := echoByte(steady, byte(i), 5*time.Second); err != nil {
				t.Fatalf("steady client after reset %d: %v", i, err)
			}
		}
		steady.Close()
		servertest.WaitFor(t, 5*time.Second, "the server's fds back to baseline", func() bool { return p.OpenFDs(t) <= fds })
		p.stop(t, syscall.SIGTERM)
	})
}

// resetMidEcho sends data without pause, reads part of its echo, and
// closes with SO_LINGER 0 while the server still has echo to send and data
// to read: the server sees ECONNRESET on both.
func resetMidEcho(t *testing.T, addr string, seed uint64) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tc := c.(*net.TCPConn)
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	wrote := make(chan error, 1)
	go func() {
		_, err := stream(tc, seed, 64<<20, nil)
		wrote <- err
	}()
	if _, err := io.CopyN(io.Discard, tc, 256<<10); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	tc.SetLinger(0)
	tc.Close()
	// The writer stops on the closed socket: only the reset ends it.
	if err := <-wrote; err == nil {
		t.Fatal("the client sent all 64 MiB before it reset")
	} else if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("writer: %v", err)
	}
}

func TestEveryByteValue(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		p := startEcho(t, "-engine", engine)
		c := p.Dial(t)
		// One at a time: no value is taken for an end of line, of file
		// or of the string, or held back waiting for one.
		for v := range 256 {
			if err := echoByte(c, byte(v), 5*time.Second); err != nil {
				t.Fatalf("byte %#02x: %v", v, err)
			}
		}
		// Then every ordered pair of values, in one stream.
		pairs := make([]byte, 0, 2*256*256)
		for i := range 256 * 256 {
			pairs = append(pairs, byte(i>>8), byte(i))
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		wrote := make(chan error, 1)
		go func() {
			_, err := c.Write(pairs)
			wrote <- err
		}()
		got := make([]byte, len(pairs))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		if i := firstDifference(got, pairs); i >= 0 {
			t.Fatalf("echo differs at byte %d: %#02x, sent %#02x", i, got[i], pairs[i])
		}
		if err := echoByte(c, 0, 5*time.Second); err != nil {
			t.Fatalf("after the pairs: %v", err)
		}
		p.stop(t, syscall.SIGTERM)
	})
}

func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
