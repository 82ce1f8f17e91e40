package evlistener

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/evlistener/evlistener/internal/servertest"
)

// echoConn serves a Server's connection on a buffer event that sends back
// what arrives, until the client ends.
func echoConn(c Conn) {
	be, err := c.NewBufferEvent(0)
	if err != nil {
		return
	}
	be.SetCallbacks(func(be *BufferEvent) { be.EchoInput() }, nil, func(be *BufferEvent, what BEVEvent, _ error) {
		if what&(BEVEventEOF|BEVEventError|BEVEventTimeout) != 0 {
			be.Close()
		}
	})
	be.Enable(EvRead)
}

// serve runs s (Listen, then Serve on another goroutine) and returns its
// first address and the channel on which Serve returns. The server is
// closed when the test ends.
func serve(t *testing.T, s *Server) (net.Addr, <-chan error) {
	t.Helper()
	if s.Addr == "" && s.Network == "" {
		s.Addr = "127.0.0.1:0"
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	returned := make(chan struct{})
	go func() {
		served <- s.Serve()
		close(returned)
	}()
	t.Cleanup(func() {
		s.Close()
		select {
		case <-returned:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return s.Addrs()[0], served
}

// servedClosed waits for Serve, which serve started, to return
// ErrServerClosed.
func servedClosed(t *testing.T, served <-chan error) {
	t.Helper()
	if err := recv(t, served, "Serve"); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v, want ErrServerClosed", err)
	}
}

// goShutdown runs s.Shutdown with no deadline on another goroutine; the
// channel gives what it returns.
func goShutdown(s *Server) <-chan error {
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	return shut
}

// echoedQueued checks that c, a client that wrote "queued" while it
// waited in the backlog, gets its echo, and closes it.
func echoedQueued(t *testing.T, c net.Conn) {
	t.Helper()
	buf := make([]byte, 6)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "queued" {
		t.Fatalf("queued client: %q, %v; want its echo", buf, err)
	}
	c.Close()
}

// dialEchoed connects n clients to addr, each echoed msg once.
func dialEchoed(t *testing.T, addr net.Addr, n int, msg string) []net.Conn {
	t.Helper()
	cs := make([]net.Conn, n)
	for i := range cs {
		cs[i] = dial(t, addr)
		mustEcho(t, cs[i], msg)
	}
	return cs
}

// echoOnce writes msg on c and checks that it comes back.
func echoOnce(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

func mustEcho(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	if err := echoOnce(c, msg); err != nil {
		t.Fatalf("client %v: %v", c.LocalAddr(), err)
	}
}

// closedByServer fails the test unless the server ends c (EOF or reset)
// within 5 s.
func closedByServer(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client %v still connected: %v", c.LocalAddr(), err)
	}
}

func wantStats(t testing.TB, s *Server, want ServerStats) {
	t.Helper()
	if got := s.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

func TestServerBadConfig(t *testing.T) {
	checkNoLeaks(t)
	h := echoConn
	for _, tc := range []struct {
		name string
		s    *Server
		want string
	}{
		{"no handler", &Server{Addr: "127.0.0.1:0"}, "Handler is nil"},
		{"negative loops", &Server{Addr: "127.0.0.1:0", Handler: h, Loops: -1}, "Loops -1"},
		{"negative max conns", &Server{Addr: "127.0.0.1:0", Handler: h, MaxConns: -1}, "MaxConns -1"},
		{"fewer conns than loops", &Server{Addr: "127.0.0.1:0", Handler: h, Loops: 4, MaxConns: 3}, "MaxConns 3 is less than Loops 4"},
		{"negative backlog", &Server{Addr: "127.0.0.1:0", Handler: h, Backlog: -1}, "Backlog -1"},
		{"negative drain", &Server{Addr: "127.0.0.1:0", Handler: h, DrainTimeout: -time.Second}, "DrainTimeout"},
		{"negative upgrade timeout", &Server{Addr: "127.0.0.1:0", Handler: h, UpgradeTimeout: -1}, "UpgradeTimeout"},
		{"unknown network", &Server{Network: "udp", Addr: "127.0.0.1:0", Handler: h}, `Network "udp"`},
		{"unknown flags", &Server{Addr: "127.0.0.1:0", Handler: h, Flags: 1 << 30}, "unknown listener flags"},
		{"disabled listeners", &Server{Addr: "127.0.0.1:0", Handler: h, Flags: Disabled}, "Disabled"},
		{"no address", &Server{Handler: h}, "Addr is empty"},
		{"port out of range", &Server{Addr: "127.0.0.1:70000", Handler: h}, "70000"},
		{"not an address", &Server{Addr: "no port", Handler: h}, "no port"},
		{"unknown base flags", &Server{Addr: "127.0.0.1:0", Handler: h, Loops: 2, BaseFlags: 1 << 20}, "unknown flags"},
		{"handler and events", &Server{Addr: "127.0.0.1:0", Handler: h, Events: &EventOptions{OnEvent: func(*Event, int, Events) {}}}, "more than one of Handler, Events and BufferEvents"},
		{"events and buffer events", &Server{Addr: "127.0.0.1:0", Events: &EventOptions{}, BufferEvents: &BufferEventOptions{}}, "more than one"},
		{"events without a callback", &Server{Addr: "127.0.0.1:0", Loops: 2, Events: &EventOptions{}}, "nil callback"},
		{"bad buffer event options", &Server{Addr: "127.0.0.1:0", BufferEvents: &BufferEventOptions{ReadTimeout: -1}}, "negative timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			err := s.Serve()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Serve = %v, want an error saying %q", err, tc.want)
			}
			if s.Addrs() != nil {
				t.Errorf("Addrs = %v after a failed Listen", s.Addrs())
			}
			wantStats(t, s, ServerStats{})
		})
	}
	t.Run("a Conn no Server made", func(t *testing.T) {
		var c Conn
		if _, err := c.NewBufferEvent(0); err == nil {
			t.Error("NewBufferEvent succeeded")
		}
		if err := c.Close(); err == nil {
			t.Error("Close succeeded") // and closed fd 0
		}
		c.Done()
	})
	t.Run("port in use", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		s := &Server{Addr: ln.Addr().String(), Handler: h, Loops: 2}
		if err := s.Serve(); !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("Serve = %v, want EADDRINUSE", err)
		}
	})
}

func TestServerShutdown(t *testing.T) {
	for _, tc := range serverKinds(nil) {
		t.Run(tc.name+"/lets open connections finish", func(t *testing.T) {
			checkNoLeaks(t)
			stopped := make(chan struct{}, 1)
			s, addr, served := tc.serve(t, &Server{OnShutdown: func(*Base) { stopped <- struct{}{} }})
			cs := dialEchoed(t, addr, 3, "hello")
			shut := goShutdown(s)
			recv(t, stopped, "OnShutdown")
			refused(t, addr)
			for i, c := range cs {
				// Still served: Shutdown waits for them.
				mustEcho(t, c, "still here")
				select {
				case err := <-shut:
					t.Fatalf("Shutdown returned %v with %d connections open", err, len(cs)-i)
				default:
				}
				c.Close()
			}
			if err := recv(t, shut, "Shutdown"); err != nil {
				t.Fatalf("Shutdown = %v", err)
			}
			servedClosed(t, served)
			wantStats(t, s, ServerStats{Accepted: 3, Closed: 3})
		})

		t.Run(tc.name+"/deadline cuts connections", func(t *testing.T) {
			checkNoLeaks(t)
			s, addr, served := tc.serve(t, &Server{Loops: 2})
			cs := dialEchoed(t, addr, 3, "hello")
			wantStats(t, s, ServerStats{Accepted: 3, Open: 3})
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
			}
			for _, c := range cs {
				closedByServer(t, c)
			}
			servedClosed(t, served)
			wantStats(t, s, ServerStats{Accepted: 3, Closed: 3})
		})

		// At Shutdown, the connections waiting in the backlog of a Server
		// at its limit are accepted (into their objects, for Events and
		// BufferEvents) and served, not refused.
		t.Run(tc.name+"/queued connections are served, not refused", func(t *testing.T) {
			checkNoLeaks(t)
			s, addr, _ := tc.serve(t, &Server{MaxConns: 1})
			first := dial(t, addr)
			mustEcho(t, first, "first")
			// At the limit: these wait in the backlog.
			var queued []net.Conn
			for range 3 {
				c := dial(t, addr)
				io.WriteString(c, "queued")
				queued = append(queued, c)
			}
			stillQueued(t, queued[0])
			shut := goShutdown(s)
			for _, c := range queued {
				echoedQueued(t, c)
			}
			first.Close()
			if err := recv(t, shut, "Shutdown"); err != nil {
				t.Fatalf("Shutdown = %v", err)
			}
			wantStats(t, s, ServerStats{Accepted: 4, Closed: 4, AtLimit: 1})
		})
	}

	t.Run("from another goroutine while accepting", func(t *testing.T) {
		checkNoLeaks(t)
		s := &Server{Handler: echoConn, Loops: 2}
		addr, served := serve(t, s)
		l := startLoad(t, addr.String(), 8)
		waitFor(t, "connections served", func() bool { return l.ok.Load() >= 200 })
		shutdownAt := time.Now()
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown = %v", err)
		}
		l.stop()
		servedClosed(t, served)
		if st := s.Stats(); st.Open != 0 || st.Accepted < uint64(l.ok.Load()) {
			t.Errorf("Stats = %+v after %d echoes", st, l.ok.Load())
		}
		l.check(t, shutdownAt)
	})
}

func TestServerClose(t *testing.T) {
	checkNoLeaks(t)
	s := &Server{Handler: echoConn, Loops: 2}
	addr, served := serve(t, s)
	cs := dialEchoed(t, addr, 4, "hi")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		closedByServer(t, c)
	}
	refused(t, addr)
	servedClosed(t, served)
	wantStats(t, s, ServerStats{Accepted: 4, Closed: 4})
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after Close = %v", err)
	}
	if err := s.Upgrade(); err == nil {
		t.Error("Upgrade after Close succeeded")
	}
}

func TestServerServeAfterShutdown(t *testing.T) {
	checkNoLeaks(t)
	t.Run("never served", func(t *testing.T) {
		s := &Server{Addr: "127.0.0.1:0", Handler: echoConn}
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := s.Serve(); err != ErrServerClosed {
			t.Fatalf("Serve = %v, want ErrServerClosed", err)
		}
		if err := s.Listen(); err != ErrServerClosed {
			t.Fatalf("Listen = %v, want ErrServerClosed", err)
		}
	})
	t.Run("listening", func(t *testing.T) {
		s := &Server{Addr: "127.0.0.1:0", Handler: echoConn}
		if err := s.Listen(); err != nil {
			t.Fatal(err)
		}
		addr := s.Addrs()[0]
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		refused(t, addr)
		if err := s.Serve(); err != ErrServerClosed {
			t.Fatalf("Serve = %v, want ErrServerClosed", err)
		}
	})
	t.Run("at once after Serve starts", func(t *testing.T) {
		// The loops may not have reached Dispatch yet: Shutdown must
		// end them all the same.
		for range 20 {
			s := &Server{Addr: "127.0.0.1:0", Handler: echoConn, Loops: 2}
			if err := s.Listen(); err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- s.Serve() }()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := s.Shutdown(ctx)
			cancel()
			if err != nil {
				t.Fatalf("Shutdown = %v, want nil: the loops did not end", err)
			}
			servedClosed(t, served)
		}
	})
	t.Run("loops that reach Dispatch after it", func(t *testing.T) {
		// What Shutdown does when it wins the race with the loops'
		// goroutines, made certain.
		s := &Server{Addr: "127.0.0.1:0", Handler: echoConn, Loops: 2}
		if err := s.Listen(); err != nil {
			t.Fatal(err)
		}
		s.stopAccepting(true)
		s.started = true
		for _, lp := range s.loops {
			go lp.run()
		}
		for i, lp := range s.loops {
			recv(t, lp.done, fmt.Sprintf("loop %d to end", i))
		}
		s.Close()
	})
	t.Run("served", func(t *testing.T) {
		s := &Server{Handler: echoConn}
		_, served := serve(t, s)
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		servedClosed(t, served)
		if err := s.Serve(); err != ErrServerClosed {
			t.Fatalf("second Serve = %v, want ErrServerClosed", err)
		}
	})
}

// TestServerFromItsLoop: Shutdown, Close and Upgrade wait for the loops,
// so called from a handler they return an error instead of waiting for
// themselves.
func TestServerFromItsLoop(t *testing.T) {
	checkNoLeaks(t)
	errs := make(chan error, 3)
	var s *Server
	var once sync.Once
	s = &Server{Handler: func(c Conn) {
		first := false
		once.Do(func() { first = true })
		if !first {
			echoConn(c)
			return
		}
		errs <- s.Shutdown(context.Background())
		errs <- s.Close()
		errs <- s.Upgrade()
		c.Close()
	}}
	addr, _ := serve(t, s)
	dial(t, addr)
	for _, m := range []string{"Shutdown", "Close", "Upgrade"} {
		if err := recv(t, errs, m); err == nil || !strings.Contains(err.Error(), "loops") {
			t.Errorf("%s from the loop = %v, want an error", m, err)
		}
	}
	mustEcho(t, dial(t, addr), "still serving")
}

// TestServerAcceptError: an accept error that a pause cannot cure (EINVAL
// once the listening socket is shut down) stops the server: Serve returns
// it, having closed every connection.
func TestServerAcceptError(t *testing.T) {
	checkNoLeaks(t)
	s := &Server{Handler: echoConn}
	addr, served := serve(t, s)
	c := dial(t, addr)
	mustEcho(t, c, "hi")
	if err := syscall.Shutdown(s.loops[0].ln.FD(), syscall.SHUT_RD); err != nil {
		t.Fatal(err)
	}
	err := recv(t, served, "Serve")
	if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "accept") {
		t.Fatalf("Serve = %v, want the accept error", err)
	}
	closedByServer(t, c)
	if st := s.Stats(); st.AcceptErrors != 1 || st.Open != 0 || st.Accepted != 1 {
		t.Errorf("Stats = %+v, want one accept error and the connection closed", st)
	}
}

// TestServerHandlerPanic: a Handler that panics stops the server: Serve
// returns the panic, every connection is closed, and the one the Handler
// had is counted closed.
func TestServerHandlerPanic(t *testing.T) {
	checkNoLeaks(t)
	var n atomic.Int32
	s := &Server{Handler: func(c Conn) {
		if n.Add(1) == 2 {
			panic("boom")
		}
		echoConn(c)
	}}
	addr, served := serve(t, s)
	first := dial(t, addr)
	mustEcho(t, first, "first")
	second := dial(t, addr)
	err := recv(t, served, "Serve")
	var cp *CallbackPanic
	if !errors.As(err, &cp) || cp.Value != "boom" {
		t.Fatalf("Serve = %v, want the Handler's panic", err)
	}
	closedByServer(t, first)
	closedByServer(t, second)
	wantStats(t, s, ServerStats{Accepted: 2, Closed: 2})
}

// TestServerConnAllocs: the Server adds no allocation to a connection:
// the Conn is a value, the counts are the loop's, and the end of every
// connection goes through one func per loop. MaxConns 1 makes every
// connection pause the listener and its end resume it.
func TestServerConnAllocs(t *testing.T) {
	checkNoLeaks(t)
	s := &Server{Addr: "127.0.0.1:0", MaxConns: 1, Handler: func(c Conn) { c.Close() }}
	wantNoConnAllocs(t, s, func(lp *serverLoop, fd int, addr net.Addr) error {
		nfd, err := syscall.Dup(fd)
		if err == nil {
			lp.accept(lp.ln, nfd, addr)
		}
		return err
	})
}

// wantNoConnAllocs listens with s, which closes each connection at once,
// and fails the test unless a connection that accept hands to its first
// loop (a dup of one end of a tcpPair, and its address) allocates nothing.
// With MaxConns 1 every connection pauses the listener and its end
// resumes it.
func wantNoConnAllocs(t *testing.T, s *Server, accept func(lp *serverLoop, fd int, addr net.Addr) error) {
	t.Helper()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lp := s.loops[0]
	fd, peer := tcpPair(t)
	defer syscall.Close(fd)
	addr := peer.LocalAddr()
	const runs = 1000
	var allocs float64
	var err error
	lp.base.Do(func() { // no Dispatch runs: this goroutine is the loop
		allocs = testing.AllocsPerRun(runs, func() {
			if e := accept(lp, fd, addr); e != nil {
				err = e
			}
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("%v allocations per connection, want 0", allocs)
	}
	// AllocsPerRun runs the function once more to warm up.
	wantStats(t, s, ServerStats{Accepted: runs + 1, Closed: runs + 1, AtLimit: runs + 1})
}

// TestServerLoops: the loops share the port, each with its own socket, and
// each accepts.
func TestServerLoops(t *testing.T) {
	checkNoLeaks(t)
	const loops = 4
	var mu sync.Mutex
	seen := map[*Base]int{}
	s := &Server{Loops: loops, Handler: func(c Conn) {
		mu.Lock()
		seen[c.Base]++
		mu.Unlock()
		echoConn(c)
	}}
	addr, _ := serve(t, s)
	if n := len(s.Addrs()); n != 1 {
		t.Fatalf("Addrs = %v, want one address", s.Addrs())
	}
	if n := listeningSockets(t, addr.(*net.TCPAddr).Port); n != loops {
		t.Fatalf("%d sockets listen on the port, want %d", n, loops)
	}
	// The kernel spreads connections over the sockets by a hash of the
	// client's address: a few hundred reach every loop.
	for i := 0; i < 1000; i++ {
		c := dial(t, addr)
		mustEcho(t, c, "x")
		c.Close()
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == loops {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != loops {
		t.Fatalf("%d of %d loops accepted: %v", len(seen), loops, seen)
	}
}

// TestServerUnix: a unix socket is bound once and shared by the loops'
// listeners; the path goes with the Server.
func TestServerUnix(t *testing.T) {
	checkNoLeaks(t)
	path := t.TempDir() + "/s"
	s := &Server{Network: "unix", Addr: path, Loops: 2, Handler: echoConn}
	addr, served := serve(t, s)
	if addr.String() != path || len(s.Addrs()) != 1 {
		t.Fatalf("Addrs = %v, want %s once", s.Addrs(), path)
	}
	for range 8 {
		c := dial(t, addr)
		mustEcho(t, c, "unix")
		c.Close()
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	servedClosed(t, served)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket path after Shutdown: %v, want it removed", err)
	}
	if st := s.Stats(); st.Accepted != 8 || st.Open != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// listeningSockets counts the TCP sockets listening on port, from
// /proc/net/tcp and tcp6.
func listeningSockets(t testing.TB, port int) int {
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 3 && fields[3] == "0A" && strings.HasSuffix(fields[1], fmt.Sprintf(":%04X", port)) {
				n++
			}
		}
	}
	return n
}

// serverHelper is the test binary as a server in a process of its own, as
// a program wires one: SIGHUP upgrades, SIGTERM shuts down. It reports on
// stderr, one line each, prefixed by its pid: "listening on ADDR",
// "upgrade: ERR", "shutdown: ERR", "served: ERR STATS".
func serverHelper() error {
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGHUP, syscall.SIGTERM)
	if os.Getenv(upgradeEnv) != "" && os.Getenv("EVL_SERVER_STALL") != "" {
		// A new process that is never ready: the old one's SIGTERM
		// must stop it.
		time.Sleep(time.Minute)
		return errors.New("stalled new process not stopped")
	}
	say := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%d %s\n", os.Getpid(), fmt.Sprintf(format, a...))
	}
	loops, _ := strconv.Atoi(os.Getenv("EVL_SERVER_LOOPS"))
	upgradeTimeout, err := time.ParseDuration(os.Getenv("EVL_SERVER_UPGRADE_TIMEOUT"))
	if err != nil {
		upgradeTimeout = 10 * time.Second
	}
	s := &Server{Addr: "127.0.0.1:0", Loops: loops, Handler: echoConn, ErrorLog: log.New(os.Stderr, "", 0),
		DrainTimeout: 5 * time.Second, UpgradeTimeout: upgradeTimeout}
	if err := s.Listen(); err != nil {
		return err
	}
	say("listening on %v", s.Addrs()[0])
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	// reported is closed once the last upgrade has said how it went:
	// Serve may return (the old loops drained at once) before Upgrade's
	// goroutine has printed, and the report comes before "served".
	reported := make(chan struct{})
	close(reported)
	for {
		select {
		case sig := <-sigc:
			if sig == syscall.SIGHUP {
				if pid := s.Upgrading(); pid != 0 {
					say("upgrading %d", pid)
					continue
				}
				done := make(chan struct{})
				reported = done
				go func() {
					defer close(done)
					err := s.Upgrade()
					say("upgrade: %v", err)
					if err == nil {
						say("successor %d", s.Successor())
					}
				}()
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			say("shutdown: %v", s.Shutdown(ctx))
			cancel()
		case err := <-served:
			<-reported
			say("served: %v %+v", err, s.Stats())
			if err != ErrServerClosed {
				return err
			}
			return nil
		}
	}
}

func init() { helpers["server"] = serverHelper }

// serverFamily is a server helper process and those it upgraded to,
// sharing one stderr pipe.
type serverFamily struct {
	*servertest.Family
	t    *testing.T
	seen map[string]int // reports read by next, by kind
}

func startServerFamily(t *testing.T, cmd *exec.Cmd) *serverFamily {
	t.Helper()
	return &serverFamily{servertest.StartFamily(t, cmd), t, map[string]int{}}
}

// next waits for the next report of kind (skipping other lines) and
// returns its pid and the rest.
func (f *serverFamily) next(kind string) (pid int, rest string) {
	f.t.Helper()
	f.seen[kind]++
	re := regexp.MustCompile(`(?m)^(\d+) ` + regexp.QuoteMeta(kind) + ` ?(.*)$`)
	m := f.WaitLine(f.t, re, f.seen[kind], 20*time.Second)
	pid, _ = strconv.Atoi(m[1])
	if kind == "listening on" {
		f.Add(pid)
	}
	return pid, m[2]
}

// waitFirst waits for the first process to exit and checks its status.
func (f *serverFamily) waitFirst() {
	f.t.Helper()
	recv(f.t, f.Exited, "the first server to exit")
	if !f.First.ProcessState.Success() {
		f.t.Fatalf("first server: %v", f.First.ProcessState)
	}
}

// load runs clients that connect, echo a message and close, until stop;
// it counts each outcome.
type load struct {
	ok   atomic.Int64
	mu   sync.Mutex
	errs []loadError
	stop func() // stops the clients and waits for them; also when the test ends
}

// loadError is a client that failed, and when its connection was made
// (zero: it was not).
type loadError struct {
	connected time.Time
	err       error
}

func startLoad(t *testing.T, addr string, clients int) *load {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	l := &load{stop: sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})}
	t.Cleanup(l.stop)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var connected time.Time
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err == nil {
					connected = time.Now()
					err = echoOnce(c, fmt.Sprintf("client %d message %d", i, n))
					c.Close()
				}
				if err != nil {
					l.mu.Lock()
					l.errs = append(l.errs, loadError{connected, err})
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

// check fails the test for every client that failed, but those a shutdown
// begun at stopped may fail: refused once the sockets are closed, or reset
// when the kernel completed the handshake after the last accept, in the
// instant before the socket closed. A connection made before the shutdown
// was queued or served, and must get its echo. A zero stopped allows
// nothing.
func (l *load) check(t testing.TB, stopped time.Time) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	refused, reset := 0, 0
	for _, e := range l.errs {
		late := !stopped.IsZero() && (e.connected.IsZero() || e.connected.After(stopped))
		switch {
		case late && errors.Is(e.err, syscall.ECONNREFUSED):
			refused++
		case late && errors.Is(e.err, syscall.ECONNRESET):
			reset++
		default:
			t.Errorf("client connected at %v (shutdown at %v) failed: %v",
				e.connected.Format(time.StampMicro), stopped.Format(time.StampMicro), e.err)
		}
	}
	t.Logf("%d clients served, %d refused and %d reset after the shutdown began", l.ok.Load(), refused, reset)
}

// TestServerUpgrade: under load, Upgrade hands the sockets to a new
// process; no client is refused, reset or loses its echo, the old process
// drains and exits 0, and the new one serves until SIGTERM.
func TestServerUpgrade(t *testing.T) {
	f := startServerFamily(t, helperCommand("server", "EVL_SERVER_LOOPS=2"))
	oldPid, addr := f.next("listening on")
	l := startLoad(t, addr, 8)
	waitFor(t, "load on the old process", func() bool { return l.ok.Load() >= 100 })
	f.First.Process.Signal(syscall.SIGHUP)
	newPid, _ := f.next("listening on")
	if pid, err := f.next("upgrade:"); pid != oldPid || err != "<nil>" {
		t.Fatalf("pid %d: upgrade: %s; want pid %d: <nil>", pid, err, oldPid)
	}
	if _, succ := f.next("successor"); succ != strconv.Itoa(newPid) {
		t.Errorf("Successor = %s, want the new process %d", succ, newPid)
	}
	if pid, res := f.next("served:"); pid != oldPid || !strings.HasPrefix(res, ErrServerClosed.Error()) {
		t.Fatalf("pid %d served: %s; want the old process %d closed", pid, res, oldPid)
	}
	f.waitFirst()
	// The new process serves alone now.
	before := l.ok.Load()
	waitFor(t, "load on the new process", func() bool { return l.ok.Load() >= before+100 })
	l.stop()
	l.check(t, time.Time{})
	syscall.Kill(newPid, syscall.SIGTERM)
	if pid, res := f.next("shutdown:"); pid != newPid || res != "<nil>" {
		t.Errorf("pid %d: shutdown: %s", pid, res)
	}
	t.Logf("%d clients served across the upgrade", l.ok.Load())
}

// TestServerShutdownDuringUpgrade: SIGTERM while the new process is not
// ready yet stops it; Upgrade reports why, the old process serves what is
// queued and exits 0, and nothing is refused meanwhile.
func TestServerShutdownDuringUpgrade(t *testing.T) {
	cmd := helperCommand("server", "EVL_SERVER_STALL=1")
	f := startServerFamily(t, cmd)
	_, addr := f.next("listening on")
	l := startLoad(t, addr, 4)
	waitFor(t, "load", func() bool { return l.ok.Load() >= 50 })
	cmd.Process.Signal(syscall.SIGHUP)
	// The new process is started, holds the sockets, and stalls.
	waitFor(t, "the new process", func() bool { return childOf(cmd.Process.Pid) != 0 })
	child := childOf(cmd.Process.Pid)
	// A second SIGHUP: the helper asks Upgrading, which names the new
	// process that the upgrade's report names below.
	cmd.Process.Signal(syscall.SIGHUP)
	_, upgrading := f.next("upgrading")
	before := l.ok.Load()
	waitFor(t, "load during the pending upgrade", func() bool { return l.ok.Load() >= before+50 })
	termAt := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	if _, res := f.next("upgrade:"); !strings.Contains(res, "shutting down") {
		t.Errorf("upgrade: %s; want it stopped for the shutdown", res)
	} else if !strings.Contains(res, "pid "+upgrading+" ") || upgrading == "0" {
		t.Errorf("Upgrading = %s during the upgrade that ended with %q", upgrading, res)
	}
	if _, res := f.next("shutdown:"); res != "<nil>" {
		t.Errorf("shutdown: %s", res)
	}
	l.stop()
	f.waitFirst()
	if err := syscall.Kill(child, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the new process %d is still there: kill 0: %v", child, err)
	}
	l.check(t, termAt)
}

// TestServerUpgradeNotReady: a new process not ready in time is stopped;
// Upgrade says why and the old process serves on, its sockets open.
func TestServerUpgradeNotReady(t *testing.T) {
	cmd := helperCommand("server", "EVL_SERVER_STALL=1", "EVL_SERVER_UPGRADE_TIMEOUT=200ms")
	f := startServerFamily(t, cmd)
	_, addr := f.next("listening on")
	cmd.Process.Signal(syscall.SIGHUP)
	_, res := f.next("upgrade:")
	m := regexp.MustCompile(`pid (\d+) not ready within 200ms`).FindStringSubmatch(res)
	if m == nil {
		t.Fatalf("upgrade: %s; want it not ready in time", res)
	}
	child, _ := strconv.Atoi(m[1])
	if err := syscall.Kill(child, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the new process %d is still there: kill 0: %v", child, err)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("the old process no longer serves: %v", err)
	}
	mustEcho(t, c, "served on")
	c.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	if _, res := f.next("served:"); !strings.HasPrefix(res, ErrServerClosed.Error()) {
		t.Errorf("served: %s", res)
	}
	f.waitFirst()
}

// childOf returns the pid of a child process of pid, or 0. Any of its
// threads may have started it.
func childOf(pid int) int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if fields := strings.Fields(string(data)); len(fields) > 0 {
			n, _ := strconv.Atoi(fields[0])
			return n
		}
	}
	return 0
}

// TestServerSocketActivation: under systemd's LISTEN_FDS and LISTEN_PID
// the Server serves the sockets it was given, with the connections already
// queued in their backlogs, and binds nothing.
func TestServerSocketActivation(t *testing.T) {
	var files []*os.File
	var addrs []string
	var queued []net.Conn
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		addrs = append(addrs, ln.Addr().String())
		c := dial(t, ln.Addr())
		io.WriteString(c, "queued")
		queued = append(queued, c)
	}
	cmd := adoptCommand("server", files, "EVL_LISTEN_PID_SELF=1", "LISTEN_FDS=2")
	f := startServerFamily(t, cmd)
	for _, file := range files {
		file.Close()
	}
	pid, addr := f.next("listening on")
	if addr != addrs[0] {
		t.Errorf("listening on %s, want the inherited %s (and not its own 127.0.0.1:0)", addr, addrs[0])
	}
	for _, c := range queued {
		echoedQueued(t, c)
	}
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		mustEcho(t, c, "activated")
		c.Close()
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if _, res := f.next("served:"); !strings.Contains(res, "Accepted:4 ") {
		t.Errorf("served: %s; want 4 accepted", res)
	}
	f.waitFirst()
}

// pooledServers are a Server of each kind that accepts into objects made
// in C, echoing what arrives and closing at the client's end, with onAccept
// (may be nil) run for each connection.
func pooledServers(onAccept func()) []pooledServer {
	ev := &EventOptions{
		OnAccept: func(*Listener, *Event) {
			if onAccept != nil {
				onAccept()
			}
		},
		OnEvent: func(ev *Event, fd int, what Events) {
			echoEvent(make([]byte, 512))(ev, fd, what) // the loops read at once: a buffer each
		},
	}
	bev := &BufferEventOptions{
		OnAccept: func(*Listener, *BufferEvent) {
			if onAccept != nil {
				onAccept()
			}
		},
		OnRead: func(be *BufferEvent) { be.EchoInput() },
		OnEvent: func(be *BufferEvent, what BEVEvent, _ error) {
			if what&(BEVEventEOF|BEVEventError|BEVEventTimeout) != 0 {
				be.Close()
			}
		},
	}
	return []pooledServer{{name: "events", ev: ev}, {name: "buffer events", bev: bev}}
}

// serverKinds is an echo Server of each way of serving a connection: a
// Handler, Events and BufferEvents, with onAccept (may be nil) run for each
// connection.
func serverKinds(onAccept func()) []pooledServer {
	h := echoConn
	if onAccept != nil {
		h = func(c Conn) {
			onAccept()
			echoConn(c)
		}
	}
	return append([]pooledServer{{name: "handler", h: h}}, pooledServers(onAccept)...)
}

type pooledServer struct {
	name string
	h    ConnFunc
	ev   *EventOptions
	bev  *BufferEventOptions
}

// server returns s serving with the handler or options.
func (p pooledServer) server(s *Server) *Server {
	s.Handler, s.Events, s.BufferEvents = p.h, p.ev, p.bev
	return s
}

// serve is serve(t, p.server(s)).
func (p pooledServer) serve(t *testing.T, s *Server) (*Server, net.Addr, <-chan error) {
	t.Helper()
	addr, served := serve(t, p.server(s))
	return s, addr, served
}

// TestServerMaxConns: with MaxConns across two loops, no more connections
// are open at once than the bound, whichever way the Server serves them
// (accepting into events or buffer events made in C, it counts each
// connection from its OnAccept to its Close); the others wait in the
// backlog and are served in turn as connections end: none is refused.
func TestServerMaxConns(t *testing.T) {
	const maxConns, clients = 4, 16
	var peak atomic.Int64
	var current *Server
	for _, tc := range serverKinds(func() {
		if open := int64(current.Stats().Open); open > peak.Load() {
			peak.Store(open)
		}
	}) {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			peak.Store(0)
			s := tc.server(&Server{Loops: 2, MaxConns: maxConns})
			current = s // before the loops start, which read it
			addr, _ := serve(t, s)
			echoed := make(chan net.Conn, clients)
			for i := range clients {
				c := dial(t, addr)
				go func() {
					if err := echoOnce(c, fmt.Sprintf("client %02d", i)); err != nil {
						t.Errorf("client %d: %v", i, err)
						c.Close()
					}
					echoed <- c
				}()
			}
			for range clients {
				// Ending a served connection lets a waiting one in.
				recv(t, echoed, "the next client served").Close()
			}
			waitFor(t, "every connection closed", func() bool { return s.Stats().Open == 0 })
			st := s.Stats()
			if p := peak.Load(); p > maxConns {
				t.Errorf("%d connections open at once, want at most %d", p, maxConns)
			}
			if st.Accepted != clients || st.Closed != clients || st.AtLimit == 0 || st.AcceptErrors != 0 {
				t.Errorf("Stats = %+v, want %d accepted and closed, at the limit at least once", st, clients)
			}
		})
	}
}

// TestServerOnLoopStart: OnLoopStart runs once per loop, with the loop's
// base, before the loop accepts.
func TestServerOnLoopStart(t *testing.T) {
	checkNoLeaks(t)
	var started []*Base
	var mu sync.Mutex
	seen := map[*Base]bool{}
	s := &Server{Loops: 3, OnLoopStart: func(b *Base) { started = append(started, b) }, Handler: func(c Conn) {
		mu.Lock()
		seen[c.Base] = true
		mu.Unlock()
		echoConn(c)
	}}
	addr, _ := serve(t, s)
	if len(started) != 3 || started[0] == started[1] || started[1] == started[2] || started[0] == started[2] {
		t.Fatalf("OnLoopStart ran with %v, want the 3 loops' bases", started)
	}
	for range 20 {
		c := dial(t, addr)
		mustEcho(t, c, "x")
		c.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	for b := range seen {
		if b != started[0] && b != started[1] && b != started[2] {
			t.Errorf("a connection on base %p, which OnLoopStart was not given", b)
		}
	}
}

// TestServerPooledAllocs: through the Server, a connection accepted into
// an object made in C allocates nothing, at the limit and back: the count
// and the limit run in one OnAccept and one end func per loop.
func TestServerPooledAllocs(t *testing.T) {
	for _, tc := range pooledServers(nil) {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			s := tc.server(&Server{Addr: "127.0.0.1:0", MaxConns: 1})
			closeAtOnce := func(l *Listener, ev *Event) { ev.Close() }
			if s.Events != nil {
				o := *s.Events
				o.OnAccept = closeAtOnce
				s.Events = &o
			} else {
				o := *s.BufferEvents
				o.OnAccept = func(l *Listener, be *BufferEvent) { be.Close() }
				s.BufferEvents = &o
			}
			wantNoConnAllocs(t, s, func(lp *serverLoop, fd int, _ net.Addr) error { return benchAcceptDup(lp.ln, fd, 1) })
		})
	}
}

// TestServerLoopKeepsRunning: a loop with nothing for libevent to wait for
// (its listener paused at the limit, its one connection held by the
// Handler without an event) keeps running until the connection ends and
// the next client comes in: only Shutdown and Close end a loop.
func TestServerLoopKeepsRunning(t *testing.T) {
	checkNoLeaks(t)
	held := make(chan Conn, 2)
	s := &Server{Loops: 1, MaxConns: 1, Handler: func(c Conn) { held <- c }}
	addr, served := serve(t, s)
	dial(t, addr)
	first := recv(t, held, "the first connection")
	waitFor(t, "the listener paused at the limit", func() bool { return s.Stats().AtLimit == 1 })
	second := dial(t, addr)
	stillQueued(t, second)
	select {
	case err := <-served:
		t.Fatalf("Serve returned with the loop idle: %v", err)
	default:
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	recv(t, held, "the second connection").Close()
}
