package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/evlistener/evlistener/bench/internal/loadresult"
)

// heldLoad runs bin/loadgen -hold against addr with workload w. Once every
// connection is open it calls held with the generator's pid and window:
// window lets the load go and returns once the window's ops, and those in
// flight when it closed, are done, before any connection closes. held
// measures around it (strace attached, CPU clocks read) and returns
// window's error or its own. Then the generator closes its connections and
// exits. Every wait is bounded.
func heldLoad(cfg config, addr, w string, held func(loadPID int, window func() error) error) (loadresult.Result, error) {
	var res loadresult.Result
	ctx, cancel := context.WithTimeout(context.Background(), loadLimit(cfg)+10*time.Second)
	defer cancel()
	argv := loadArgv(cfg, addr, w, "-hold")
	load := exec.CommandContext(ctx, argv[0], argv[1:]...)
	stdin, err := load.StdinPipe()
	if err != nil {
		return res, err
	}
	stderr, err := load.StderrPipe()
	if err != nil {
		return res, err
	}
	var stdout bytes.Buffer
	load.Stdout = &stdout
	if err := load.Start(); err != nil {
		return res, fmt.Errorf("loadgen: %v", err)
	}
	var loadErr bytes.Buffer
	stages := lines(stderr, &loadErr)
	finish := func(err error) (loadresult.Result, error) {
		stdin.Close()
		for range stages { // to EOF, so that Wait may close the pipe
		}
		waitErr := load.Wait() // before stdout is read: Wait ends the copying
		res, lerr := loadOutcome(stdout.String(), loadErr.String(), waitErr)
		return res, firstErr(err, lerr)
	}
	if err := waitFor(stages, "loadgen: connected", loadLimit(cfg)); err != nil {
		return finish(fmt.Errorf("loadgen: %v", err))
	}
	window := func() error {
		if _, err := io.WriteString(stdin, "\n"); err != nil {
			return err
		}
		return waitFor(stages, "loadgen: finished", loadLimit(cfg))
	}
	return finish(held(load.Process.Pid, window))
}

// lines sends r's lines, keeping a copy of them in keep, and closes the
// channel at EOF.
func lines(r io.Reader, keep *bytes.Buffer) <-chan string {
	ch := make(chan string, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if keep.Len() < 4096 {
				keep.WriteString(sc.Text() + "\n")
			}
			ch <- sc.Text()
		}
	}()
	return ch
}

// waitFor reads lines until one starts with prefix, for at most limit.
func waitFor(lines <-chan string, prefix string, limit time.Duration) error {
	deadline := time.After(limit)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return fmt.Errorf("exited before %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return nil
			}
		case <-deadline:
			return fmt.Errorf("no %q within %v", prefix, limit)
		}
	}
}
