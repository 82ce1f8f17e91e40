package main

// Upgrades: on SIGHUP the server starts the executable anew and hands it
// its listening sockets; the new process says when it is serving, and the
// old one stops accepting and drains.
//
// The hand-over, from the old process to the new one:
//   - fds 3 to 3+N-1: the N listening sockets (Listener.File);
//   - fd 3+N: the write end of a pipe, on which the new process writes one
//     byte once its listeners are open and its loops started;
//   - ECHO_UPGRADE=N in the environment.
// systemd's LISTEN_PID cannot be used for this: it must hold the new
// process's pid, which os/exec does not know before exec.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/evlistener/evlistener"
)

const upgradeEnv = "ECHO_UPGRADE"

// defaultUpgradeTimeout bounds how long a new process may take to be
// ready before the upgrade is given up.
const defaultUpgradeTimeout = 10 * time.Second

// startPath is the path this process was started from, made absolute
// against the directory it started in: os.Args[0], looked up in PATH when it
// has no slash. Symbolic links are not resolved and the file is not
// opened, so that an upgrade runs what is at that path now (a deploy that
// replaced the file or moved a link), not os.Executable's file.
func startPath() (string, error) {
	p := os.Args[0]
	if !strings.Contains(p, "/") {
		var err error
		if p, err = exec.LookPath(p); err != nil && !errors.Is(err, exec.ErrDot) {
			return "", err
		}
	}
	return filepath.Abs(p)
}

// inheritedSockets returns the listening sockets this process was given,
// by an upgrading echo or by systemd, with the readiness pipe of an
// upgrade (nil otherwise). No sockets: bind as usual.
func inheritedSockets(stderr io.Writer) (fds []int, ready *os.File, err error) {
	if v, ok := os.LookupEnv(upgradeEnv); ok {
		os.Unsetenv(upgradeEnv)
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, nil, fmt.Errorf("%s=%q: want the number of sockets handed over", upgradeEnv, v)
		}
		for i := range n {
			fds = append(fds, 3+i)
			// Not for this process's own children, which get theirs
			// through ExtraFiles.
			syscall.CloseOnExec(3 + i)
		}
		syscall.CloseOnExec(3 + n)
		return fds, os.NewFile(uintptr(3+n), "upgrade-ready"), nil
	}
	lfds, err := evlistener.ListenFDs()
	if errors.Is(err, evlistener.ErrListenPID) {
		// The variables are another process's: not socket activation.
		fmt.Fprintf(stderr, "echo: not socket-activated: %v\n", err)
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	for _, f := range lfds {
		fds = append(fds, f.FD)
	}
	return fds, nil, nil
}

// signalReady tells the process that started this one that it serves.
func signalReady(ready *os.File) {
	if ready == nil {
		return
	}
	// An error means the old process gave up on this one already; it has
	// said so, and this one serves on.
	ready.Write([]byte{1})
	ready.Close()
}

// upgrade is a new process being started.
type upgrade struct {
	cmd  *exec.Cmd
	done chan error // nil once it is ready
}

// startUpgrade starts path with args, handing it srv's listening sockets,
// and reports on u.done whether it became ready within timeout. On a
// failure the new process is gone and nothing here has changed.
func (srv *server) startUpgrade(path string, args []string, timeout time.Duration) (*upgrade, error) {
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, ln := range srv.sockets {
		f, err := ln.File()
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	files = append(files, w)
	cmd := exec.Command(path, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", upgradeEnv, len(srv.sockets)))
	if err := cmd.Start(); err != nil {
		r.Close()
		return nil, err
	}
	u := &upgrade{cmd: cmd, done: make(chan error, 1)}
	go func() {
		defer r.Close()
		// The new process, and so the pipe's only writer, has the write
		// end now (closed on return here): EOF means it exited, or
		// closed it, without saying it was ready.
		r.SetReadDeadline(time.Now().Add(timeout))
		n, err := r.Read(make([]byte, 1))
		switch {
		case n == 1:
			// Not waited for: it normally outlives this process,
			// and one that exits first is left for whoever inherits
			// it (init, a service manager) to reap and report.
			u.done <- nil
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			cmd.Process.Kill()
			cmd.Wait()
			err = fmt.Errorf("pid %d not ready within %v", cmd.Process.Pid, timeout)
		default:
			if werr := cmd.Wait(); werr != nil {
				err = fmt.Errorf("pid %d: %v", cmd.Process.Pid, werr)
			} else {
				err = fmt.Errorf("pid %d exited without saying it was ready", cmd.Process.Pid)
			}
		}
		u.done <- err
	}()
	return u, nil
}

// cancel stops a new process that is not ready yet: this process is
// shutting down.
func (u *upgrade) cancel() {
	u.cmd.Process.Kill()
	<-u.done
}
