package main

// Upgrades on SIGHUP and socket activation, driven from outside as a user
// would: the processes of one family (the server and those it upgraded to)
// share one stderr pipe, and this test process is their subreaper, so that
// it can tell each one's exit status, its parent having exited first.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/evlistener/evlistener/internal/servertest"
)

// becomeSubreaper makes this process the parent of orphaned descendants
// (PR_SET_CHILD_SUBREAPER), so that wait4 reports an upgraded server's exit.
var becomeSubreaper = sync.OnceValue(func() error {
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		return os.NewSyscallError("prctl", e)
	}
	return nil
})

// family is a server process and those it upgraded to.
type family struct {
	*servertest.Family
	t *testing.T
}

// startFamily runs path with args (a relative path is taken relative to
// dir), its stderr on a pipe that the processes it upgrades to share.
func startFamily(t *testing.T, dir, path string, args ...string) *family {
	t.Helper()
	if err := becomeSubreaper(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	return &family{servertest.StartFamily(t, cmd), t}
}

var (
	listeningRE = regexp.MustCompile(`(?m)^echo: listening on (\S+)$`)
	upgradedRE  = regexp.MustCompile(`(?m)^echo: upgraded to pid (\d+)$`)
	failedRE    = regexp.MustCompile(`(?m)^echo: upgrade failed: (.*)$`)
	drainedRE   = regexp.MustCompile(`(?m)^echo: drained: (.*)$`)
)

// upgrade sends SIGHUP to pid and waits for the n-th "upgraded" line; it
// returns the new pid and the time the upgrade took, seen from here.
func (f *family) upgrade(pid, n int) (int, time.Duration) {
	f.t.Helper()
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		f.t.Fatal(err)
	}
	m := f.WaitLine(f.t, upgradedRE, n, 20*time.Second)
	took := time.Since(start)
	newPid, _ := strconv.Atoi(m[1])
	f.Add(newPid)
	return newPid, took
}

// waitExit waits for process pid of the family to exit and returns its
// status. The process that started it must have exited already.
func (f *family) waitExit(pid int, d time.Duration) int {
	f.t.Helper()
	if pid == f.First.Process.Pid {
		select {
		case <-f.Exited:
			return f.First.ProcessState.ExitCode()
		case <-time.After(d):
			f.t.Fatalf("pid %d did not exit within %v", pid, d)
		}
	}
	status := make(chan int, 1)
	go func() {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			status <- -1
			return
		}
		status <- ws.ExitStatus()
	}()
	select {
	case s := <-status:
		return s
	case <-time.After(d):
		f.t.Fatalf("pid %d did not exit within %v", pid, d)
		return -1
	}
}

// stopLast sends SIGTERM to the newest process, which must exit 0.
func (f *family) stopLast(pid int) {
	f.t.Helper()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		f.t.Fatal(err)
	}
	if code := f.waitExit(pid, 5*time.Second+servertest.ExitCheckTime); code != 0 {
		f.t.Errorf("pid %d: exit status %d after SIGTERM, want 0", pid, code)
	}
}

// loadCounts are what the clients of an upgrade test saw.
type loadCounts struct {
	opened, refused, reset, wrong, other atomic.Int64
}

func (c *loadCounts) count(err error) {
	switch {
	case err == nil:
	case errors.Is(err, syscall.ECONNREFUSED):
		c.refused.Add(1)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		c.reset.Add(1)
	case errors.Is(err, errWrongEcho), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		c.wrong.Add(1)
	default:
		c.other.Add(1)
	}
}

func (c *loadCounts) String() string {
	return fmt.Sprintf("%d connections opened: %d refused, %d reset, %d wrong or cut echoes, %d other errors",
		c.opened.Load(), c.refused.Load(), c.reset.Load(), c.wrong.Load(), c.other.Load())
}

func (c *loadCounts) failures() int64 {
	return c.refused.Load() + c.reset.Load() + c.wrong.Load() + c.other.Load()
}

var errWrongEcho = errors.New("echo differs from what was sent")

// echoMsg writes msg on c and checks that it comes back.
func echoMsg(c net.Conn, msg []byte) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errWrongEcho
	}
	return nil
}

// shortClient opens, echoes one message on and closes connections until
// stop is closed.
func shortClient(addr string, seed uint64, counts *loadCounts, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, 1))
	msg := make([]byte, 64)
	for {
		select {
		case <-stop:
			return
		default:
		}
		counts.opened.Add(1)
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			counts.count(err)
			continue
		}
		for i := range msg {
			msg[i] = byte(rng.Uint32())
		}
		counts.count(echoMsg(c, msg))
		c.Close()
	}
}

// longClient echoes messages on one connection until stop, then closes it.
func longClient(c net.Conn, seed uint64, counts *loadCounts, stop <-chan struct{}, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	defer c.Close()
	rng := rand.New(rand.NewPCG(seed, 2))
	msg := make([]byte, 4<<10)
	for {
		select {
		case <-stop:
			return
		default:
		}
		for i := range msg {
			msg[i] = byte(rng.Uint32())
		}
		if err := echoMsg(c, msg); err != nil {
			counts.count(err)
			return
		}
	}
}

// TestUpgradeUnderLoad upgrades twice in a row while clients open and close
// connections and others echo on long-lived ones: no client is refused,
// reset or given a wrong echo; each old process serves its long-lived
// connections until they close, then exits 0.
func TestUpgradeUnderLoad(t *testing.T) {
	f := startFamily(t, "", echoBin, "-drain", "60s", "0")
	addr := f.WaitLine(t, listeningRE, 1, 10*time.Second)[1]
	var counts loadCounts
	stopShort, stopLong := make(chan struct{}), make(chan struct{})
	var shortDone sync.WaitGroup
	const shorts = 4
	for i := range shorts {
		shortDone.Add(1)
		go func() {
			defer shortDone.Done()
			shortClient(addr, uint64(i), &counts, stopShort)
		}()
	}
	longDone := make(chan struct{}, 64)
	longs := 0
	openLong := func(n int) {
		for range n {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			counts.opened.Add(1)
			if err != nil {
				counts.count(err)
				continue
			}
			longs++
			go longClient(c, uint64(longs), &counts, stopLong, longDone)
		}
	}
	moreShort := func(n int64) {
		t.Helper()
		target := counts.opened.Load() + n
		servertest.WaitFor(t, 30*time.Second, fmt.Sprintf("%d more short connections", n), func() bool { return counts.opened.Load() >= target })
	}
	openLong(8) // stay with the first process to the end
	moreShort(300)
	pid1 := f.First.Process.Pid
	pid2, took1 := f.upgrade(pid1, 1)
	openLong(8) // served by the second process
	moreShort(300)
	pid3, took2 := f.upgrade(pid2, 2)
	moreShort(300)
	close(stopShort)
	shortDone.Wait()
	// Every long-lived connection is still served where it was accepted.
	if n := f.sockets(pid1); n < 8 {
		t.Errorf("first process serves %d connections after two upgrades, want its 8 long-lived ones", n)
	}
	close(stopLong)
	for range longs {
		servertest.Recv(t, longDone, 30*time.Second, "the long-lived clients")
	}
	if code := f.waitExit(pid1, 10*time.Second); code != 0 {
		t.Errorf("first process: exit status %d, want 0", code)
	}
	if code := f.waitExit(pid2, 10*time.Second); code != 0 {
		t.Errorf("second process: exit status %d, want 0", code)
	}
	// The processes share one stderr pipe, read by another goroutine: the
	// last line may reach it after the process has exited.
	f.WaitLine(t, drainedRE, 2, 5*time.Second)
	if n := len(drainedRE.FindAllString(f.Log(), -1)); n != 2 {
		t.Errorf("%d drain reports, want 2 (one per old process)", n)
	}
	// The newest process serves on, then stops as always.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoMsg(c, []byte("after")); err != nil {
		t.Error(err)
	}
	c.Close()
	f.stopLast(pid3)
	if counts.failures() != 0 {
		t.Errorf("%v; want no failures", &counts)
	}
	t.Logf("%v; %d long-lived; SIGHUP to upgraded: %v, %v", &counts, longs, took1.Round(time.Millisecond), took2.Round(time.Millisecond))
}

// sockets counts the sockets of process pid: its connections, once its
// listeners are closed.
func (f *family) sockets(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		f.t.Fatal(err)
	}
	sockets := 0
	for _, e := range ents {
		if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); strings.HasPrefix(link, "socket:") {
			sockets++
		}
	}
	return sockets
}

// TestUpgradeDrainDeadline: after -drain, the old process closes the
// connections it still has and exits 0; the new one serves on.
func TestUpgradeDrainDeadline(t *testing.T) {
	const drain = time.Second
	f := startFamily(t, "", echoBin, "-drain", drain.String(), "0")
	addr := f.WaitLine(t, listeningRE, 1, 10*time.Second)[1]
	old, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := echoMsg(old, []byte("before")); err != nil {
		t.Fatal(err)
	}
	pid2, _ := f.upgrade(f.First.Process.Pid, 1)
	upgraded := time.Now()
	// The old process still serves its connection, for a while.
	if err := echoMsg(old, []byte("draining")); err != nil {
		t.Fatalf("old connection while draining: %v", err)
	}
	old.SetReadDeadline(time.Now().Add(drain + 10*time.Second))
	if n, err := old.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("old connection after -drain: %d, %v; want EOF", n, err)
	}
	if d := time.Since(upgraded); d < drain-100*time.Millisecond || d > drain+3*time.Second {
		t.Errorf("old connection closed %v after the upgrade, want about -drain %v", d, drain)
	}
	if code := f.waitExit(f.First.Process.Pid, 5*time.Second); code != 0 {
		t.Errorf("old process: exit status %d, want 0", code)
	}
	if m := f.WaitLine(t, drainedRE, 1, time.Second); !strings.Contains(m[1], "closed 1 connections") {
		t.Errorf("drain report %q, want it to say it closed 1 connection", m[0])
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoMsg(c, []byte("new")); err != nil {
		t.Fatal(err)
	}
	f.stopLast(pid2)
}

// replaceFile puts data at path as a new file (a deploy does it so), mode
// 0755.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeFailure: a broken executable at the path, or one that never
// gets ready, fails the upgrade and changes nothing; once a working one is
// deployed there, the next SIGHUP upgrades to it.
func TestUpgradeFailure(t *testing.T) {
	bin, err := os.ReadFile(echoBin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	replaceFile(t, filepath.Join(dir, "echo"), bin)
	// Started by a relative path: the upgrade resolves it against the
	// directory the server started in.
	f := startFamily(t, dir, "./echo", "-upgrade-timeout", "500ms", "0")
	addr := f.WaitLine(t, listeningRE, 1, 10*time.Second)[1]
	pid := f.First.Process.Pid
	held, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	serving := func(when string) {
		t.Helper()
		if err := echoMsg(held, []byte(when)); err != nil {
			t.Fatalf("held connection %s: %v", when, err)
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("new connection %s: %v", when, err)
		}
		defer c.Close()
		if err := echoMsg(c, []byte(when)); err != nil {
			t.Fatalf("new connection %s: %v", when, err)
		}
	}
	for i, tc := range []struct {
		script, says string
	}{
		{"#!/bin/sh\nexit 1\n", "exit status 1"},
		{"#!/bin/sh\nexec sleep 60\n", "not ready within 500ms"},
	} {
		replaceFile(t, filepath.Join(dir, "echo"), []byte(tc.script))
		syscall.Kill(pid, syscall.SIGHUP)
		if m := f.WaitLine(t, failedRE, i+1, 10*time.Second); !strings.Contains(m[1], tc.says) {
			t.Errorf("upgrade failure %q does not say %q", m[0], tc.says)
		}
		serving(fmt.Sprintf("after failed upgrade %d", i+1))
	}
	if strings.Contains(f.Log(), "upgraded") {
		t.Fatalf("a failed upgrade reported success:\n%s", f.Log())
	}
	replaceFile(t, filepath.Join(dir, "echo"), bin)
	pid2, _ := f.upgrade(pid, 1)
	if err := echoMsg(held, []byte("held by the old process")); err != nil {
		t.Fatalf("held connection after the upgrade: %v", err)
	}
	held.Close()
	if code := f.waitExit(pid, 10*time.Second); code != 0 {
		t.Errorf("old process: exit status %d, want 0", code)
	}
	f.stopLast(pid2)
}

// TestUpgradeLoops: with -loops 2 both listening sockets move; once the old
// process has exited, a burst of 64 connections is served in full.
func TestUpgradeLoops(t *testing.T) {
	f := startFamily(t, "", echoBin, "-loops", "2", "0")
	addr := f.WaitLine(t, listeningRE, 1, 10*time.Second)[1]
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	if n := servertest.Listeners(port); n != 2 {
		t.Fatalf("%d sockets listen on port %d, want 2", n, port)
	}
	pid2, _ := f.upgrade(f.First.Process.Pid, 1)
	if code := f.waitExit(f.First.Process.Pid, 10*time.Second); code != 0 {
		t.Errorf("old process: exit status %d, want 0", code)
	}
	if n := servertest.Listeners(port); n != 2 {
		t.Fatalf("%d sockets listen on port %d after the upgrade, want both", n, port)
	}
	for _, l := range listeningRE.FindAllStringSubmatch(f.Log(), -1) {
		if l[1] != addr {
			t.Errorf("new process listens on %s, want %s", l[1], addr)
		}
	}
	const burst = 64
	errs := make(chan error, burst)
	for i := range burst {
		go func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			errs <- echoMsg(c, []byte(fmt.Sprintf("client %d", i)))
		}()
	}
	for range burst {
		if err := servertest.Recv(t, errs, 30*time.Second, "the burst"); err != nil {
			t.Errorf("client: %v", err)
		}
	}
	f.stopLast(pid2)
}

// TestSocketActivation runs echo under systemd-socket-activate: it serves
// the socket it is given and binds nothing itself (the port and -addr on
// its command line are ignored); SIGHUP hands that socket on.
func TestSocketActivation(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (make deps installs it)")
	}
	addr := "127.0.0.1:" + servertest.FreePort(t)
	unused := servertest.FreePort(t)
	f := startFamily(t, "", tool, "-l", addr, echoBin, "-addr", "0.0.0.0", unused)
	// The tool starts echo on the first connection.
	var c net.Conn
	servertest.WaitFor(t, 10*time.Second, "systemd-socket-activate to listen", func() bool {
		c, err = net.Dial("tcp", addr)
		return err == nil
	})
	defer c.Close()
	if got := f.WaitLine(t, listeningRE, 1, 10*time.Second)[1]; got != addr {
		t.Errorf("echo listens on %s, want %s", got, addr)
	}
	if err := echoMsg(c, []byte("activated")); err != nil {
		t.Fatal(err)
	}
	pid := f.First.Process.Pid // the tool execs echo
	uport, _ := strconv.Atoi(unused)
	if n := servertest.Listeners(uport); n != 0 {
		t.Errorf("%d sockets listen on the port argument %s: echo bound it", n, unused)
	}
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	if n := servertest.Listeners(port); n != 1 {
		t.Errorf("%d sockets listen on %s, want the one inherited", n, addr)
	}
	pid2, _ := f.upgrade(pid, 1)
	c.Close()
	if code := f.waitExit(pid, 10*time.Second); code != 0 {
		t.Errorf("activated process: exit status %d, want 0", code)
	}
	c2, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := echoMsg(c2, []byte("upgraded")); err != nil {
		t.Fatal(err)
	}
	f.stopLast(pid2)
}

// TestUpgradeFromOldEcho: an echo from before it ran on evlistener.Server
// handed its sockets over with ECHO_UPGRADE=N (the same fds and readiness
// pipe as the Server's): this echo takes them, says it is ready on the
// pipe, and serves the socket it was given, binding nothing.
func TestUpgradeFromOldEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(echoBin, "0")
	cmd.ExtraFiles = []*os.File{lf, w}
	cmd.Env = append(os.Environ(), "ECHO_UPGRADE=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("echo stderr:\n%s", stderr.String())
		}
	}()
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.Read(make([]byte, 1)); n != 1 {
		t.Fatalf("readiness pipe: %d bytes, %v; want the ready byte", n, err)
	}
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoMsg(c, []byte("from an old echo")); err != nil {
		t.Fatal(err)
	}
}
