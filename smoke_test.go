package evlistener

import (
	"net"
	"syscall"
	"testing"
)

func TestSmoke(t *testing.T) {
	b, err := NewBase()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	n := 0
	var l *Listener
	l, err = NewBind(b, func(l *Listener, fd int, addr net.Addr) {
		n++
		syscall.Close(fd)
		t.Logf("accepted from %v", addr)
		if n == 2 {
			l.Disable()
		}
	}, CloseOnFree|Reuseable, -1, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("listening on %v fd %d method %s", l.Addr(), l.FD(), b.Method())
	c1, _ := net.Dial("tcp", l.Addr().String())
	c2, _ := net.Dial("tcp", l.Addr().String())
	defer c1.Close()
	defer c2.Close()
	if err := b.Dispatch(); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatal(n)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != ErrClosed {
		t.Fatal(err)
	}
}
