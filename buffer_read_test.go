package evlistener

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// filledBuffer returns the input buffer of a buffer event on a running
// loop, holding s, and fill, which sends more from the peer and waits until
// it is buffered. (An output buffer would not do: libevent freezes its
// front, so that only its own writes remove from it.)
func filledBuffer(t *testing.T, s string) (*Base, *Buffer, func(string)) {
	t.Helper()
	b := newBase(t)
	be, peer := bevPair(t, b)
	read := make(chan struct{}, 1)
	be.SetCallbacks(func(*BufferEvent) {
		select {
		case read <- struct{}{}:
		default:
		}
	}, nil, nil)
	be.Enable(EvRead)
	startDispatch(t, b, atCleanup)
	fill := func(more string) {
		t.Helper()
		want := be.Input().Len() + len(more)
		peer.Write([]byte(more))
		for be.Input().Len() < want {
			recv(t, read, "the peer's bytes")
		}
	}
	fill(s)
	return b, be.Input(), fill
}

func TestBufferAppendTo(t *testing.T) {
	for _, loop := range []bool{true, false} {
		t.Run(map[bool]string{true: "on the loop", false: "from another goroutine"}[loop], func(t *testing.T) {
			checkNoLeaks(t)
			b, buf, fill := filledBuffer(t, "hello world")
			run(b, loop, func() {
				out, err := buf.AppendTo([]byte("x"))
				if err != nil || string(out) != "xhello world" {
					t.Errorf("AppendTo = %q, %v; want %q", out, err, "xhello world")
				}
				if n := buf.Len(); n != 0 {
					t.Errorf("%d bytes left, want 0", n)
				}
				out, err = buf.AppendTo(out[:0])
				if err != nil || len(out) != 0 {
					t.Errorf("AppendTo of an empty buffer = %q, %v; want nothing", out, err)
				}
			})
			fill("again")
			run(b, loop, func() {
				dst := make([]byte, 1, 64)
				out, _ := buf.AppendTo(dst)
				if string(out[1:]) != "again" || &out[0] != &dst[0] {
					t.Errorf("AppendTo with room = %q in a new array: want %q in dst's", out[1:], "again")
				}
			})
		})
	}
}

func TestBufferAppendN(t *testing.T) {
	for _, loop := range []bool{true, false} {
		t.Run(map[bool]string{true: "on the loop", false: "from another goroutine"}[loop], func(t *testing.T) {
			checkNoLeaks(t)
			b, buf, fill := filledBuffer(t, "hello world")
			run(b, loop, func() {
				for _, step := range []struct {
					n          int
					want, left string
				}{
					{5, "hello", " world"},
					{0, "", " world"},
					{100, " world", ""},
					{3, "", ""},
				} {
					out, err := buf.AppendN(nil, step.n)
					if err != nil || string(out) != step.want {
						t.Errorf("AppendN(%d) = %q, %v; want %q", step.n, out, err, step.want)
					}
					if left := string(buf.Peek(100)); left != step.left {
						t.Errorf("after AppendN(%d) %q left, want %q", step.n, left, step.left)
					}
				}
			})
			fill("abc")
			run(b, loop, func() {
				if out, err := buf.AppendN([]byte("keep"), -1); err == nil || string(out) != "keep" || buf.Len() != 3 {
					t.Errorf("AppendN(-1) = %q, %v, %d left; want an error, dst as it was, nothing removed", out, err, buf.Len())
				}
			})
		})
	}
}

func TestBufferAppendLine(t *testing.T) {
	for _, loop := range []bool{true, false} {
		t.Run(map[bool]string{true: "on the loop", false: "from another goroutine"}[loop], func(t *testing.T) {
			checkNoLeaks(t)
			long := strings.Repeat("L", 5000)
			b, buf, fill := filledBuffer(t, "a\r\n\nbb\n"+long+"\nccc")
			run(b, loop, func() {
				dst := make([]byte, 0, 16)
				for _, want := range []string{"p:a", "p:", "p:bb", "p:" + long} {
					out, ok := buf.AppendLine(append(dst[:0], "p:"...), EOLCRLF)
					if !ok || string(out) != want {
						t.Errorf("AppendLine = %d bytes %.8q…, %v; want %d bytes %.8q…", len(out), out, ok, len(want), want)
					}
				}
				if out, ok := buf.AppendLine(dst[:0], EOLCRLF); ok || len(out) != 0 || buf.Len() != 3 {
					t.Errorf("AppendLine with no whole line = %d bytes, %v, %d bytes left; want false and ccc kept", len(out), ok, buf.Len())
				}
				if out, ok := buf.AppendLine(nil, EOLStyle(99)); ok || out != nil || buf.Len() != 3 {
					t.Errorf("AppendLine with an unknown style = %q, %v; want false, nothing removed", out, ok)
				}
			})
			fill("\n")
			run(b, loop, func() {
				if out, ok := buf.AppendLine(nil, EOLLF); !ok || string(out) != "ccc" {
					t.Errorf("AppendLine into nil = %q, %v; want ccc", out, ok)
				}
			})
			fill("\n")
			run(b, loop, func() {
				if out, ok := buf.AppendLine(nil, EOLLF); !ok || out == nil || len(out) != 0 {
					t.Errorf("an empty line into nil = %#v, %v; want an empty, non-nil slice", out, ok)
				}
			})
		})
	}
}

func TestBufferIndexFrom(t *testing.T) {
	for _, loop := range []bool{true, false} {
		t.Run(map[bool]string{true: "on the loop", false: "from another goroutine"}[loop], func(t *testing.T) {
			checkNoLeaks(t)
			b, buf, _ := filledBuffer(t, "abcabc")
			run(b, loop, func() {
				for _, c := range []struct {
					sep  string
					from int
					want int
				}{
					{"bc", 0, 1}, {"bc", 1, 1}, {"bc", 2, 4}, {"bc", 5, -1}, {"c", 6, -1},
					{"", 3, 3}, {"", 6, 6}, {"", 7, -1}, {"a", -1, -1}, {"a", 100, -1},
				} {
					if got := buf.IndexFrom([]byte(c.sep), c.from); got != c.want {
						t.Errorf("IndexFrom(%q, %d) = %d, want %d", c.sep, c.from, got, c.want)
					}
				}
				if n := buf.Len(); n != 6 {
					t.Errorf("%d bytes left, want 6: IndexFrom removes nothing", n)
				}
			})
		})
	}
}

func TestBufferReadAt(t *testing.T) {
	for _, loop := range []bool{true, false} {
		t.Run(map[bool]string{true: "on the loop", false: "from another goroutine"}[loop], func(t *testing.T) {
			checkNoLeaks(t)
			b, buf, _ := filledBuffer(t, "hello")
			run(b, loop, func() {
				var _ io.ReaderAt = buf
				p := make([]byte, 10)
				for _, c := range []struct {
					n       int
					off     int64
					want    string
					wantErr error
				}{
					{3, 1, "ell", nil}, {5, 0, "hello", nil}, {10, 2, "llo", io.EOF},
					{1, 5, "", io.EOF}, {1, 99, "", io.EOF}, {0, 0, "", nil},
				} {
					n, err := buf.ReadAt(p[:c.n], c.off)
					if string(p[:n]) != c.want || err != c.wantErr {
						t.Errorf("ReadAt(%d bytes, %d) = %q, %v; want %q, %v", c.n, c.off, p[:n], err, c.want, c.wantErr)
					}
				}
				if _, err := buf.ReadAt(p, -1); err == nil || err == io.EOF {
					t.Errorf("ReadAt at -1: %v, want an error", err)
				}
				if n := buf.Len(); n != 5 {
					t.Errorf("%d bytes left, want 5: ReadAt removes nothing", n)
				}
			})
		})
	}
}

// run runs f as a callback would (on the loop) or from the test's
// goroutine.
func run(b *Base, loop bool, f func()) {
	if loop {
		b.Do(func() {
			if !b.onLoop() {
				panic("Base.Do ran f off the loop")
			}
			f()
		})
		return
	}
	f()
}

func TestBufferReadsClosed(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	fd, _ := tcpPair(t)
	be := newBEV(t, b, fd)
	in := be.Input()
	be.Close()
	if out, err := in.AppendTo([]byte("x")); !errors.Is(err, ErrClosed) || string(out) != "x" {
		t.Errorf("AppendTo = %q, %v; want dst, ErrClosed", out, err)
	}
	if _, err := in.AppendN(nil, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("AppendN: %v, want ErrClosed", err)
	}
	if _, ok := in.AppendLine(nil, EOLLF); ok {
		t.Error("AppendLine on a closed buffer: ok")
	}
	if i := in.IndexFrom([]byte("x"), 0); i != -1 {
		t.Errorf("IndexFrom = %d, want -1", i)
	}
	if _, err := in.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadAt: %v, want ErrClosed", err)
	}
	if _, err := be.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write: %v, want ErrClosed", err)
	}
}

// A line protocol parsed with AppendLine: requests split across reads and
// several in one read are answered in order, and a partial line waits.
func TestAppendLineRequestsSplitAcrossReads(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	be, peer := bevPair(t, b)
	var line, reply []byte
	be.SetCallbacks(func(be *BufferEvent) {
		reply = reply[:0]
		for {
			var ok bool
			if line, ok = be.Input().AppendLine(line[:0], EOLCRLF); !ok {
				break
			}
			reply = append(append(append(reply, '<'), line...), ">\n"...)
		}
		if len(reply) > 0 {
			be.Write(reply)
		}
	}, nil, nil)
	be.Enable(EvRead | EvWrite)
	startDispatch(t, b, atCleanup)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	expect := func(want string) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(peer, got); err != nil || string(got) != want {
			t.Fatalf("peer read %q, %v; want %q", got, err, want)
		}
	}
	peer.Write([]byte("GET a\r\nGE"))
	expect("<GET a>\n")
	peer.Write([]byte("T b\r"))
	peer.Write([]byte("\nSET c 1\nPING\r\n"))
	expect("<GET b>\n<SET c 1>\n<PING>\n")
}

// TestReadWriteCgoCallsAndAllocs pins what each read and Write costs in a
// read callback: one call from Go to C per method and no allocation, with
// the caller's slices reused; ReadLine and Peek, which return a new slice,
// one allocation (and, past 128 bytes, a second call). Each message is one
// 64-byte line.
func TestReadWriteCgoCallsAndAllocs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		calls  float64 // per message, besides the C→Go callback
		allocs float64
		cb     func(be *BufferEvent, p []byte) []byte
	}{
		{"AppendTo, Write", 2, 0, func(be *BufferEvent, p []byte) []byte {
			p, _ = be.Input().AppendTo(p[:0])
			be.Write(p)
			return p
		}},
		{"AppendN, Write", 2, 0, func(be *BufferEvent, p []byte) []byte {
			p, _ = be.Input().AppendN(p[:0], 64)
			be.Write(p)
			return p
		}},
		{"AppendLine, Write", 2, 0, func(be *BufferEvent, p []byte) []byte {
			p, _ = be.Input().AppendLine(p[:0], EOLLF)
			be.Write(append(p, '\n'))
			return p
		}},
		{"IndexFrom, ReadAt, Drain, Write", 4, 0, func(be *BufferEvent, p []byte) []byte {
			in := be.Input()
			end := in.IndexFrom([]byte{'\n'}, 32) + 1
			n, _ := in.ReadAt(p[:end], 0)
			in.Drain(n)
			be.Write(p[:n])
			return p
		}},
		{"Read, Write", 2, 0, func(be *BufferEvent, p []byte) []byte {
			n, _ := be.Read(p[:cap(p)])
			be.Write(p[:n])
			return p
		}},
		{"Len, Index, AppendN, Write", 4, 0, func(be *BufferEvent, p []byte) []byte {
			in := be.Input()
			if in.Len() == 64 && in.Index([]byte{'\n'}) == 63 {
				p, _ = in.AppendN(p[:0], 64)
			}
			be.Write(p)
			return p
		}},
		{"ReadLine, Write", 1 + 1, 1, func(be *BufferEvent, p []byte) []byte {
			line, _ := be.Input().ReadLine(EOLLF)
			be.Write(append(append(p[:0], line...), '\n'))
			return p
		}},
		{"Peek, Drain, Write", 1 + 1 + 1, 1, func(be *BufferEvent, p []byte) []byte {
			in := be.Input()
			p = append(p[:0], in.Peek(64)...)
			in.Drain(len(p))
			be.Write(p)
			return p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			b := newBase(t)
			be, peer := bevPair(t, b)
			p := make([]byte, 0, 256)
			be.SetCallbacks(func(be *BufferEvent) { p = tc.cb(be, p) }, nil, nil)
			be.Enable(EvRead | EvWrite)
			startDispatch(t, b, atCleanup)
			if err := linePingPong(peer, 10); err != nil { // warm up
				t.Fatal(err)
			}
			const n = 2000
			before := goToC()
			if err := linePingPong(peer, n); err != nil {
				t.Fatal(err)
			}
			per := float64(goToC()-before) / n
			if per > tc.calls+0.02 {
				t.Errorf("%.3f calls from Go to C per message, want %v", per, tc.calls)
			}
			var err error
			allocs := testing.AllocsPerRun(500, func() {
				if e := linePingPong(peer, 1); e != nil {
					err = e
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if allocs != tc.allocs {
				t.Errorf("%v allocations per message, want %v", allocs, tc.allocs)
			}
		})
	}
}

// lineGot is where linePingPong reads.
var lineGot [64]byte

// lineMsg is the message of linePingPong: one 64-byte line.
var lineMsg = func() (msg [64]byte) {
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
	}
	msg[63] = '\n'
	return msg
}()

// linePingPong sends n 64-byte lines through peer and reads each back.
func linePingPong(peer *net.TCPConn, n int) error {
	got := &lineGot // a local array would escape to the heap on every call
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	for range n {
		peer.Write(lineMsg[:])
		if _, err := io.ReadFull(peer, got[:]); err != nil {
			return err
		}
		if *got != lineMsg {
			return errors.New("line ping-pong: got " + string(got[:]))
		}
	}
	return nil
}

// The reads agree with the same operations on a Go slice over a buffer of
// many chains (each socket read adds one), so that copies and searches
// cross chain boundaries and ReadAt needs more than one evbuffer_peek.
func TestBufferReadsAcrossChains(t *testing.T) {
	checkNoLeaks(t)
	data := make([]byte, 100<<10)
	for i := range data {
		data[i] = 'a' + byte(i*7%26)
		if i%997 == 996 {
			data[i] = '\n'
		}
	}
	b, buf, _ := filledBuffer(t, string(data))
	run(b, true, func() {
		p := make([]byte, len(data))
		for _, c := range []struct{ off, n int }{{0, len(data)}, {1, len(data) - 1}, {4095, 2}, {5000, 40000}, {len(data) - 3, 10}} {
			n, err := buf.ReadAt(p[:c.n], int64(c.off))
			want := data[c.off:min(c.off+c.n, len(data))]
			if !bytes.Equal(p[:n], want) || (n < c.n) != (err == io.EOF) {
				t.Errorf("ReadAt(%d bytes, %d) = %d bytes, %v; want %d bytes equal to the data", c.n, c.off, n, err, len(want))
			}
		}
		for _, c := range []struct {
			sep  string
			from int
		}{{"\n", 0}, {"\n", 997}, {"\n", 50000}, {"ab", 4090}, {"\nh", 0}, {"zz", 0}} {
			want := bytes.Index(data[c.from:], []byte(c.sep))
			if want >= 0 {
				want += c.from
			}
			if got := buf.IndexFrom([]byte(c.sep), c.from); got != want {
				t.Errorf("IndexFrom(%q, %d) = %d, want %d", c.sep, c.from, got, want)
			}
		}
		rest := data
		var line []byte
		for i := 0; i < 3; i++ {
			var ok bool
			line, ok = buf.AppendLine(line[:0], EOLLF)
			want, after, _ := bytes.Cut(rest, []byte{'\n'})
			if !ok || !bytes.Equal(line, want) {
				t.Fatalf("line %d: %d bytes, %v; want %d bytes equal to the data", i, len(line), ok, len(want))
			}
			rest = after
		}
		got, err := buf.AppendN(nil, 7000)
		if err != nil || !bytes.Equal(got, rest[:7000]) {
			t.Fatalf("AppendN(7000): %d bytes, %v; want the next 7000 bytes", len(got), err)
		}
		got, err = buf.AppendTo(got[:0])
		if err != nil || !bytes.Equal(got, rest[7000:]) || buf.Len() != 0 {
			t.Fatalf("AppendTo: %d bytes, %v, %d left; want the last %d bytes, none left", len(got), err, buf.Len(), len(rest)-7000)
		}
	})
}

// readingBEV returns a buffer event that reads, on a running base, and its
// peer.
func readingBEV(t *testing.T) (*BufferEvent, *net.TCPConn) {
	t.Helper()
	b := newBase(t)
	be, peer := bevPair(t, b)
	be.Enable(EvRead)
	startDispatch(t, b, atCleanup)
	return be, peer
}

func TestBufferReadLine(t *testing.T) {
	be, peer := readingBEV(t)
	in := be.Input()
	// The test reads from its own goroutine: every call is handed to the
	// loop.
	feed := func(s string) {
		t.Helper()
		want := in.Len() + len(s)
		peer.Write([]byte(s))
		waitFor(t, "the input", func() bool { return in.Len() >= want })
	}
	feed("one\r\ntwo\nthr")
	for _, tc := range []struct {
		style EOLStyle
		want  string
		ok    bool
	}{
		{EOLCRLFStrict, "one", true},
		{EOLCRLFStrict, "", false}, // "two\n" has no CR LF
		{EOLLF, "two", true},
		{EOLCRLF, "", false}, // "thr": no whole line
	} {
		line, ok := in.ReadLine(tc.style)
		if ok != tc.ok || string(line) != tc.want {
			t.Fatalf("ReadLine(%v) = %q, %v; want %q, %v", tc.style, line, ok, tc.want, tc.ok)
		}
	}
	if got := string(in.Peek(100)); got != "thr" {
		t.Fatalf("after the partial ReadLine the buffer holds %q, want the partial line kept", got)
	}
	feed("ee\n\nlast\x00")
	if i := in.Index([]byte("\n\n")); i != 5 {
		t.Fatalf("Index = %d, want 5", i)
	}
	if i := in.Index([]byte("nope")); i != -1 {
		t.Fatalf("Index of an absent sep = %d, want -1", i)
	}
	if got := string(in.Peek(2)); got != "th" {
		t.Fatalf("Peek(2) = %q", got)
	}
	for _, want := range []string{"three", ""} {
		line, ok := in.ReadLine(EOLCRLF)
		if !ok || string(line) != want || line == nil {
			t.Fatalf("ReadLine = %q (nil %v), %v; want %q, a non-nil line", line, line == nil, ok, want)
		}
	}
	if line, ok := in.ReadLine(EOLNUL); !ok || string(line) != "last" {
		t.Fatalf("ReadLine(EOLNUL) = %q, %v", line, ok)
	}
	if in.Len() != 0 || in.Peek(10) != nil {
		t.Fatalf("buffer holds %d bytes after every line, want none", in.Len())
	}
	if _, ok := in.ReadLine(EOLStyle(99)); ok {
		t.Fatal("ReadLine with an unknown style returned ok")
	}
	be.Close()
	if line, ok := in.ReadLine(EOLLF); ok || line != nil || in.Index([]byte("x")) != -1 || in.Peek(1) != nil {
		t.Fatal("a closed buffer returned data")
	}
}

// Each style ends a line where evbuffer_readln does, and the terminator,
// all of it, is dropped.
func TestBufferReadLineStyles(t *testing.T) {
	be, peer := readingBEV(t)
	in := be.Input()
	for _, tc := range []struct {
		style      EOLStyle
		in         string
		line, rest string
	}{
		{EOLCRLF, "a\r\nb", "a", "b"},
		{EOLCRLF, "a\nb", "a", "b"},
		{EOLCRLF, "a\rb\n", "a\rb", ""},
		{EOLCRLFStrict, "a\r\nb", "a", "b"},
		{EOLCRLFStrict, "a\nb\r\n", "a\nb", ""},
		{EOLLF, "a\r\nb", "a\r", "b"},
		{EOLAny, "a\r\n\r\nb", "a", "b"},
		{EOLAny, "\n\ra\n", "", "a\n"},
		{EOLNUL, "a\x00b\n", "a", "b\n"},
	} {
		in.Drain(in.Len())
		peer.Write([]byte(tc.in))
		waitFor(t, "the input", func() bool { return in.Len() >= len(tc.in) })
		line, ok := in.ReadLine(tc.style)
		if rest := string(in.Peek(100)); !ok || string(line) != tc.line || rest != tc.rest {
			t.Errorf("ReadLine(%v) of %q = %q, %v, leaving %q; want %q, true, leaving %q", tc.style, tc.in, line, ok, rest, tc.line, tc.rest)
		}
	}
}

// The end of each buffer that only libevent moves answers with an error
// that says so.
func TestBufferFrozenEnds(t *testing.T) {
	b := newBase(t)
	fd, _ := tcpPair(t)
	be := newBEV(t, b, fd) // writing not enabled: the output stays
	in, out := be.Input(), be.Output()
	if _, err := out.Write([]byte("line\n")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		call string
		err  error
		want error
	}{
		{"Input().Write", second(in.Write([]byte("x"))), ErrInputEnd},
		{"Output().MoveTo(Input())", second(out.MoveTo(in)), ErrInputEnd},
		{"Output().Read", second(out.Read(make([]byte, 4))), ErrOutputFront},
		{"Output().Drain", out.Drain(1), ErrOutputFront},
		{"Output().AppendTo", second(out.AppendTo(nil)), ErrOutputFront},
		{"Output().AppendN", second(out.AppendN(nil, 1)), ErrOutputFront},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s = %v, want %v", tc.call, tc.err, tc.want)
		}
	}
	if line, ok := out.ReadLine(EOLLF); ok || line != nil {
		t.Errorf("Output().ReadLine = %q, %v; want nil, false", line, ok)
	}
	if line, ok := out.AppendLine(nil, EOLLF); ok || line != nil {
		t.Errorf("Output().AppendLine = %q, %v; want nil, false", line, ok)
	}
	if got, i := string(out.Peek(10)), out.Index([]byte("\n")); got != "line\n" || i != 4 {
		t.Errorf("Output().Peek, Index = %q, %d; want the output untouched and readable", got, i)
	}
	p := make([]byte, 3)
	if n, err := out.ReadAt(p, 1); n != 3 || err != nil || string(p) != "ine" || out.IndexFrom([]byte("\n"), 2) != 4 {
		t.Errorf("Output().ReadAt(3 bytes, 1), IndexFrom = %q, %v; want the output readable from an offset", p[:n], err)
	}
}

func second[T any](_ T, err error) error { return err }
