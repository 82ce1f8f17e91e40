package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serve starts a server on a free port for the test and returns a
// connection to it.
func serve(t *testing.T) net.Conn {
	t.Helper()
	srv, err := listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.base.Dispatch() }()
	t.Cleanup(func() {
		srv.base.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Dispatch did not return after Close")
		}
	})
	c, err := net.Dial("tcp", srv.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

func expect(t *testing.T, c net.Conn, want string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("read %d bytes %.60q, %v; want %d bytes %.60q", len(got), got, err, len(want), want)
	}
}

func TestCommands(t *testing.T) {
	c := serve(t)
	for _, step := range []struct{ send, want string }{
		{"PING\r\n", "+PONG\r\n"},
		{"GET a\r\n", "$-1\r\n"},
		{"SET a hello\r\n", "+OK\r\n"},
		{"GET a\n", "$5\r\nhello\r\n"},
		{"SET a hi\r\n", "+OK\r\n"},
		{"GET a\r\n", "$2\r\nhi\r\n"},
		{"DEL a\r\n", ":1\r\n"},
		{"DEL a\r\n", ":0\r\n"},
		{"GET a\r\n", "$-1\r\n"},
		{"FOO\r\n", "-ERR unknown command or wrong number of arguments\r\n"},
		{"GET\r\n", "-ERR unknown command or wrong number of arguments\r\n"},
		{"SET a\r\n", "-ERR unknown command or wrong number of arguments\r\n"},
		{"\r\n", "-ERR unknown command or wrong number of arguments\r\n"},
	} {
		c.Write([]byte(step.send))
		expect(t, c, step.want)
	}
}

// Pipelined commands, several in one write and one split across writes,
// are answered in order.
func TestPipelinedAndSplit(t *testing.T) {
	c := serve(t)
	c.Write([]byte("SET k 1\r\nGET k\r\nSET k 22\r\nGE"))
	expect(t, c, "+OK\r\n$1\r\n1\r\n+OK\r\n")
	c.Write([]byte("T k\r"))
	c.Write([]byte("\nPING\r\n"))
	expect(t, c, "$2\r\n22\r\n+PONG\r\n")
}

// A line longer than the limit gets an error and the connection closes;
// the server goes on serving others.
func TestLineTooLong(t *testing.T) {
	c := serve(t)
	go c.Write([]byte(strings.Repeat("x", maxLine+4096)))
	got, err := io.ReadAll(c)
	// The rest of the line, unread when the server closed, may make the
	// close a reset; the error line came first.
	if (err != nil && !errors.Is(err, syscall.ECONNRESET)) || !bytes.Equal(got, []byte("-ERR line too long\r\n")) {
		t.Fatalf("read %q, %v; want the error, then the end", got, err)
	}
}

// TestCommandAllocs pins that serving a command allocates nothing once its
// key exists: the server, not only the library, costs what C costs.
func TestCommandAllocs(t *testing.T) {
	c := serve(t)
	set, get := []byte("SET key 0123456789abcdef\r\n"), []byte("GET key\r\nPING\r\n")
	want := "$16\r\n0123456789abcdef\r\n+PONG\r\n"
	got := make([]byte, 64)
	var err error
	exchange := func() {
		c.Write(set)
		if _, e := io.ReadFull(c, got[:5]); e != nil {
			err = e
		}
		c.Write(get)
		if _, e := io.ReadFull(c, got[:len(want)]); e != nil || string(got[:len(want)]) != want {
			err = errors.Join(e, errors.New("wrong reply to GET"))
		}
	}
	exchange() // the key's first SET allocates it
	c.SetDeadline(time.Now().Add(10 * time.Second))
	allocs := testing.AllocsPerRun(200, exchange)
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per SET and GET, want 0", allocs)
	}
}

// A command longer than the server's first look at the input (4 KiB) is
// served whole, however it arrives.
func TestLongCommand(t *testing.T) {
	c := serve(t)
	val := strings.Repeat("v", 20000)
	cmd := "SET big " + val + "\r\nGET big\r\n"
	go func() {
		for i := 0; i < len(cmd); i += 3000 {
			c.Write([]byte(cmd[i:min(i+3000, len(cmd))]))
		}
	}()
	expect(t, c, "+OK\r\n$20000\r\n"+val+"\r\n")
}
