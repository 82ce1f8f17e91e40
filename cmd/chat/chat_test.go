package main

// These tests build the chat binary once and drive it over loopback TCP, as
// users would: every behaviour is checked from outside the process.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/evlistener/evlistener/internal/servertest"
)

var chatBin string

func TestMain(m *testing.M) { servertest.Main(m, "chat", &chatBin) }

// chatProc is a running chat server.
type chatProc struct{ *servertest.Process }

// startChat runs the binary with args and port 0 and waits for its
// listening line.
func startChat(t testing.TB, args ...string) *chatProc {
	t.Helper()
	return &chatProc{servertest.Start(t, chatBin, "chat", args...)}
}

// stop sends sig and checks that the server exits with status 0 and
// reports its shutdown; it returns the connections it reported and the
// time it took by its own account. The time seen from here adds signal
// delivery, the checks at exit of an instrumented build and the scheduling
// of two processes on a busy machine: it only has to stay under 5 s more
// than the flush bound.
func (p *chatProc) stop(t testing.TB, sig os.Signal) (conns int, took time.Duration) {
	t.Helper()
	return p.Stop(t, sig, stopLimit, shutdownReport)
}

func (p *chatProc) waitStopped(t testing.TB, sig os.Signal) (conns int, took time.Duration) {
	t.Helper()
	return p.Stopped(t, sig, stopLimit, shutdownReport)
}

const (
	stopLimit      = flushTimeout + 5*time.Second + servertest.ExitCheckTime
	shutdownReport = "flushed and closed %d connections in %s"
)

// peer is one chat connection of a test.
type peer struct {
	t    testing.TB
	name string
	c    *net.TCPConn
	r    *bufio.Reader
}

// dial connects a client; control, if not nil, sets socket options first.
func (p *chatProc) dial(t testing.TB, name string, control func(fd uintptr)) *peer {
	t.Helper()
	c := p.DialControl(t, control)
	return &peer{t: t, name: name, c: c, r: bufio.NewReaderSize(c, 64<<10)}
}

// join dials clients by name, one after the other, and joins them.
func (p *chatProc) join(t testing.TB, names ...string) []*peer {
	t.Helper()
	var cs []*peer
	for _, name := range names {
		cs = append(cs, p.dial(t, name, nil))
	}
	return join(cs...)
}

// join makes sure that every client of cs is in the chat, with nothing to
// read. Each says "joined NAME" and the earlier ones wait for it: a client
// is in the chat from its accept, before its first line is read, so once
// the earlier ones have its line, it and they get every line read after it.
// A client may also get the "joined" lines of others read after its
// accept; the first client's "all joined", read after every one of them,
// ends them.
func join(cs ...*peer) []*peer {
	for i, c := range cs {
		c.send("joined " + c.name)
		for _, earlier := range cs[:i] {
			earlier.skipTo("joined "+c.name+"\n", "joined ")
		}
	}
	cs[0].send("all joined")
	for _, c := range cs[1:] {
		c.skipTo("all joined\n", "joined ")
	}
	return cs
}

// skipTo reads lines up to want, each of which must start with skip.
func (c *peer) skipTo(want, skip string) {
	c.t.Helper()
	for {
		got := c.next()
		if got == want {
			return
		}
		if !strings.HasPrefix(got, skip) {
			c.t.Fatalf("%s got %q, want %q", c.name, trim(got), trim(want))
		}
	}
}

// write sends raw bytes.
func (c *peer) write(s string) {
	c.t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatalf("%s: write: %v", c.name, err)
	}
}

// send sends one line, ended with LF.
func (c *peer) send(line string) { c.t.Helper(); c.write(line + "\n") }

// next reads one line, with its LF, within 10 s.
func (c *peer) next() string {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("%s: read after %q: %v", c.name, line, err)
	}
	return line
}

// expect reads one line and checks it.
func (c *peer) expect(want string) {
	c.t.Helper()
	if got := c.next(); got != want {
		c.t.Fatalf("%s got %q, want %q", c.name, trim(got), trim(want))
	}
}

// until reads lines up to and including end, and returns those before it.
func (c *peer) until(end string) []string {
	c.t.Helper()
	var lines []string
	for {
		line := c.next()
		if line == end {
			return lines
		}
		lines = append(lines, line)
	}
}

// closedByServer reads until the connection ends, and checks that it ends
// by the server's doing (end of stream or reset) within 10 s, not by the
// deadline.
func (c *peer) closedByServer() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c.r)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("%s: still connected after reading %d bytes: %v", c.name, n, err)
	}
}

// trim shortens long lines in messages.
func trim(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%s…(%d bytes)", s[:60], len(s))
	}
	return s
}

func TestBadArguments(t *testing.T) {
	port := servertest.FreePort(t)
	for _, tc := range []struct {
		args []string
		want string // in the one line on stderr
	}{
		{[]string{"-1"}, "0 to 65535"},
		{[]string{"65536"}, "0 to 65535"},
		{[]string{"99999999999999999999"}, "0 to 65535"},
		{[]string{"chat"}, "0 to 65535"},
		{[]string{"9877x"}, "0 to 65535"},
		{[]string{port, "extra"}, "0 to 65535"},
		{[]string{"1", "2", "3"}, "0 to 65535"},
		{[]string{"-max-line", "0", port}, "-max-line"},
		{[]string{"-max-line", "-5", port}, "-max-line"},
		{[]string{"-max-line", "64KiB", port}, "-max-line"},
		{[]string{"-max-pending", "0", port}, "-max-pending"},
		{[]string{"-max-pending", "lots", port}, "-max-pending"},
		{[]string{"-max-pending", "1024", "-max-line", "1024", port}, "-max-pending"},
		{[]string{"-addr", "127.0.0.1:80", port}, "-addr"},
		{[]string{"-addr", "no such host", port}, "-addr"},
		{[]string{"-addr", "10.0.0.300", port}, "-addr"},
		{[]string{"-addr", port}, "-addr"}, // the port taken for the address
		{[]string{"-no-such-flag", port}, "no-such-flag"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, msg := servertest.Run(t, chatBin, "chat", tc.args...)
			if code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			if n := strings.Count(msg, "\n"); n != 1 || !strings.HasSuffix(msg, "\n") {
				t.Errorf("stderr has %d lines, want one:\n%s", n, msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, msg)
			}
			if strings.Contains(msg, "listening") {
				t.Errorf("it listened:\n%s", msg)
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

// TestFanOut: four clients talk at once; each gets every line of the three
// others, each sender's in the order sent, never its own, and all of them
// in one order: the order the server read them.
func TestFanOut(t *testing.T) {
	p := startChat(t)
	const lines = 300
	names := []string{"a", "b", "c", "d"}
	cs := p.join(t, names...)
	got := make([][]string, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(2)
		go func() {
			defer wg.Done()
			var b strings.Builder
			for n := range lines {
				// Lines of different lengths, so that a line cut short or
				// run together with the next shows.
				fmt.Fprintf(&b, "%s %d %s\n", c.name, n, strings.Repeat("x", n%97))
			}
			c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c.c, b.String()); err != nil {
				t.Errorf("%s: write: %v", c.name, err)
			}
		}()
		go func() {
			defer wg.Done()
			c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
			for range lines * (len(cs) - 1) {
				line, err := c.r.ReadString('\n')
				if err != nil {
					t.Errorf("%s: read after %d lines: %v", c.name, len(got[i]), err)
					return
				}
				got[i] = append(got[i], line)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, c := range cs {
		next := map[string]int{}
		for _, line := range got[i] {
			var from string
			var n int
			if _, err := fmt.Sscanf(line, "%s %d", &from, &n); err != nil {
				t.Fatalf("%s got %q: %v", c.name, trim(line), err)
			}
			if from == c.name {
				t.Fatalf("%s got its own line %q", c.name, trim(line))
			}
			if want := fmt.Sprintf("%s %d %s\n", from, next[from], strings.Repeat("x", next[from]%97)); line != want {
				t.Fatalf("%s got %q from %s, want %q", c.name, trim(line), from, trim(want))
			}
			next[from]++
		}
		for _, from := range names {
			if want := lines * btoi(from != c.name); next[from] != want {
				t.Errorf("%s got %d lines from %s, want %d", c.name, next[from], from, want)
			}
		}
	}
	// Any two clients saw the lines of the other two in the same order.
	for i := range cs {
		for j := i + 1; j < len(cs); j++ {
			if a, b := without(got[i], names[j]), without(got[j], names[i]); !equal(a, b) {
				t.Errorf("%s and %s got the others' lines in different orders", names[i], names[j])
			}
		}
	}
	p.stop(t, syscall.SIGTERM)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// without drops the lines from name.
func without(lines []string, name string) []string {
	var out []string
	for _, l := range lines {
		if !strings.HasPrefix(l, name+" ") {
			out = append(out, l)
		}
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// barrier makes sure that the server has read everything the others wrote
// before it: x says "sync N", and everyone else reads up to it. Data that
// was in a socket before x's line is read in the same round of the loop as
// x's line at the latest, and no client is sent anything before that round
// ends (libevent writes on the next write event). It returns what each of
// the others got before the sync line (some of it may come after it).
func barrier(n int, x *peer, others ...*peer) [][]string {
	x.t.Helper()
	line := fmt.Sprintf("sync %d\n", n)
	x.write(line)
	got := make([][]string, len(others))
	for i, o := range others {
		got[i] = o.until(line)
	}
	return got
}

// TestLines: what a line is. The sender writes its pieces with a barrier
// after each, so that each piece is read apart from the next; the
// receiver gets the lines whole, once, each ending in LF; the sender never
// gets its own.
func TestLines(t *testing.T) {
	p := startChat(t)
	for _, tc := range []struct {
		name   string
		pieces []string // what the sender writes, one at a time
		want   []string // what the others get from it
	}{
		{"LF ends a line", []string{"hello\n"}, []string{"hello\n"}},
		{"CRLF ends a line and goes out as LF", []string{"hello\r\n"}, []string{"hello\n"}},
		{"several lines in one write", []string{"one\ntwo\r\nthree\n"}, []string{"one\n", "two\n", "three\n"}},
		{"a line split across writes arrives once, whole", []string{"hel", "lo wo", "rld\n"}, []string{"hello world\n"}},
		{"CR and LF in separate writes", []string{"ab\r", "\n"}, []string{"ab\n"}},
		{"bytes after the last line end wait for theirs", []string{"one\ntw", "o\nthr", "ee\r\n"}, []string{"one\n", "two\n", "three\n"}},
		{"empty lines are lines", []string{"\n", "\r\n"}, []string{"\n", "\n"}},
		{"a CR inside a line is data", []string{"a\rb\r\r\n"}, []string{"a\rb\r\n"}},
		{"any byte but LF is data", []string{"\x00\xff\t é\n"}, []string{"\x00\xff\t é\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := p.join(t, "sender", "receiver", "x")
			s, r, x := cs[0], cs[1], cs[2]
			var got, own []string
			for i, piece := range tc.pieces {
				s.write(piece)
				b := barrier(i, x, s, r)
				own, got = append(own, b[0]...), append(got, b[1]...)
			}
			x.send("end")
			own, got = append(own, s.until("end\n")...), append(got, r.until("end\n")...)
			if !equal(got, tc.want) {
				t.Errorf("receiver got %q, want %q", got, tc.want)
			}
			// The sender got x's lines only: none of its own.
			if len(own) != 0 {
				t.Errorf("sender got %q", own)
			}
		})
	}
	t.Run("a line the sender did not finish is dropped when it leaves", func(t *testing.T) {
		cs := p.join(t, "sender", "receiver", "x")
		s, r, x := cs[0], cs[1], cs[2]
		s.write("unfinished")
		if b := barrier(0, x, s, r); len(b[1]) != 0 {
			t.Fatalf("receiver got %q", b[1])
		}
		// The server closes its side once it has read the sender's end,
		// and so after anything it would send for it.
		if err := s.c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		s.closedByServer()
		x.send("end")
		if got := r.until("end\n"); len(got) != 0 {
			t.Errorf("receiver got %q", got)
		}
	})
	p.stop(t, syscall.SIGTERM)
}

// TestMaxLine: a client whose line grows past -max-line is disconnected,
// and only that client; a line of exactly -max-line bytes goes through.
func TestMaxLine(t *testing.T) {
	const maxLine = 1000
	p := startChat(t, "-max-line", strconv.Itoa(maxLine))
	long := strings.Repeat("L", maxLine)
	for _, tc := range []struct {
		name    string
		pieces  []string
		dropped bool // the sender is disconnected, and nothing of it goes out
	}{
		{"a line of max-line bytes goes through", []string{long + "\n"}, false},
		{"max-line bytes then CRLF in pieces go through", []string{long, "\r", "\n"}, false},
		{"one byte more, with its LF, disconnects", []string{long + "L\n"}, true},
		{"one byte more, with no line end, disconnects", []string{long + "L"}, true},
		{"max-line bytes and a CR that is no CRLF disconnect", []string{long + "\r", "x"}, true},
		{"a line growing past max-line in pieces disconnects", []string{long[:600], long[:600]}, true},
		{"a megabyte with no line end disconnects", []string{strings.Repeat("M", 1<<20)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := p.join(t, "sender", "receiver", "x")
			s, r, x := cs[0], cs[1], cs[2]
			var got []string
			if tc.dropped {
				for _, piece := range tc.pieces {
					// A write may fail once the server has closed.
					s.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
					io.WriteString(s.c, piece)
				}
				s.closedByServer()
				p.WaitLog(t, 10*time.Second, fmt.Sprintf("chat: disconnected %v:", s.c.LocalAddr()))
			} else {
				for i, piece := range tc.pieces {
					s.write(piece)
					got = append(got, barrier(i, x, s, r)[1]...)
				}
			}
			// The others go on.
			x.send("end")
			got = append(got, r.until("end\n")...)
			var want []string
			if !tc.dropped {
				want = []string{long + "\n"}
			}
			if !equal(got, want) {
				t.Errorf("receiver got %d lines %q, want %d", len(got), trimAll(got), len(want))
			}
			r.send("still here")
			if got := x.until("still here\n"); !equal(got, want) {
				t.Errorf("x got %d lines %q, want %d", len(got), trimAll(got), len(want))
			}
		})
	}
	p.stop(t, syscall.SIGTERM)
}

func trimAll(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = trim(l)
	}
	return out
}
