package evlistener

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// netListenerOn wraps a new loopback listener in a NetListener and runs
// Dispatch on its own goroutine. The base is closed when the test ends.
func netListenerOn(t *testing.T, queue int) (*Base, *Listener, *netListener, *running) {
	t.Helper()
	b := newBase(t)
	l := listenTCP(t, b, nil, Reuseable)
	nl := NetListener(l, queue).(*netListener)
	return b, l, nl, startDispatch(t, b, whenIdle)
}

type accepted struct {
	c   net.Conn
	err error
}

// accept calls Accept and fails the test if it does not return within 5 s.
func accept(t *testing.T, ln net.Listener) (net.Conn, error) {
	t.Helper()
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	r := recv(t, ch, "Accept")
	return r.c, r.err
}

// queued tells how many connections wait for Accept, and whether the
// listener is paused because of them.
func (nl *netListener) queued() (n int, paused bool) {
	nl.mu.Lock()
	defer nl.mu.Unlock()
	return len(nl.queue), nl.paused
}

// acceptQueue is the number of connections waiting in the kernel's accept
// queue of a listening TCP socket, which Linux reports as tcpi_unacked.
func acceptQueue(t *testing.T, fd int) int {
	t.Helper()
	var info syscall.TCPInfo
	n := uint32(unsafe.Sizeof(info))
	_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		t.Fatalf("getsockopt TCP_INFO: %v", e)
	}
	return int(info.Unacked)
}

func TestNetListenerHTTP(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keepAlive bool
		queue     int
	}{
		{"keep-alive connections", true, 64},
		{"a connection per request, queue of 4", false, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, nl, r := netListenerOn(t, tc.queue)
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s from %s", r.URL.Path, r.RemoteAddr)
			})}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(nl) }()

			const clients, requests = 50, 20
			tr := &http.Transport{DisableKeepAlives: !tc.keepAlive, MaxIdleConnsPerHost: clients}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: dispatchTimeout}
			var wg sync.WaitGroup
			errs := make(chan error, clients*requests)
			for i := 0; i < clients; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := 0; j < requests; j++ {
						path := fmt.Sprintf("/%d/%d", i, j)
						resp, err := client.Get("http://" + nl.Addr().String() + path)
						if err != nil {
							errs <- err
							continue
						}
						body, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						want := path + " from "
						if err != nil || resp.StatusCode != 200 || len(body) < len(want) || string(body[:len(want)]) != want {
							errs <- fmt.Errorf("GET %s: %d %q, %v", path, resp.StatusCode, body, err)
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			failed := 0
			for err := range errs {
				if failed++; failed <= 5 {
					t.Error(err)
				}
			}
			if failed > 0 {
				t.Errorf("%d of %d requests failed", failed, clients*requests)
			}

			// Connections the client dialed but never used would hold
			// Shutdown for 5 s (it waits for new connections to send a
			// request).
			tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), dispatchTimeout)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if err := recv(t, served, "Serve to return"); err != http.ErrServerClosed {
				t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
			}
			// The NetListener's listener was all the base had: Dispatch
			// ends by itself once the server closed it.
			if err := r.wait(t); err != nil {
				t.Errorf("Dispatch: %v", err)
			}
		})
	}
}

// Clients beyond the queue wait in the kernel backlog, connected and not
// refused, with the listener disabled; each Accept lets one more in, and
// Dispatch keeps running meanwhile although nothing else is on the base.
func TestNetListenerFullQueue(t *testing.T) {
	const queue, clients = 2, 5
	_, l, nl, r := netListenerOn(t, queue)
	for i := 0; i < clients; i++ {
		if _, err := dial(t, nl.Addr()).Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a full queue", func() bool { n, paused := nl.queued(); return n == queue && paused })
	waitFor(t, "the rest in the kernel backlog", func() bool { return acceptQueue(t, l.FD()) == clients-queue })
	if n, _ := nl.queued(); n != queue {
		t.Fatalf("%d connections queued, want %d", n, queue)
	}
	if r.finished() {
		t.Fatalf("Dispatch returned (%v) while the listener was paused", r.err)
	}

	seen := map[byte]bool{}
	for i := 0; i < clients; i++ {
		c, err := accept(t, nl)
		if err != nil {
			t.Fatalf("Accept %d: %v", i, err)
		}
		if n, _ := nl.queued(); n > queue {
			t.Errorf("%d connections queued, more than %d", n, queue)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var id [1]byte
		if _, err := io.ReadFull(c, id[:]); err != nil {
			t.Fatalf("read from accepted conn %d: %v", i, err)
		}
		seen[id[0]] = true
		c.Close()
	}
	if len(seen) != clients {
		t.Errorf("served clients %v, want all %d", seen, clients)
	}
	if got := acceptQueue(t, l.FD()); got != 0 {
		t.Errorf("%d connections left in the backlog", got)
	}
}

func TestNetListenerClose(t *testing.T) {
	// Go's poller opens its own descriptors on first use; count after.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}

	t.Run("blocked Accept returns net.ErrClosed", func(t *testing.T) {
		_, l, nl, _ := netListenerOn(t, 4)
		ch := make(chan error, 1)
		go func() {
			_, err := nl.Accept()
			ch <- err
		}()
		if err := nl.Close(); err != nil {
			t.Fatal(err)
		}
		if err := recv(t, ch, "the blocked Accept"); !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked Accept: %v, want net.ErrClosed", err)
		}
		if _, err := nl.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
		if err := nl.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close: %v, want net.ErrClosed", err)
		}
		if l.FD() != -1 {
			t.Error("Close left the Listener open")
		}
		if nl.Addr() == nil {
			t.Error("Addr is nil after Close")
		}
	})

	t.Run("queued connections are closed", func(t *testing.T) {
		checkNoLeaks(t)
		b, _, nl, r := netListenerOn(t, 4)
		conns := []net.Conn{dial(t, nl.Addr()), dial(t, nl.Addr()), dial(t, nl.Addr())}
		waitFor(t, "3 queued connections", func() bool { n, _ := nl.queued(); return n == 3 })
		if err := nl.Close(); err != nil {
			t.Fatal(err)
		}
		for _, c := range conns {
			readEOF(t, c)
			c.Close()
		}
		if err := r.wait(t); err != nil {
			t.Errorf("Dispatch: %v", err)
		}
		b.Close()
	})

	for _, tc := range []struct {
		name  string
		close func(*Base, *Listener) error
	}{
		{"closing the Listener closes it", func(_ *Base, l *Listener) error { return l.Close() }},
		{"closing the Base closes it", func(b *Base, _ *Listener) error { return b.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, l, nl, _ := netListenerOn(t, 4)
			ch := make(chan error, 1)
			go func() {
				_, err := nl.Accept()
				ch <- err
			}()
			if err := tc.close(b, l); err != nil {
				t.Fatal(err)
			}
			if err := recv(t, ch, "the blocked Accept"); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Accept: %v, want net.ErrClosed", err)
			}
			if err := nl.Close(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Close: %v, want net.ErrClosed", err)
			}
		})
	}
}

// A socket that cannot become a net.Conn is closed, and Accept returns an
// error shaped as net's own (with EMFILE it would be temporary, and
// http.Server would retry); the next connection is accepted as usual.
func TestNetListenerAcceptError(t *testing.T) {
	_, _, nl, _ := netListenerOn(t, 4)
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[1])
	nl.mu.Lock()
	nl.queue = append(nl.queue, acceptedConn{fd: p[0]}) // as if accepted
	nl.mu.Unlock()
	_, err := accept(t, nl)
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "accept" || !errors.Is(err, syscall.ENOTSOCK) {
		t.Errorf("Accept: %#v, want a *net.OpError for accept wrapping ENOTSOCK", err)
	}
	if fdOpen(p[0]) {
		t.Error("the socket that failed is still open")
	}
	client := dial(t, nl.Addr())
	c, err := accept(t, nl)
	if err != nil {
		t.Fatalf("Accept after the error: %v", err)
	}
	defer c.Close()
	if c.RemoteAddr().String() != client.LocalAddr().String() {
		t.Errorf("accepted %v, want the client %v", c.RemoteAddr(), client.LocalAddr())
	}
}

func TestNetListenerBadListener(t *testing.T) {
	b := newBase(t)
	closed := listenTCP(t, b, nil, 0)
	closed.Close()
	taken := listenTCP(t, b, nil, 0)
	first := NetListener(taken, 1)
	defer first.Close()

	for _, tc := range []struct {
		name   string
		l      *Listener
		closed bool // the error wraps net.ErrClosed
	}{
		{"nil", nil, false},
		{"closed", closed, true},
		{"already has a NetListener", taken, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nl := NetListener(tc.l, 1)
			_, aerr := nl.Accept()
			cerr := nl.Close()
			for op, err := range map[string]error{"Accept": aerr, "Close": cerr} {
				var oe *net.OpError
				if !errors.As(err, &oe) {
					t.Errorf("%s: %v, want a *net.OpError", op, err)
				}
				if tc.closed != errors.Is(err, net.ErrClosed) {
					t.Errorf("%s: %v; wraps net.ErrClosed: %v, want %v", op, err, !tc.closed, tc.closed)
				}
			}
		})
	}
	if taken.FD() == -1 {
		t.Error("a failed NetListener's Close closed the Listener")
	}
}

// BenchmarkNetListenerAccept measures connections handed to a Go server as
// net.Conns, through NetListener and, for comparison, through net.Listen:
// 8 clients connect, wait for the server to reset the connection, repeat.
func BenchmarkNetListenerAccept(b *testing.B) {
	run := func(b *testing.B, ln net.Listener) {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 1)
				for {
					select {
					case <-stop:
						return
					default:
					}
					c, err := net.Dial("tcp", ln.Addr().String())
					if err != nil {
						continue
					}
					c.Read(buf)
					c.Close()
				}
			}()
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c, err := ln.Accept()
			if err != nil {
				b.Fatal(err)
			}
			c.(*net.TCPConn).SetLinger(0) // no TIME_WAIT: the run would run out of ports
			c.Close()
		}
		b.StopTimer()
		ln.Close()
		close(stop)
		wg.Wait()
	}
	b.Run("NetListener", func(b *testing.B) {
		base := newBase(b)
		l := listenTCP(b, base, nil, Reuseable)
		ln := NetListener(l, 64)
		r := startDispatch(b, base, whenIdle)
		run(b, ln)
		if err := r.wait(b); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("net.Listen", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		run(b, ln)
	})
}
