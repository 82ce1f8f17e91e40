package evlistener

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/evlistener/evlistener/internal/ctest"
)

// helperEnv selects a helper mode when the test binary re-executes itself:
// tests that lower RLIMIT_NOFILE run in a child process, because the Go
// runtime of the test process must not run out of descriptors.
const helperEnv = "EVLISTENER_TEST_HELPER"

// helpers are the child-process modes, by name.
var helpers = map[string]func() error{}

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name))
	}
	flag.Parse()
	// libevent's regression suite runs with lock debugging; so does this
	// one, except when benchmarking, where the checks would cost time.
	if flag.Lookup("test.bench").Value.String() == "" {
		if err := enableLibeventDebugging(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	// As git2go does: a handle still registered after every test has
	// closed its objects is a leak of the Go object and of its C side.
	if n := liveHandles(); n != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d cgo handles still registered after the tests\n", n)
		code = 1
	}
	os.Exit(code)
}

// enableLibeventDebugging turns on libevent's lock debugging and event
// debug mode, after its pthread locking, before the first base.
func enableLibeventDebugging() error {
	if err := UsePthreads(); err != nil {
		return err
	}
	ctest.EnableLibeventDebugging()
	return nil
}

func runHelper(name string) int {
	fn := helpers[name]
	if fn == nil {
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
		return 2
	}
	if err := enableLibeventDebugging(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The runtime opens its netpoll epoll fd with the first timer; do it
	// now, before a helper takes the free descriptors away.
	time.AfterFunc(time.Hour, func() {}).Stop()
	if err := fn(); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", name, err)
		return 1
	}
	return 0
}

// helperProcess is the test binary running in a helper mode. Its stdin and
// stdout are pipes; its stderr goes to the test log on failure.
type helperProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser
	stderr strings.Builder
}

// helperCommand is the test binary in helper mode name, with env added to
// its environment.
func helperCommand(name string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+name), env...)
	return cmd
}

// startHelper starts helperCommand(name, env...); a child still running
// when the test ends is killed.
func startHelper(t *testing.T, name string, env ...string) *helperProcess {
	t.Helper()
	p := &helperProcess{cmd: helperCommand(name, env...)}
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if p.stdout, err = p.cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

// wait waits at most d for the child to exit and fails the test unless it
// exits with status 0.
func (p *helperProcess) wait(t *testing.T, d time.Duration) {
	t.Helper()
	p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("helper process: %v\n%s", err, p.stderr.String())
		}
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-done
		t.Fatalf("helper process did not exit within %v\n%s", d, p.stderr.String())
	}
}
