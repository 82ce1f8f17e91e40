package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"unsafe"
)

// -spin: each server runs beside a spinner, a process at idle priority
// (SCHED_IDLE) pinned to the server's CPU, which takes the CPU whenever the
// server sleeps, so that the CPU never halts. On a machine whose idle CPUs
// halt at once (cpuIdle), each wake-up of a sleeping server then costs what
// it costs on a busy machine, and the ratios leave out what waking a halted
// CPU costs each server: bench/README.md, "Where the accept gap lies". The
// spinner is a process of its own: its CPU time is neither the server's nor
// counted among the other processes'.

// spinnerEnv marks the runner's own binary, started again, as a spinner.
const spinnerEnv = "EVL_RUNNER_SPINNER"

// schedIdle is Linux's SCHED_IDLE policy.
const schedIdle = 5

// spinIfAsked turns this process into a spinner and never returns when it
// was started as one (startSpinner).
func spinIfAsked() {
	if os.Getenv(spinnerEnv) != "1" {
		return
	}
	runtime.LockOSThread()
	var param struct{ priority int32 }
	if _, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, schedIdle, uintptr(unsafe.Pointer(&param))); errno != 0 {
		fmt.Fprintf(os.Stderr, "runner: spinner: sched_setscheduler: %v\n", errno)
		os.Exit(1)
	}
	// GODEBUG=asyncpreemptoff=1 (startSpinner) keeps the runtime from
	// stopping the loop every 10 ms.
	//lint:ignore SA5002 spinning is the point
	for {
	}
}

// startSpinner starts a spinner with the command prefix pin (the server's
// pinning), the runner's own binary with spinnerEnv set. It dies with the
// runner.
func startSpinner(pin []string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("spinner: %v", err)
	}
	argv := append(append([]string{}, pin...), self)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), spinnerEnv+"=1", "GODEBUG=asyncpreemptoff=1", "GOMAXPROCS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("spinner: %v", err)
	}
	return cmd, nil
}

// stopSpinner kills a spinner and reaps it; nil does nothing.
func stopSpinner(cmd *exec.Cmd) {
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}
