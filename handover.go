package evlistener

// Socket hand-over: a listener's socket as a duplicate for another process
// (Listener.File), and the adoption of sockets a parent passed in by
// systemd's socket activation convention (ListenFDs).

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// File returns a duplicate of the listening socket as an *os.File, as
// (*net.TCPListener).File does, for handing the socket to another process:
// pass it in (*exec.Cmd).ExtraFiles, where it survives exec; in this process
// it is close-on-exec, so no other child inherits it by accident.
//
// The duplicate is the same socket: connections waiting in its backlog can
// be accepted through either descriptor, and the socket stays open, with
// its backlog, for as long as one of them is. The listener keeps serving;
// closing it (even with CloseOnFree) leaves the duplicate open, and closing
// the duplicate leaves the listener serving. So a process hands its socket
// over without refusing or resetting a connection by calling File, starting
// the new process with it, and closing its listener once the new process
// accepts.
//
// Both descriptors share the socket's O_NONBLOCK status, which the
// listener needs; the File's Fd, which os/exec calls for ExtraFiles, leaves
// it set. Do not clear it on the duplicate.
//
// After File, Close no longer removes the path of a unix socket that
// NewBind made with CloseOnFree: the duplicate may be serving it in another
// process by then.
//
// Errors are *net.OpError values that wrap the errno, or ErrClosed on a
// closed listener.
func (l *Listener) File() (*os.File, error) { return loopGet("file", l, (*Listener).file) }

func (l *Listener) file() (*os.File, error) {
	// Close-on-exec: only the child it is handed to, through ExtraFiles,
	// should inherit it.
	fd, err := sysFcntl(l.fd, syscall.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	// os.NewFile leaves the mode of a non-blocking descriptor alone, also
	// in Fd: the socket stays non-blocking for libevent.
	l.unlink = ""
	return os.NewFile(uintptr(fd), "evlistener "+l.network+" "+addrString(l.addr)), nil
}

func sysFcntl(fd, cmd, arg int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), uintptr(arg))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return "?"
	}
	return a.String()
}

// ListenFD is a listening socket this process inherited (see ListenFDs).
type ListenFD struct {
	FD   int    // the descriptor, from 3 on
	Name string // its name from LISTEN_FDNAMES, or "unknown" as systemd says without it
	Addr net.Addr
}

// ErrListenPID is wrapped by the error of ListenFDs when LISTEN_PID names
// another process: the variables were meant for that process (one that
// started this one and did not unset them), and no socket is this one's.
var ErrListenPID = errors.New("evlistener: LISTEN_PID is another process")

// listenFDsStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// ListenFDs returns the listening sockets that systemd's socket activation
// convention passed to this process: LISTEN_FDS descriptors from 3 on, if
// LISTEN_PID is this process, named by LISTEN_FDNAMES (colon-separated) when
// it is set. It unsets the three variables in every case, so that child
// processes do not see them. Without LISTEN_FDS it returns no sockets and no
// error.
//
// Each descriptor must be a listening stream socket (TCP or unix); it is
// made close-on-exec, and is the caller's: New(b, cb, flags, 0, fd.FD)
// serves it. Errors name the descriptor and wrap a *net.OpError around the
// errno: EBADF for a descriptor that is not open (LISTEN_FDS past the open
// descriptors), ENOTSOCK for one that is not a socket, EPROTOTYPE for a
// socket that is not a stream, EINVAL for one that does not listen. A
// LISTEN_PID of another process gives an error that wraps ErrListenPID.
// On an error no descriptor is returned, changed or closed: a wrong
// LISTEN_FDS may name descriptors that the process opened itself.
//
// ListenFDs reads and changes the process environment: call it once, as the
// program starts.
func ListenFDs() ([]ListenFD, error) {
	pid, pidSet := os.LookupEnv("LISTEN_PID")
	nfds, nfdsSet := os.LookupEnv("LISTEN_FDS")
	names, namesSet := os.LookupEnv("LISTEN_FDNAMES")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if !nfdsSet {
		return nil, nil
	}
	if !pidSet {
		return nil, fmt.Errorf("%w: LISTEN_FDS=%q without LISTEN_PID", ErrListenPID, nfds)
	}
	if p, err := strconv.Atoi(pid); err != nil || p <= 0 {
		return nil, fmt.Errorf("evlistener: LISTEN_PID=%q: want a process id", pid)
	} else if p != os.Getpid() {
		return nil, fmt.Errorf("%w: LISTEN_PID=%d, this process is %d", ErrListenPID, p, os.Getpid())
	}
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 0 || n > 1<<20 {
		return nil, fmt.Errorf("evlistener: LISTEN_FDS=%q: want a count of descriptors", nfds)
	}
	fds := make([]ListenFD, n)
	var nameList []string
	if namesSet {
		nameList = strings.Split(names, ":")
		if len(nameList) != n {
			return nil, fmt.Errorf("evlistener: LISTEN_FDNAMES=%q names %d descriptors, LISTEN_FDS=%d", names, len(nameList), n)
		}
	}
	for i := range fds {
		fds[i] = ListenFD{FD: listenFDsStart + i, Name: "unknown"}
		if namesSet {
			fds[i].Name = nameList[i]
		}
	}
	// A count past the open descriptors is its own mistake, and must not
	// be reported as "not a socket" of whatever this process opened there.
	for _, f := range fds {
		if _, err := sysFcntl(f.FD, syscall.F_GETFD, 0); err != nil {
			return nil, f.err("not open", "", nil, os.NewSyscallError("fcntl", err))
		}
	}
	for i := range fds {
		if err := fds[i].check(); err != nil {
			return nil, err
		}
	}
	for _, f := range fds {
		syscall.CloseOnExec(f.FD)
	}
	return fds, nil
}

// check makes sure f is a listening stream socket and records its address.
func (f *ListenFD) check() error {
	typ, err := syscall.GetsockoptInt(f.FD, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil {
		return f.err("not a socket", "", nil, os.NewSyscallError("getsockopt", err))
	}
	addr := sockname(f.FD)
	network := "tcp"
	if _, ok := addr.(*net.UnixAddr); ok {
		network = "unix"
	}
	if typ != syscall.SOCK_STREAM {
		return f.err("not a stream socket", network, addr, os.NewSyscallError("getsockopt", syscall.EPROTOTYPE))
	}
	listening, err := syscall.GetsockoptInt(f.FD, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	if err != nil {
		return f.err("not a socket", network, addr, os.NewSyscallError("getsockopt", err))
	}
	if listening == 0 {
		// EINVAL is what accept says on a socket that does not listen.
		return f.err("not listening", network, addr, os.NewSyscallError("getsockopt", syscall.EINVAL))
	}
	f.Addr = addr
	return nil
}

func (f *ListenFD) err(what, network string, addr net.Addr, err error) error {
	return fmt.Errorf("evlistener: inherited fd %d (%s) is %s: %w", f.FD, f.Name, what,
		&net.OpError{Op: "listen", Net: network, Addr: addr, Err: err})
}
