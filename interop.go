package evlistener

import (
	"net"
	"os"
	"syscall"
)

// FileConn turns fd, a connected socket such as the one an AcceptFunc
// receives, into a net.Conn: a *net.TCPConn, *net.UnixConn or whatever
// net.FileConn makes of it, served by Go's own poller from then on. FileConn
// takes ownership of fd in every case: on success the net.Conn holds the only
// descriptor of the socket (net.FileConn works on a duplicate, so fd itself is
// closed before FileConn returns), and on failure fd is closed too. The
// caller must not use or close fd afterwards.
//
// Errors are *net.OpError values as net.FileConn returns them, wrapping the
// errno (errors.Is(err, syscall.ENOTSOCK)). It may be called from any
// goroutine, including from an AcceptFunc.
func FileConn(fd int) (net.Conn, error) {
	if fd < 0 {
		return nil, &net.OpError{Op: "file", Net: "file+net", Err: os.NewSyscallError("fcntl", syscall.EBADF)}
	}
	f := os.NewFile(uintptr(fd), "evlistener")
	c, err := net.FileConn(f)
	// Closes fd: the conn, if any, has its own duplicate.
	f.Close()
	return c, err
}
