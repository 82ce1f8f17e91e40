// Command kv is a small in-memory key-value server on libevent, through
// evlistener: a few of Redis's commands, written inline, one per line (as
// nc sends them), and answered in Redis's protocol. It is the example of a
// request/response protocol on the documented API; make bench runs it
// against the same server written in C (bench/csrc/ckv.c).
//
//	kv [-addr HOST] [port]
//
// The port (default 6380, 0 picks a free one) is the only argument. On start
// it prints "kv: listening on HOST:PORT" to stderr. Commands end in LF or
// CRLF; a command's words are separated by single spaces:
//
//	PING           +PONG
//	SET key value  +OK
//	GET key        $LEN CRLF value CRLF, or $-1 when key is not set
//	DEL key        :1 when key was set, else :0
//
// Anything else gets an -ERR line. Commands sent without waiting for the
// replies (pipelined) are answered in order; a line longer than 64 KiB
// closes the connection. SIGINT or SIGTERM close every connection and exit
// 0; a bad argument exits 2.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"syscall"

	"github.com/evlistener/evlistener"
	"github.com/evlistener/evlistener/internal/cmdline"
)

const (
	defaultPort = 6380
	maxLine     = 64 << 10
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run is the program; it returns the exit status.
func run(args []string, stderr io.Writer) int {
	cmd := cmdline.New("kv", defaultPort, "", stderr)
	addr := cmd.String("addr", "127.0.0.1", "address to listen on (0.0.0.0 or :: to serve the network)")
	if err := cmd.Parse(args); err != nil {
		return cmdline.Status(err)
	}
	sigc, stopSignals := cmdline.Notify(syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	cmdline.GOMAXPROCSAbove(1)
	srv, err := listen(cmd.Addr(*addr))
	if err != nil {
		fmt.Fprintf(stderr, "kv: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "kv: listening on %v\n", srv.ln.Addr())
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the loop keeps its thread between callbacks
		done <- srv.base.Dispatch()
	}()
	select {
	case <-sigc:
		srv.base.Close() // closes the listener and every connection
		<-done
		return 0
	case err := <-done:
		fmt.Fprintf(stderr, "kv: event loop stopped: %v\n", err)
		return 1
	}
}

// server is one event loop and what it serves. Its fields are touched on
// the loop goroutine only, so one set of buffers serves every connection.
type server struct {
	base *evlistener.Base
	ln   *evlistener.Listener
	data map[string]*entry
	in   []byte // a copy of what a connection's input holds
	out  []byte // the replies to what one read brought
}

// entry is a value; SET on a key that exists reuses its memory.
type entry struct{ val []byte }

func listen(addr string) (*server, error) {
	// No C code shares this base: libevent's locks would only cost.
	base, err := evlistener.NewBaseWithFlags(evlistener.BaseNoLock)
	if err != nil {
		return nil, err
	}
	srv := &server{base: base, data: map[string]*entry{}, in: make([]byte, 0, 4096)}
	flags := evlistener.CloseOnFree | evlistener.Reuseable | evlistener.CloseOnExec
	if srv.ln, err = evlistener.NewBind(base, srv.accept, flags, 1024, "tcp", addr); err != nil {
		base.Close()
		return nil, err
	}
	return srv, nil
}

func (srv *server) accept(_ *evlistener.Listener, fd int, _ net.Addr) {
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1) // replies are small
	be, err := evlistener.NewBufferEvent(srv.base, fd, evlistener.BEVOptCloseOnFree)
	if err != nil {
		syscall.Close(fd)
		return
	}
	be.SetCallbacks(srv.read, nil, srv.event)
	be.Enable(evlistener.EvRead | evlistener.EvWrite)
}

// read serves every whole command in the input and sends the replies in
// one Write, which goes out at once when nothing is queued. It looks at the
// input through a copy (ReadAt removes nothing), serves the whole lines in
// it and drops them (Drain): two calls into libevent however many commands
// came, where taking each line (AppendLine) would be one per command. A
// partial line stays in the input until the rest arrives.
func (srv *server) read(be *evlistener.BufferEvent) {
	in := be.Input()
	out := srv.out[:0]
	for {
		n, _ := in.ReadAt(srv.in[:cap(srv.in)], 0) // io.EOF: fewer bytes than asked
		buf, used := srv.in[:n], 0
		for {
			i := bytes.IndexByte(buf[used:], '\n')
			if i < 0 {
				break
			}
			// A line ends in LF or CRLF (EOLCRLF).
			out = srv.exec(out, bytes.TrimSuffix(buf[used:used+i], []byte{'\r'}))
			used += i + 1
		}
		if used > 0 {
			in.Drain(used)
		}
		if used == 0 && n > maxLine {
			be.Write(append(out, "-ERR line too long\r\n"...))
			be.CloseAfterFlush(0)
			return
		}
		if n < cap(srv.in) {
			break // all of the input was seen
		}
		if used == 0 { // the copy is full and holds no line end: look further
			srv.in = make([]byte, 0, 2*cap(srv.in))
		}
	}
	srv.out = out
	if len(out) > 0 {
		be.Write(out)
	}
}

func (srv *server) event(be *evlistener.BufferEvent, what evlistener.BEVEvent, err error) {
	be.Close() // EOF or an error: the client is gone
}

// exec appends the reply to one command to out.
func (srv *server) exec(out, line []byte) []byte {
	cmd, args, _ := bytes.Cut(line, []byte{' '})
	key, val, hasVal := bytes.Cut(args, []byte{' '})
	switch {
	case string(cmd) == "PING" && len(args) == 0:
		return append(out, "+PONG\r\n"...)
	case string(cmd) == "GET" && len(key) > 0 && !hasVal:
		e := srv.data[string(key)] // a lookup by string(key) does not allocate
		if e == nil {
			return append(out, "$-1\r\n"...)
		}
		out = strconv.AppendInt(append(out, '$'), int64(len(e.val)), 10)
		return append(append(append(out, "\r\n"...), e.val...), "\r\n"...)
	case string(cmd) == "SET" && len(key) > 0 && hasVal:
		if e := srv.data[string(key)]; e != nil {
			e.val = append(e.val[:0], val...)
		} else {
			srv.data[string(key)] = &entry{val: bytes.Clone(val)}
		}
		return append(out, "+OK\r\n"...)
	case string(cmd) == "DEL" && len(key) > 0 && !hasVal:
		if _, ok := srv.data[string(key)]; ok {
			delete(srv.data, string(key))
			return append(out, ":1\r\n"...)
		}
		return append(out, ":0\r\n"...)
	}
	return append(out, "-ERR unknown command or wrong number of arguments\r\n"...)
}
