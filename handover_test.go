package evlistener

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() {
	helpers["adopt"] = helperAdopt
	helpers["listenfds"] = helperListenFDs
}

// sameSocket reports whether two descriptors are the same socket (the same
// inode), as dup makes them.
func sameSocket(t *testing.T, a, b int) bool {
	t.Helper()
	var sa, sb syscall.Stat_t
	if err := syscall.Fstat(a, &sa); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fstat(b, &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Ino == sb.Ino && sa.Dev == sb.Dev
}

// acceptVia accepts one connection through f, a listening socket, with Go's
// net package: proof that the socket still listens.
func acceptVia(t *testing.T, f *os.File, addr net.Addr) {
	t.Helper()
	ln, err := net.FileListener(f) // its own duplicate
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := dial(t, addr)
	ln.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(5 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept through the duplicate: %v", err)
	}
	defer s.Close()
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s, b); err != nil || b[0] != 'x' {
		t.Fatalf("read through the accepted connection: %q, %v", b, err)
	}
}

// acceptOne checks that l, on a dispatching base, accepts a connection.
func acceptOne(t *testing.T, l *Listener, accepted <-chan int) {
	t.Helper()
	dial(t, l.Addr())
	syscall.Close(recv(t, accepted, "the listener to accept"))
}

func TestListenerFile(t *testing.T) {
	setup := func(t *testing.T) (*Listener, <-chan int) {
		checkNoLeaks(t)
		b := newBase(t)
		accepted := make(chan int, 4)
		l := listenTCP(t, b, func(_ *Listener, fd int, _ net.Addr) { accepted <- fd }, 0)
		startDispatch(t, b, atCleanup)
		return l, accepted
	}
	t.Run("a close-on-exec duplicate of the same socket", func(t *testing.T) {
		l, accepted := setup(t)
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fd := int(f.Fd())
		if fd == l.FD() || !sameSocket(t, fd, l.FD()) {
			t.Fatalf("File fd %d, listener fd %d: want another descriptor of the same socket", fd, l.FD())
		}
		if _, cloexec, err := fdModes(fd); err != nil || !cloexec {
			t.Errorf("duplicate close-on-exec = %v (%v), want true", cloexec, err)
		}
		// Fd, as os/exec calls it for ExtraFiles, must not leave the
		// shared socket blocking: libevent's accept loop would stall.
		if nonblock, _, err := fdModes(l.FD()); err != nil || !nonblock {
			t.Errorf("listening socket non-blocking = %v (%v) after File().Fd(), want true", nonblock, err)
		}
		acceptOne(t, l, accepted)
	})
	t.Run("closing the listener leaves the duplicate listening", func(t *testing.T) {
		l, _ := setup(t)
		addr := l.Addr()
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		acceptVia(t, f, addr)
	})
	t.Run("closing the duplicate leaves the listener serving", func(t *testing.T) {
		l, accepted := setup(t)
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		acceptOne(t, l, accepted)
	})
	t.Run("from inside the accept callback", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		files := make(chan *os.File, 1)
		l := listenTCP(t, b, func(l *Listener, fd int, _ net.Addr) {
			syscall.Close(fd)
			f, err := l.File()
			if err != nil {
				t.Error(err)
			}
			files <- f
		}, 0)
		startDispatch(t, b, atCleanup)
		dial(t, l.Addr())
		if f := recv(t, files, "File in the callback"); f != nil {
			f.Close()
		}
	})
	t.Run("closed listener", func(t *testing.T) {
		l, _ := setup(t)
		l.Close()
		if f, err := l.File(); f != nil || !errors.Is(err, ErrClosed) {
			t.Fatalf("File on a closed listener = %v, %v; want nil, ErrClosed", f, err)
		}
	})
	t.Run("unix path outlives Close after File", func(t *testing.T) {
		checkNoLeaks(t)
		b := newBase(t)
		path := filepath.Join(t.TempDir(), "s")
		l, err := NewBind(b, nil, CloseOnFree, -1, "unix", path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		l.Close()
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("socket path gone after Close: %v; the duplicate serves it", err)
		}
		acceptVia(t, f, &net.UnixAddr{Name: path, Net: "unix"})
	})
}

// adoptEnv runs the test binary in helper mode name through sh, which sets
// LISTEN_PID to the pid the helper will have (exec keeps it), as systemd
// sets it between fork and exec. files become fds 3, 4, ...
func adoptCommand(name string, files []*os.File, env ...string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", "-c", `if [ "$EVL_LISTEN_PID_SELF" = 1 ]; then LISTEN_PID=$$; export LISTEN_PID; fi; exec "$0" "$@"`,
		os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+name)
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	return cmd
}

// TestAdoptInherited hands a listening socket with connections queued in its
// backlog to another process, which adopts it by systemd's convention: every
// queued connection, and those that arrive during the hand-over, is served
// there.
func TestAdoptInherited(t *testing.T) {
	checkNoLeaks(t)
	b := newBase(t)
	// No callback: connections wait in the backlog, as they do in a
	// server that is busy at the moment of the hand-over.
	l := listenTCP(t, b, nil, 0)
	addr := l.Addr()
	const before, during = 16, 16
	var conns []net.Conn
	for i := range before {
		c := dial(t, addr)
		c.Write([]byte{byte(i)})
		conns = append(conns, c)
	}
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := adoptCommand("adopt", []*os.File{f}, "EVL_LISTEN_PID_SELF=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=web")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	f.Close()
	// This process stops listening while the child starts; the socket
	// and its backlog live on in the child's descriptor.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range during {
		c := dial(t, addr)
		c.Write([]byte{byte(before + i)})
		conns = append(conns, c)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	if got, want := recv(t, lines, "the child's report"), "adopted web env="; got != want {
		t.Fatalf("child reports %q, want %q\n%s", got, want, stderr.String())
	}
	for i, c := range conns {
		got := make([]byte, 1)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil || got[0] != byte(i) {
			t.Fatalf("connection %d of %d: echo %q, %v; want %q", i, len(conns), got, err, byte(i))
		}
	}
	stdin.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if err := recv(t, done, "the child to exit"); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
}

// helperAdopt is the child of TestAdoptInherited: it serves, with one-byte
// echoes, the sockets systemd's variables name, until stdin closes.
func helperAdopt() error {
	fds, err := ListenFDs()
	if err != nil {
		return err
	}
	b, err := NewBase()
	if err != nil {
		return err
	}
	var names []string
	for _, fd := range fds {
		_, err := New(b, func(_ *Listener, fd int, _ net.Addr) {
			c, err := FileConn(fd)
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}, CloseOnFree, 0, fd.FD)
		if err != nil {
			return err
		}
		names = append(names, fd.Name)
	}
	fmt.Printf("adopted %s env=%s%s%s\n", strings.Join(names, ","),
		os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDNAMES"))
	go func() {
		io.Copy(io.Discard, os.Stdin)
		b.Close()
	}()
	return b.Dispatch()
}

// listenFDsReport is what helperListenFDs tells its parent.
type listenFDsReport struct {
	Names     []string
	CloseExec bool     // every returned fd
	Err       string   // the error's text
	Is        []string // what errors.Is finds in it
	OpError   bool     // errors.As finds a *net.OpError
	Env       string   // what is left of the variables
	FDsBefore int
	FDsAfter  int
}

// helperListenFDs is the child of TestListenFDs: it calls ListenFDs and
// reports what came of it as JSON on stdout.
func helperListenFDs() error {
	count := func() int {
		ents, _ := os.ReadDir("/proc/self/fd")
		return len(ents) - 1 // less ReadDir's own
	}
	var r listenFDsReport
	r.FDsBefore = count()
	fds, err := ListenFDs()
	r.FDsAfter = count()
	r.CloseExec = true
	for _, fd := range fds {
		r.Names = append(r.Names, fd.Name)
		if _, cloexec, err := fdModes(fd.FD); err != nil || !cloexec {
			r.CloseExec = false
		}
	}
	if err != nil {
		r.Err = err.Error()
		var opErr *net.OpError
		r.OpError = errors.As(err, &opErr)
	}
	for name, target := range map[string]error{
		"EBADF": syscall.EBADF, "ENOTSOCK": syscall.ENOTSOCK, "EPROTOTYPE": syscall.EPROTOTYPE,
		"EINVAL": syscall.EINVAL, "ErrListenPID": ErrListenPID,
	} {
		if errors.Is(err, target) {
			r.Is = append(r.Is, name)
		}
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if s, ok := os.LookupEnv(v); ok {
			r.Env += v + "=" + s + " "
		}
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// socketFile makes a socket of the given type for a child to inherit;
// listen tells whether it listens.
func socketFile(t *testing.T, typ int, listen bool) *os.File {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "socket")
	t.Cleanup(func() { f.Close() })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if listen {
		if err := syscall.Listen(fd, 8); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestListenFDs(t *testing.T) {
	listening := func(t *testing.T) *os.File { return socketFile(t, syscall.SOCK_STREAM, true) }
	for _, tc := range []struct {
		name  string
		files func(t *testing.T) []*os.File
		env   []string
		self  bool // LISTEN_PID is the child's
		names []string
		is    string // what the error wraps; "" for no error
		says  string // in the error's text
	}{
		{name: "two named sockets", self: true, env: []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=web:admin"},
			files: func(t *testing.T) []*os.File { return []*os.File{listening(t), listening(t)} },
			names: []string{"web", "admin"}},
		{name: "no names", self: true, env: []string{"LISTEN_FDS=1"},
			files: func(t *testing.T) []*os.File { return []*os.File{listening(t)} },
			names: []string{"unknown"}},
		{name: "no variables", files: func(t *testing.T) []*os.File { return []*os.File{listening(t)} }},
		{name: "LISTEN_FDS=0", self: true, env: []string{"LISTEN_FDS=0"}},
		{name: "LISTEN_PID of another process", env: []string{"LISTEN_FDS=1", "LISTEN_PID=1"},
			files: func(t *testing.T) []*os.File { return []*os.File{listening(t)} },
			is:    "ErrListenPID", says: "LISTEN_PID=1"},
		{name: "LISTEN_FDS without LISTEN_PID", env: []string{"LISTEN_FDS=1"},
			files: func(t *testing.T) []*os.File { return []*os.File{listening(t)} },
			is:    "ErrListenPID", says: "without LISTEN_PID"},
		{name: "LISTEN_PID not a number", env: []string{"LISTEN_FDS=1", "LISTEN_PID=me"},
			says: "LISTEN_PID=\"me\""},
		{name: "LISTEN_FDS not a number", self: true, env: []string{"LISTEN_FDS=two"},
			says: "LISTEN_FDS=\"two\""},
		{name: "LISTEN_FDS negative", self: true, env: []string{"LISTEN_FDS=-1"},
			says: "LISTEN_FDS=\"-1\""},
		{name: "LISTEN_FDNAMES of another count", self: true, env: []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=a:b"},
			files: func(t *testing.T) []*os.File { return []*os.File{listening(t)} },
			says:  "LISTEN_FDNAMES"},
		{name: "LISTEN_FDS past the open fds", self: true, env: []string{"LISTEN_FDS=64"},
			files: func(t *testing.T) []*os.File { return []*os.File{listening(t)} },
			is:    "EBADF", says: "(unknown) is not open: listen: fcntl: bad file descriptor"},
		{name: "a file that is not a socket", self: true, env: []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=web:log"},
			files: func(t *testing.T) []*os.File {
				f, err := os.CreateTemp(t.TempDir(), "log")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				return []*os.File{listening(t), f}
			},
			is: "ENOTSOCK", says: "fd 4 (log) is not a socket"},
		{name: "a socket that is not listening", self: true, env: []string{"LISTEN_FDS=1"},
			files: func(t *testing.T) []*os.File { return []*os.File{socketFile(t, syscall.SOCK_STREAM, false)} },
			is:    "EINVAL", says: "fd 3 (unknown) is not listening: listen tcp 127.0.0.1:"},
		{name: "a datagram socket", self: true, env: []string{"LISTEN_FDS=1"},
			files: func(t *testing.T) []*os.File { return []*os.File{socketFile(t, syscall.SOCK_DGRAM, false)} },
			is:    "EPROTOTYPE", says: "not a stream socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var files []*os.File
			if tc.files != nil {
				files = tc.files(t)
			}
			env := tc.env
			if tc.self {
				env = append(env, "EVL_LISTEN_PID_SELF=1")
			}
			cmd := adoptCommand("listenfds", files, env...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, stderr.String())
			}
			var r listenFDsReport
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("child's report %q: %v", out, err)
			}
			if r.Env != "" {
				t.Errorf("variables left set: %s", r.Env)
			}
			if r.FDsAfter != r.FDsBefore {
				t.Errorf("child's open fds %d after ListenFDs, %d before", r.FDsAfter, r.FDsBefore)
			}
			if tc.is == "" && tc.says == "" {
				if r.Err != "" {
					t.Fatalf("ListenFDs: %s", r.Err)
				}
				if strings.Join(r.Names, ":") != strings.Join(tc.names, ":") {
					t.Errorf("names %q, want %q", r.Names, tc.names)
				}
				if !r.CloseExec {
					t.Error("an adopted fd is not close-on-exec")
				}
				return
			}
			if r.Err == "" || len(r.Names) != 0 {
				t.Fatalf("ListenFDs returned %q and no error", r.Names)
			}
			if !strings.Contains(r.Err, tc.says) {
				t.Errorf("error %q does not say %q", r.Err, tc.says)
			}
			if tc.is != "" && (len(r.Is) != 1 || r.Is[0] != tc.is) {
				t.Errorf("error %q wraps %q, want %s", r.Err, r.Is, tc.is)
			}
			if tc.is != "" && tc.is != "ErrListenPID" && !r.OpError {
				t.Errorf("error %q holds no *net.OpError", r.Err)
			}
		})
	}
}
