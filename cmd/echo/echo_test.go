package main

// These tests build the echo binary once and drive it over loopback TCP, as
// a user would: every behaviour of the command line is checked from outside
// the process.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

var echoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "echo-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	echoBin = filepath.Join(dir, "echo")
	// go test puts its own go first on PATH.
	build := exec.Command("go", append(append([]string{"build"}, echoBuildFlags...), "-o", echoBin, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building echo:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var engines = []string{"event", "bufferevent"}

// forEachEngine runs test once per -engine.
func forEachEngine(t *testing.T, test func(t *testing.T, engine string)) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) { test(t, engine) })
	}
}

// echoProc is a running echo server.
type echoProc struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
	mu     sync.Mutex
	log    strings.Builder // its stderr
}

// startEcho runs the binary with args and port 0 and waits for its
// listening line.
func startEcho(t testing.TB, args ...string) *echoProc {
	t.Helper()
	p := &echoProc{cmd: exec.Command(echoBin, append(args, "0")...), exited: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if a, ok := strings.CutPrefix(line, "echo: listening on "); ok {
				addrc <- a
			}
		}
		p.cmd.Wait() // after the last read of the pipe, as Wait requires
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("echo %v stderr:\n%s", args, p.stderrText())
		}
	})
	select {
	case p.addr = <-addrc:
	case <-p.exited:
		t.Fatalf("echo %v exited before listening: %v\n%s", args, p.cmd.ProcessState, p.stderrText())
	case <-time.After(10 * time.Second):
		t.Fatalf("echo %v printed no listening line", args)
	}
	return p
}

func (p *echoProc) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// stop sends sig and checks that the server exits with status 0, having
// closed every connection and freed everything within a second. The second
// is checked on the time the server reports for its shutdown; the time seen
// from here, which adds signal delivery, the checks at exit of an
// instrumented build (exitCheckTime) and the scheduling of two processes on
// a machine the other tests keep busy, only has to stay under 5 s more.
func (p *echoProc) stop(t testing.TB, sig os.Signal) (conns int) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(5*time.Second + exitCheckTime):
		t.Fatalf("echo did not exit within %v of %v", 5*time.Second+exitCheckTime, sig)
	}
	seen := time.Since(start)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status after %v: %d, want 0", sig, code)
	}
	var took time.Duration
	var d string
	for _, line := range strings.Split(p.stderrText(), "\n") {
		if _, err := fmt.Sscanf(line, "echo: "+sig.String()+": closed %d connections and stopped in %s", &conns, &d); err == nil {
			took, _ = time.ParseDuration(d)
		}
	}
	if took == 0 {
		t.Fatalf("no shutdown report after %v in:\n%s", sig, p.stderrText())
	}
	if took > time.Second {
		t.Errorf("shutdown took %v, want < 1 s", took)
	}
	t.Logf("%v: %d connections closed; shutdown %v, exit seen after %v", sig, conns, took, seen)
	return conns
}

func (p *echoProc) dial(t testing.TB) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// rss reads the server's resident set size from /proc/PID/status.
func (p *echoProc) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

func (p *echoProc) openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBadArguments(t *testing.T) {
	port := freePort(t)
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
		{[]string{"-no-such-flag", port}, "no-such-flag"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cmd := exec.Command(echoBin, tc.args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Fatal("echo did not exit")
			}
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, stderr.String())
			}
			// One rule for every bad argument: the error and a pointer
			// to -h, not the whole usage.
			if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n") + 1; lines != 2 {
				t.Errorf("stderr has %d lines, want the error and the usage line:\n%s", lines, stderr.String())
			}
			if strings.Contains(stderr.String(), "listening") {
				t.Errorf("it listened:\n%s", stderr.String())
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

// freePort returns a port that nothing listens on now.
func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
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
		fds := p.openFDs(t)
		const clients, size = 16, 4 << 20
		errs := make(chan error, clients)
		for i := 0; i < clients; i++ {
			c := p.dial(t)
			go func() { errs <- echoStream(c, uint64(i), size) }()
		}
		for i := 0; i < clients; i++ {
			if err := <-errs; err != nil {
				t.Errorf("client: %v", err)
			}
		}
		// The server closed every connection once its echo was out: its
		// descriptors are back where they were.
		waitFor(t, 5*time.Second, "the server's fds back to baseline", func() bool { return p.openFDs(t) <= fds })
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
		c := p.dial(t)
		base, err := p.rss()
		if err != nil {
			t.Fatal(err)
		}
		var peak atomic.Int64
		stopSampling := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				rss, err := p.rss()
				if err != nil {
					t.Error(err)
					return
				}
				peak.Store(max(peak.Load(), rss))
				select {
				case <-stopSampling:
					return
				case <-tick.C:
				}
			}
		}()

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
		waitFor(t, 20*time.Second, "the writer to stall", func() bool {
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
		<-sampled
		if grow := peak.Load() - base; grow > maxGrow {
			t.Errorf("server RSS grew by %d MiB, want < %d MiB", grow>>20, maxGrow>>20)
		}
		t.Logf("stalled after %d MiB; server RSS %d MiB at start, peak %d MiB", last>>20, base>>20, peak.Load()>>20)
		p.stop(t, syscall.SIGTERM)
	})
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
			conns[i] = p.dial(t)
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
		quiet, busy, slow := p.dial(t), p.dial(t), p.dial(t)
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

		if err := recv(t, busyDone, "the busy client"); err != nil {
			t.Errorf("busy client: %v", err)
		}
		if err := recv(t, slowDone, "the slow client"); err != nil {
			t.Errorf("slow client: %v", err)
		}
		switch d := recv(t, quietClosed, "the quiet client"); {
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

// recv waits for a value on ch for up to 30 s.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// listeners counts the TCP sockets listening on port, from /proc/net.
func listeners(t *testing.T, port int) int {
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			// local_address is HEXIP:HEXPORT, st 0A is LISTEN.
			if len(fields) > 3 && fields[3] == "0A" && strings.HasSuffix(fields[1], fmt.Sprintf(":%04X", port)) {
				n++
			}
		}
	}
	return n
}

func TestLoops(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		p := startEcho(t, "-engine", engine, "-loops", "2", "-max-conns", "64")
		_, portStr, _ := net.SplitHostPort(p.addr)
		port, _ := strconv.Atoi(portStr)
		if n := listeners(t, port); n != 2 {
			t.Fatalf("%d sockets listen on port %d, want 2 (one per loop)", n, port)
		}
		const clients = 32
		errs := make(chan error, clients)
		for i := 0; i < clients; i++ {
			c := p.dial(t)
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
			c := p.dial(t)
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
		waitFor(t, 10*time.Second, "load", func() bool { return echoed.Load() >= 2000 })
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
		setSoftNofile(t, p.cmd.Process.Pid, uint64(p.openFDs(t)+room))
		conns := make([]*net.TCPConn, clients)
		for i := range conns {
			conns[i] = p.dial(t)
			if i < room {
				if err := echoByte(conns[i], byte(i), 5*time.Second); err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
			}
		}
		waitFor(t, 5*time.Second, "the server to report the shortage", func() bool {
			return strings.Contains(p.stderrText(), "too many open files")
		})
		// The server backs off and keeps running; as clients leave, the
		// ones waiting are served.
		for i := room; i < clients; i++ {
			conns[i-room].Close()
			if err := echoByte(conns[i], byte(i), 5*time.Second); err != nil {
				t.Fatalf("client %d after client %d left: %v", i, i-room, err)
			}
		}
		if n := strings.Count(p.stderrText(), "too many open files"); n > 20 {
			t.Errorf("%d shortage messages: the listener did not back off", n)
		}
		p.stop(t, syscall.SIGTERM)
	})
}

// listeningFD finds the descriptor number, in process pid, of the TCP socket
// listening on port: its inode from /proc/net/tcp, then the fd that links
// to it.
func listeningFD(t *testing.T, pid, port int) int {
	t.Helper()
	inode := ""
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 9 && fields[3] == "0A" && strings.HasSuffix(fields[1], fmt.Sprintf(":%04X", port)) {
				inode = fields[9]
			}
		}
	}
	if inode == "" {
		t.Fatalf("no socket listens on port %d", port)
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if link, _ := os.Readlink(filepath.Join(dir, e.Name())); link == "socket:["+inode+"]" {
			fd, _ := strconv.Atoi(e.Name())
			return fd
		}
	}
	t.Fatalf("process %d has no fd for socket inode %s", pid, inode)
	return -1
}

// TestAcceptErrorEndsServer: an accept error that is not a resource
// shortage stops the server with a message and status 1. Shutting the
// listening socket down (through a duplicate taken with pidfd_getfd) makes
// accept fail with EINVAL.
func TestAcceptErrorEndsServer(t *testing.T) {
	const sysPidfdOpen, sysPidfdGetfd = 434, 438 // the same on every Linux architecture
	forEachEngine(t, func(t *testing.T, engine string) {
		p := startEcho(t, "-engine", engine)
		c := p.dial(t)
		if err := echoByte(c, 'a', 5*time.Second); err != nil {
			t.Fatal(err)
		}
		_, portStr, _ := net.SplitHostPort(p.addr)
		port, _ := strconv.Atoi(portStr)
		lfd := listeningFD(t, p.cmd.Process.Pid, port)
		pidfd, _, e := syscall.Syscall(sysPidfdOpen, uintptr(p.cmd.Process.Pid), 0, 0)
		if e != 0 {
			t.Fatal(os.NewSyscallError("pidfd_open", e))
		}
		defer syscall.Close(int(pidfd))
		dup, _, e := syscall.Syscall(sysPidfdGetfd, pidfd, uintptr(lfd), 0)
		if e != 0 {
			t.Fatal(os.NewSyscallError("pidfd_getfd", e))
		}
		defer syscall.Close(int(dup))
		if err := syscall.Shutdown(int(dup), syscall.SHUT_RD); err != nil {
			t.Fatal(os.NewSyscallError("shutdown", err))
		}
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Fatal("the server kept running after a fatal accept error")
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		if msg := p.stderrText(); !strings.Contains(msg, "accept") || !strings.Contains(msg, "invalid argument") {
			t.Errorf("stderr does not report the accept error:\n%s", msg)
		}
	})
}
