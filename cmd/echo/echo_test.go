package main

// These tests build the echo binary once and drive it over loopback TCP, as
// a user would: every behaviour of the command line is checked from outside
// the process.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/evlistener/evlistener/internal/servertest"
)

var echoBin string

func TestMain(m *testing.M) { servertest.Main(m, "echo", &echoBin) }

var engines = []string{"event", "bufferevent"}

// forEachEngine runs test once per -engine.
func forEachEngine(t *testing.T, test func(t *testing.T, engine string)) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) { test(t, engine) })
	}
}

// echoProc is a running echo server.
type echoProc struct{ *servertest.Process }

// startEcho runs the binary with args and port 0 and waits for its
// listening line.
func startEcho(t testing.TB, args ...string) *echoProc {
	t.Helper()
	return &echoProc{servertest.Start(t, echoBin, "echo", args...)}
}

// stop sends sig and checks that the server exits with status 0, having
// closed every connection and freed everything within a second. The second
// is checked on the time the server reports for its shutdown; the time seen
// from here, which adds signal delivery, the checks at exit of an
// instrumented build (servertest.ExitCheckTime) and the scheduling of two
// processes on a machine the other tests keep busy, only has to stay under
// 5 s more.
func (p *echoProc) stop(t testing.TB, sig os.Signal) (conns int) {
	t.Helper()
	start := time.Now()
	conns, took := p.Stop(t, sig, 5*time.Second+servertest.ExitCheckTime, "closed %d connections and stopped in %s")
	seen := time.Since(start)
	if took > time.Second {
		t.Errorf("shutdown took %v, want < 1 s", took)
	}
	t.Logf("%v: %d connections closed; shutdown %v, exit seen after %v", sig, conns, took, seen)
	return conns
}

func TestBadArguments(t *testing.T) {
	port := servertest.FreePort(t)
	for _, tc := range []struct {
		args []string
		want string // in the message on stderr
	}{
		{[]string{"-1"}, "0 to 65535"},
		{[]string{"65536"}, "0 to 65535"},
		{[]string{"99999999999999999999"}, "0 to 65535"},
		{[]string{"http"}, "0 to 65535"},
		{[]string{"9876x"}, "0 to 65535"},
		{[]string{port, "extra"}, "0 to 65535"},
		{[]string{"1", "2", "3"}, "0 to 65535"},
		{[]string{"-engine", "threads", port}, "event or bufferevent"},
		{[]string{"-loops", "0", port}, "-loops"},
		{[]string{"-loops", "3", "-max-conns", "2", port}, "-max-conns"},
		{[]string{"-max-conns", "-1", port}, "-max-conns"},
		{[]string{"-max-conns", "0", port}, "-max-conns"},
		{[]string{"-idle", "soon", port}, "-idle"},
		{[]string{"-loops", "two", port}, "-loops"},
		{[]string{"-max-pending", "0", port}, "-max-pending"},
		{[]string{"-idle", "-1s", port}, "-idle"},
		{[]string{"-busy-poll", "-1us", port}, "-busy-poll"},
		{[]string{"-busy-poll", "2s", port}, "-busy-poll"},
		{[]string{"-busy-poll-budget", "-0.5", port}, "-busy-poll-budget"},
		{[]string{"-busy-poll-budget", "NaN", port}, "-busy-poll-budget"},
		{[]string{"-busy-poll-budget", "lots", port}, "-busy-poll-budget"},
		{[]string{"-no-such-flag", port}, "no-such-flag"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stderr := servertest.Run(t, echoBin, "echo", tc.args...)
			if code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, stderr)
			}
			// One rule for every bad argument: the error and a pointer
			// to -h, not the whole usage.
			if lines := strings.Count(strings.TrimSpace(stderr), "\n") + 1; lines != 2 {
				t.Errorf("stderr has %d lines, want the error and the usage line:\n%s", lines, stderr)
			}
			if strings.Contains(stderr, "listening") {
				t.Errorf("it listened:\n%s", stderr)
			}
			// Nothing was bound: the port is still free.
			ln, err := net.Listen("tcp", "127.0.0.1:"+port)
			if err != nil {
				t.Fatalf("port %s no longer free: %v", port, err)
			}
			ln.Close()
		})
	}
}

// castagnoli is CRC-32C, computed in hardware: the race detector does not
// slow it down.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// noise is random bytes that streams take their chunks from.
var noise = func() []byte {
	b := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b
}()

// stream writes total bytes to w: chunks of random size, each from a random
// place in noise, so that a lost, repeated or reordered chunk changes the
// CRC-32C it returns.
func stream(w io.Writer, seed uint64, total int64, sent *atomic.Int64) (uint64, error) {
	const maxChunk = 64 << 10
	rng := rand.New(rand.NewPCG(seed, seed))
	crc := crc32.New(castagnoli)
	for left := total; left > 0; {
		n := min(int64(1+rng.IntN(maxChunk)), left)
		off := rng.IntN(len(noise) - maxChunk)
		p := noise[off : off+int(n)]
		crc.Write(p)
		if _, err := w.Write(p); err != nil {
			return 0, err
		}
		left -= n
		if sent != nil {
			sent.Add(n)
		}
	}
	return uint64(crc.Sum32()), nil
}

// readCRC reads r to EOF and returns the CRC-32C and length of what it read.
func readCRC(r io.Reader) (uint64, int64, error) {
	crc := crc32.New(castagnoli)
	n, err := io.Copy(crc, r)
	return uint64(crc.Sum32()), n, err
}

// echoStream sends total random bytes on c while reading the echo, then
// half-closes, and checks that exactly the same bytes came back.
func echoStream(c *net.TCPConn, seed uint64, total int64) error {
	c.SetDeadline(time.Now().Add(60 * time.Second))
	type result struct {
		crc uint64
		err error
	}
	wrote := make(chan result, 1)
	go func() {
		crc, err := stream(c, seed, total, nil)
		if err == nil {
			err = c.CloseWrite()
		}
		wrote <- result{crc, err}
	}()
	got, n, err := readCRC(c)
	w := <-wrote
	switch {
	case w.err != nil:
		return fmt.Errorf("write: %w", w.err)
	case err != nil:
		return fmt.Errorf("read after %d bytes: %w", n, err)
	case n != total:
		return fmt.Errorf("echoed %d bytes, sent %d", n, total)
	case got != w.crc:
		return errors.New("echo differs from what was sent")
	}
	return nil
}

func TestEcho(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		p := startEcho(t, "-engine", engine)
		fds := p.OpenFDs(t)
		const clients, size = 16, 4 << 20
		errs := make(chan error, clients)
		for i := 0; i < clients; i++ {
			c := p.Dial(t)
			go func() { errs <- echoStream(c, uint64(i), size) }()
		}
		for i := 0; i < clients; i++ {
			if err := <-errs; err != nil {
				t.Errorf("client: %v", err)
			}
		}
		// The server closed every connection once its echo was out: its
		// descriptors are back where they were.
		servertest.WaitFor(t, 5*time.Second, "the server's fds back to baseline", func() bool { return p.OpenFDs(t) <= fds })
		p.stop(t, syscall.SIGINT)
	})
}

func TestClientThatDoesNotRead(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		const (
			total    = 256 << 20
			maxGrow  = 64 << 20
			maxStall = 64 << 20
		)
		p := startEcho(t, "-engine", engine, "-max-pending", strconv.Itoa(1<<20))
		c := p.Dial(t)
		base, err := p.RSS()
		if err != nil {
			t.Fatal(err)
		}
		stopSampling := make(chan struct{})
		peakc := p.SampleRSS(t, stopSampling)

		var sent atomic.Int64
		wrote := make(chan uint64, 1)
		c.SetDeadline(time.Now().Add(60 * time.Second))
		go func() {
			crc, err := stream(c, 42, total, &sent)
			if err != nil {
				t.Errorf("write after %d bytes: %v", sent.Load(), err)
			}
			c.CloseWrite()
			wrote <- crc
		}()
		// The server stops reading: the writer stalls with the socket
		// buffers and at most -max-pending in the server.
		last, since := int64(-1), time.Now()
		servertest.WaitFor(t, 20*time.Second, "the writer to stall", func() bool {
			if n := sent.Load(); n != last {
				last, since = n, time.Now()
			}
			return time.Since(since) > 300*time.Millisecond
		})
		if last >= maxStall {
			t.Errorf("the client wrote %d MiB without reading before it stalled, want < %d MiB", last>>20, maxStall>>20)
		}
		// Then the client reads: everything comes back, in order.
		got, n, err := readCRC(c)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", n, err)
		}
		if want := <-wrote; n != total || got != want {
			t.Fatalf("echoed %d bytes (same CRC: %v), sent %d", n, got == want, total)
		}
		close(stopSampling)
		peak := <-peakc
		if grow := peak - base; grow > maxGrow {
			t.Errorf("server RSS grew by %d MiB, want < %d MiB", grow>>20, maxGrow>>20)
		}
		t.Logf("stalled after %d MiB; server RSS %d MiB at start, peak %d MiB", last>>20, base>>20, peak>>20)
		p.stop(t, syscall.SIGTERM)
	})
}

// TestBusyPollBudget: -busy-poll-budget reaches the loops. With no budget
// the loop polls for the whole -busy-poll window after one echo, a second
// of CPU time; with the default budget one echo earns microseconds of it.
func TestBusyPollBudget(t *testing.T) {
	p := startEcho(t, "-busy-poll", "1s", "-busy-poll-budget", "inf")
	c := p.Dial(t)
	if err := echoByte(c, 'x', 5*time.Second); err != nil {
		t.Fatal(err)
	}
	before, err := p.CPUTime()
	if err != nil {
		t.Fatal(err)
	}
	servertest.WaitFor(t, 5*time.Second, "the loop to poll for 200 ms of CPU time after one echo", func() bool {
		now, err := p.CPUTime()
		return err == nil && now-before >= 200*time.Millisecond
	})
	p.stop(t, syscall.SIGTERM)
}

// echoByte writes b on c and reads it back within d.
func echoByte(c net.Conn, b byte, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte{b}); err != nil {
		return err
	}
	got := make([]byte, 1)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if got[0] != b {
		return fmt.Errorf("echo %q, want %q", got[0], b)
	}
	return nil
}

func TestMaxConns(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		const limit, clients = 4, 10
		p := startEcho(t, "-engine", engine, "-max-conns", strconv.Itoa(limit))
		conns := make([]*net.TCPConn, clients)
		for i := range conns {
			conns[i] = p.Dial(t)
			if i < limit {
				if err := echoByte(conns[i], byte(i), 5*time.Second); err != nil {
					t.Fatalf("client %d of %d: %v", i, limit, err)
				}
			}
		}
		// The others are connected (in the backlog) but not served: each
		// sends a byte, and its echo is the sign that it is served.
		served := make(chan int, clients)
		for i := limit; i < clients; i++ {
			c := conns[i]
			if _, err := c.Write([]byte{byte(i)}); err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
			go func() {
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err == nil && b[0] == byte(i) {
					served <- i
				}
			}()
		}
		notServed := func(what string) {
			t.Helper()
			select {
			case i := <-served:
				t.Fatalf("client %d served %s", i, what)
			case <-time.After(200 * time.Millisecond):
			}
		}
		notServed("while the server was at -max-conns")
		// Each client that leaves lets the next one in, in the order they
		// came.
		for i := limit; i < clients; i++ {
			conns[i-limit].Close()
			select {
			case got := <-served:
				if got != i {
					t.Fatalf("client %d served when client %d left, want client %d", got, i-limit, i)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("client %d not served after client %d left", i, i-limit)
			}
			if i+1 < clients {
				notServed("beyond -max-conns")
			}
		}
		for i := clients - limit; i < clients; i++ {
			if err := echoByte(conns[i], 'x', 5*time.Second); err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
		}
		p.stop(t, syscall.SIGTERM)
	})
}

func TestIdle(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		const idle = time.Second
		// A large -max-pending keeps the slow reader's echo in the server
		// with reading still enabled.
		p := startEcho(t, "-engine", engine, "-idle", idle.String(), "-max-pending", strconv.Itoa(64<<20))
		// The server's idle timer starts when it accepts, which may be
		// before a later dial returns: time the quiet client from before
		// its own dial.
		start := time.Now()
		quiet, busy, slow := p.Dial(t), p.Dial(t), p.Dial(t)
		active := 2 * idle // how long busy and slow keep going

		// The quiet client does nothing: it is closed after the period.
		quietClosed := make(chan time.Duration, 1)
		go func() {
			quiet.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := quiet.Read(make([]byte, 1))
			if n == 0 && err == io.EOF {
				quietClosed <- time.Since(start)
			} else {
				quietClosed <- -1
			}
		}()

		// The busy client talks more often than the period: it stays open.
		busyDone := make(chan error, 1)
		go func() {
			for time.Since(start) < active {
				if err := echoByte(busy, 'b', 5*time.Second); err != nil {
					busyDone <- fmt.Errorf("after %v: %w", time.Since(start), err)
					return
				}
				time.Sleep(idle / 10) // the client's pace, not synchronisation
			}
			busyDone <- nil
		}()

		// The slow client sends 48 MiB at once, then takes its echo a
		// little at a time: it sends nothing more, but it is not idle. It
		// reads fast enough that the server's socket turns writable well
		// within the period, once a third of its send buffer (at most
		// 4 MiB) has drained.
		const slowTotal = 48 << 20
		wrote := make(chan uint64, 1)
		go func() {
			slow.SetWriteDeadline(time.Now().Add(30 * time.Second))
			crc, err := stream(slow, 7, slowTotal, nil)
			if err != nil {
				t.Errorf("slow client write: %v", err)
			}
			wrote <- crc
		}()
		slowDone := make(chan error, 1)
		go func() {
			crc := crc32.New(castagnoli)
			var read int64
			buf := make([]byte, 256<<10)
			slow.SetReadDeadline(time.Now().Add(30 * time.Second))
			for time.Since(start) < active {
				n, err := io.ReadFull(slow, buf)
				read += int64(n)
				crc.Write(buf[:n])
				if err != nil {
					slowDone <- fmt.Errorf("after %v and %d bytes: %w", time.Since(start), read, err)
					return
				}
				time.Sleep(idle / 25) // the client's pace (about 6 MB/s), not synchronisation
			}
			if read >= slowTotal {
				slowDone <- fmt.Errorf("read all %d bytes too soon for the test", read)
				return
			}
			// The rest at full speed: all of the echo arrives.
			n, err := io.CopyN(crc, slow, slowTotal-read)
			if err != nil {
				slowDone <- fmt.Errorf("after %d bytes: %w", read+n, err)
				return
			}
			if uint64(crc.Sum32()) != <-wrote {
				slowDone <- errors.New("echo differs from what was sent")
				return
			}
			slowDone <- nil
		}()

		if err := servertest.Recv(t, busyDone, 30*time.Second, "the busy client"); err != nil {
			t.Errorf("busy client: %v", err)
		}
		if err := servertest.Recv(t, slowDone, 30*time.Second, "the slow client"); err != nil {
			t.Errorf("slow client: %v", err)
		}
		switch d := servertest.Recv(t, quietClosed, 30*time.Second, "the quiet client"); {
		case d < 0:
			t.Error("the quiet client was not closed with EOF")
		// libevent's clock ticks coarsely: allow a few milliseconds early.
		case d < idle-10*time.Millisecond || d > idle+2*time.Second:
			t.Errorf("quiet client closed after %v, want about %v", d, idle)
		}
		// Once quiet, the others are closed too.
		for _, c := range []*net.TCPConn{busy, slow} {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("client after it stopped: %d, %v; want EOF", n, err)
			}
		}
		p.stop(t, syscall.SIGINT)
	})
}

func TestLoops(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		p := startEcho(t, "-engine", engine, "-loops", "2", "-max-conns", "64")
		_, portStr, _ := net.SplitHostPort(p.Addr)
		port, _ := strconv.Atoi(portStr)
		if n := servertest.Listeners(port); n != 2 {
			t.Fatalf("%d sockets listen on port %d, want 2 (one per loop)", n, port)
		}
		const clients = 32
		errs := make(chan error, clients)
		for i := 0; i < clients; i++ {
			c := p.Dial(t)
			go func() { errs <- echoStream(c, uint64(i), 256<<10) }()
		}
		for i := 0; i < clients; i++ {
			if err := <-errs; err != nil {
				t.Errorf("client: %v", err)
			}
		}
		p.stop(t, syscall.SIGTERM)
	})
}

func TestSignalUnderLoad(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		p := startEcho(t, "-engine", engine, "-loops", "2")
		const clients = 50
		var echoed atomic.Int64
		var wg sync.WaitGroup
		for i := 0; i < clients; i++ {
			c := p.Dial(t)
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				msg := make([]byte, 16<<10)
				for {
					if _, err := c.Write(msg); err != nil {
						return
					}
					if _, err := io.ReadFull(c, msg); err != nil {
						return
					}
					echoed.Add(1)
				}
			}()
		}
		servertest.WaitFor(t, 10*time.Second, "load", func() bool { return echoed.Load() >= 2000 })
		if n := p.stop(t, syscall.SIGTERM); n != clients {
			t.Errorf("closed %d connections at shutdown, want %d", n, clients)
		}
		// Every client sees its connection end.
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("clients still connected after the server exited")
		}
	})
}

// setSoftNofile lowers the RLIMIT_NOFILE soft limit of process pid
// (prlimit(2)).
func setSoftNofile(t *testing.T, pid int, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), syscall.RLIMIT_NOFILE, 0, uintptr(unsafe.Pointer(&old)), 0, 0); e != 0 {
		t.Fatal(os.NewSyscallError("prlimit", e))
	}
	lim := syscall.Rlimit{Cur: n, Max: old.Max}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), syscall.RLIMIT_NOFILE, uintptr(unsafe.Pointer(&lim)), 0, 0, 0); e != 0 {
		t.Fatal(os.NewSyscallError("prlimit", e))
	}
}

func TestAcceptShortage(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		const room, clients = 3, 6
		p := startEcho(t, "-engine", engine, "-max-conns", "100")
		// Room for three more descriptors: the fourth accept fails with
		// EMFILE.
		setSoftNofile(t, p.Cmd.Process.Pid, uint64(p.OpenFDs(t)+room))
		conns := make([]*net.TCPConn, clients)
		for i := range conns {
			conns[i] = p.Dial(t)
			if i < room {
				if err := echoByte(conns[i], byte(i), 5*time.Second); err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
			}
		}
		servertest.WaitFor(t, 5*time.Second, "the server to report the shortage", func() bool {
			return strings.Contains(p.Log(), "too many open files")
		})
		// The server backs off and keeps running; as clients leave, the
		// ones waiting are served.
		for i := room; i < clients; i++ {
			conns[i-room].Close()
			if err := echoByte(conns[i], byte(i), 5*time.Second); err != nil {
				t.Fatalf("client %d after client %d left: %v", i, i-room, err)
			}
		}
		if n := strings.Count(p.Log(), "too many open files"); n > 20 {
			t.Errorf("%d shortage messages: the listener did not back off", n)
		}
		p.stop(t, syscall.SIGTERM)
	})
}

// TestAcceptErrorEndsServer: an accept error that is not a resource
// shortage stops the server with a message and status 1. Shutting the
// listening socket down (through a duplicate taken with pidfd_getfd) makes
// accept fail with EINVAL.
func TestAcceptErrorEndsServer(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		p := startEcho(t, "-engine", engine)
		c := p.Dial(t)
		if err := echoByte(c, 'a', 5*time.Second); err != nil {
			t.Fatal(err)
		}
		p.ShutdownListener(t)
		if code := p.Wait(t, 10*time.Second, "a fatal accept error"); code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		if msg := p.Log(); !strings.Contains(msg, "accept") || !strings.Contains(msg, "invalid argument") {
			t.Errorf("stderr does not report the accept error:\n%s", msg)
		}
	})
}
