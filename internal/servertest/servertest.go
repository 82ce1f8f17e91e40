// Package servertest runs a command of this module as its tests' server:
// it builds the command once, as the test binary is built (-race, -asan),
// starts it on port 0 and waits for its listening line, and reads what the
// kernel knows of it from /proc. The tests of cmd/echo and cmd/chat share
// it; it is imported by tests only.
package servertest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Main builds the command in the current directory (go test runs a
// package's tests there) with BuildFlags into a temporary directory, sets
// *bin to the binary's path, runs the tests, removes the binary and exits
// with the tests' status. A command's TestMain calls it.
func Main(m *testing.M, name string, bin *string) {
	dir, err := os.MkdirTemp("", name+"-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, name)
	// go test puts its own go first on PATH.
	build := exec.Command("go", append(append([]string{"build"}, BuildFlags...), "-o", *bin, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building %s: %v\n", name, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Run runs bin with args, which must make it exit within 10 s, and returns
// its exit status and its stderr.
func Run(t testing.TB, bin, name string, args ...string) (code int, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var b strings.Builder
	cmd.Stderr = &b
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not exit", name)
	}
	return cmd.ProcessState.ExitCode(), b.String()
}

// Process is a running server.
type Process struct {
	Cmd *exec.Cmd
	// Addr is the address of its listening line, "NAME: listening on
	// ADDR".
	Addr string

	name   string
	exited <-chan struct{} // closed once it has exited and its stderr is read
	mu     sync.Mutex
	log    strings.Builder // its stderr
	logged chan struct{}   // a token after each line of stderr
}

// Start runs bin, the command name, with args and port 0, and waits for its
// listening line. The process is killed when the test ends, and its stderr
// logged if the test failed.
func Start(t testing.TB, bin, name string, args ...string) *Process {
	t.Helper()
	exited := make(chan struct{})
	p := &Process{
		Cmd:    exec.Command(bin, append(args, "0")...),
		exited: exited,
		name:   name,
		logged: make(chan struct{}, 1),
	}
	stderr, err := p.Cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			select {
			case p.logged <- struct{}{}:
			default:
			}
			if a, ok := strings.CutPrefix(line, name+": listening on "); ok {
				addrc <- a
			}
		}
		p.Cmd.Wait() // after the last read of the pipe, as Wait requires
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.Cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s %v stderr:\n%s", name, args, p.Log())
		}
	})
	select {
	case p.Addr = <-addrc:
	case <-p.exited:
		t.Fatalf("%s %v exited before listening: %v\n%s", name, args, p.Cmd.ProcessState, p.Log())
	case <-time.After(10 * time.Second):
		t.Fatalf("%s %v printed no listening line", name, args)
	}
	return p
}

// Log returns what the server has printed on stderr so far.
func (p *Process) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// WaitLog waits up to d for the server to have printed a line holding s.
func (p *Process) WaitLog(t testing.TB, d time.Duration, s string) {
	t.Helper()
	select {
	case <-p.WhenLogged(s):
	case <-time.After(d):
		t.Fatalf("%s did not print %q within %v", p.name, s, d)
	}
}

// WhenLogged returns a channel that is closed once the server has printed
// a line holding s; it is never closed if the server exits without.
func (p *Process) WhenLogged(s string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for !strings.Contains(p.Log(), s) {
			select {
			case <-p.logged:
			case <-p.exited:
				if !strings.Contains(p.Log(), s) {
					return
				}
			}
		}
		close(ch)
	}()
	return ch
}

// Stop sends sig, then is Stopped.
func (p *Process) Stop(t testing.TB, sig os.Signal, d time.Duration, report string) (n int, took time.Duration) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return p.Stopped(t, sig, d, report)
}

// Stopped checks that the server exits with status 0 within d, having been
// sent sig, and that it reports its shutdown in a line "NAME: SIG: " and
// report, a format with a %d and then a %s that is a time.Duration. It
// returns the two.
func (p *Process) Stopped(t testing.TB, sig os.Signal, d time.Duration, report string) (n int, took time.Duration) {
	t.Helper()
	if code := p.Wait(t, d, sig); code != 0 {
		t.Errorf("exit status after %v: %d, want 0", sig, code)
	}
	var s string
	for _, line := range strings.Split(p.Log(), "\n") {
		if _, err := fmt.Sscanf(line, p.name+": "+sig.String()+": "+report, &n, &s); err == nil {
			took, _ = time.ParseDuration(s)
		}
	}
	if took == 0 {
		t.Fatalf("no shutdown report after %v in:\n%s", sig, p.Log())
	}
	return n, took
}

// Wait waits up to d for the server to exit after what (a signal, an
// event), and returns its exit status.
func (p *Process) Wait(t testing.TB, d time.Duration, what any) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v of %v", p.name, d, what)
	}
	return p.Cmd.ProcessState.ExitCode()
}

// Dial connects to the server within 5 s; the connection is closed when
// the test ends.
func (p *Process) Dial(t testing.TB) *net.TCPConn {
	t.Helper()
	return p.DialControl(t, nil)
}

// DialControl is Dial with control, if not nil, setting socket options
// before the connection is made.
func (p *Process) DialControl(t testing.TB, control func(fd uintptr)) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if control != nil {
		d.Control = func(_, _ string, rc syscall.RawConn) error { return rc.Control(control) }
	}
	c, err := d.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// RSS reads the server's resident set size from /proc/PID/status.
func (p *Process) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// CPUTime reads the user and system time the server has used from
// /proc/PID/stat (in USER_HZ ticks, 100 a second on Linux).
func (p *Process) CPUTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("no command name in /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	var ticks int64
	for _, v := range f[11:13] { // utime, stime: fields 14 and 15
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// SampleRSS records the server's peak RSS every 10 ms until stop is closed;
// the returned channel then gives the peak.
func (p *Process) SampleRSS(t testing.TB, stop <-chan struct{}) <-chan int64 {
	peakc := make(chan int64, 1)
	go func() {
		var peak int64
		defer func() { peakc <- peak }()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			rss, err := p.RSS()
			if err != nil {
				t.Error(err)
				return
			}
			peak = max(peak, rss)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return peakc
}

// OpenFDs counts the server's open descriptors.
func (p *Process) OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// ShutdownListener shuts the server's socket listening on Addr down for
// reading, through a duplicate taken with pidfd_getfd: its accept then
// fails with EINVAL.
func (p *Process) ShutdownListener(t testing.TB) {
	t.Helper()
	const sysPidfdOpen, sysPidfdGetfd = 434, 438 // the same on every Linux architecture
	_, portStr, _ := net.SplitHostPort(p.Addr)
	port, _ := strconv.Atoi(portStr)
	lfd := listeningFD(t, p.Cmd.Process.Pid, port)
	pidfd, _, e := syscall.Syscall(sysPidfdOpen, uintptr(p.Cmd.Process.Pid), 0, 0)
	if e != 0 {
		t.Fatal(os.NewSyscallError("pidfd_open", e))
	}
	defer syscall.Close(int(pidfd))
	dup, _, e := syscall.Syscall(sysPidfdGetfd, pidfd, uintptr(lfd), 0)
	if e != 0 {
		t.Fatal(os.NewSyscallError("pidfd_getfd", e))
	}
	defer syscall.Close(int(dup))
	if err := syscall.Shutdown(int(dup), syscall.SHUT_RD); err != nil {
		t.Fatal(os.NewSyscallError("shutdown", err))
	}
}

// listeningInodes returns the inodes of the TCP sockets listening on port,
// from /proc/net.
func listeningInodes(port int) []string {
	var inodes []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			// local_address is HEXIP:HEXPORT, st 0A is LISTEN.
			if len(fields) > 9 && fields[3] == "0A" && strings.HasSuffix(fields[1], fmt.Sprintf(":%04X", port)) {
				inodes = append(inodes, fields[9])
			}
		}
	}
	return inodes
}

// Listeners counts the TCP sockets listening on port.
func Listeners(port int) int { return len(listeningInodes(port)) }

// listeningFD finds the descriptor number, in process pid, of the TCP
// socket listening on port: its inode from /proc/net/tcp, then the fd that
// links to it.
func listeningFD(t testing.TB, pid, port int) int {
	t.Helper()
	inodes := listeningInodes(port)
	if len(inodes) == 0 {
		t.Fatalf("no socket listens on port %d", port)
	}
	inode := inodes[len(inodes)-1]
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if link, _ := os.Readlink(filepath.Join(dir, e.Name())); link == "socket:["+inode+"]" {
			fd, _ := strconv.Atoi(e.Name())
			return fd
		}
	}
	t.Fatalf("process %d has no fd for socket inode %s", pid, inode)
	return -1
}

// Family is a server process and those it upgraded to, which inherit its
// stderr pipe.
type Family struct {
	First *exec.Cmd
	// Exited is closed once First has exited; First.ProcessState is set
	// by then.
	Exited <-chan struct{}

	mu   sync.Mutex
	log  strings.Builder // the family's stderr
	pids []int           // every process's, First's first
}

// StartFamily starts cmd with its stderr on a pipe that the processes it
// upgrades to share. When the test ends every process of the family, cmd
// and those Added, is killed (and reaped if it is a child of this process),
// and the family's stderr logged if the test failed.
func StartFamily(t testing.TB, cmd *exec.Cmd) *Family {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan struct{})
	f := &Family{First: cmd, Exited: exited, pids: []int{cmd.Process.Pid}}
	go func() {
		cmd.Wait()
		close(exited)
	}()
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			f.mu.Lock()
			f.log.WriteString(sc.Text() + "\n")
			f.mu.Unlock()
		}
		r.Close()
	}()
	t.Cleanup(func() {
		f.mu.Lock()
		pids := append([]int(nil), f.pids...)
		f.mu.Unlock()
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		<-exited
		for _, pid := range pids[1:] {
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, syscall.WNOHANG, nil) // a zombie of ours, if it is
		}
		if t.Failed() {
			t.Logf("server family stderr:\n%s", f.Log())
		}
	})
	return f
}

// Add counts pid, a process the family upgraded to, as one of it.
func (f *Family) Add(pid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pids = append(f.pids, pid)
}

// Log returns what the family has printed on stderr so far.
func (f *Family) Log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.log.String()
}

// WaitLine waits up to d for the n-th (from 1) line of the family's stderr
// that matches re, a multi-line pattern, and returns its submatches.
func (f *Family) WaitLine(t testing.TB, re *regexp.Regexp, n int, d time.Duration) []string {
	t.Helper()
	var m []string
	WaitFor(t, d, fmt.Sprintf("line %d matching %q", n, re), func() bool {
		all := re.FindAllStringSubmatch(f.Log(), -1)
		if len(all) >= n {
			m = all[n-1]
			return true
		}
		return false
	})
	return m
}

// FreePort returns a port that nothing listens on now.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// WaitFor polls cond until it holds, failing the test after d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Recv waits up to d for a value on ch.
func Recv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		panic("unreachable")
	}
}
