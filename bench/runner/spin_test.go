package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	spinIfAsked() // the test binary is the spinner that startSpinner starts
	os.Exit(m.Run())
}

func TestSpinnerSpinsAtIdlePriorityUntilStopped(t *testing.T) {
	cmd, err := startSpinner(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stopSpinner(cmd)
	pid := cmd.Process.Pid
	// It spins: its CPU clock runs. Polled, with a deadline far above
	// the 50 ms it needs on an idle machine.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		c, err := processCPU(pid)
		if err != nil {
			t.Fatal(err)
		}
		if c >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spinner used %v of CPU in 20 s", c)
		}
	}
	// The thread that spins, the one with the most CPU, is at idle
	// priority.
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	busiest, policy := -1, ""
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + task.Name() + "/stat")
		if err != nil {
			continue // a thread that has exited
		}
		// Fields after the command's ")": state is field 3, utime 14,
		// stime 15, policy 41.
		_, rest, _ := strings.Cut(string(b), ") ")
		f := strings.Fields(rest)
		if len(f) < 39 {
			t.Fatalf("task stat: %q", b)
		}
		u, _ := strconv.Atoi(f[14-3])
		s, _ := strconv.Atoi(f[15-3])
		if u+s > busiest {
			busiest, policy = u+s, f[41-3]
		}
	}
	if policy != strconv.Itoa(schedIdle) {
		t.Errorf("the spinning thread's policy is %s, want SCHED_IDLE (%d)", policy, schedIdle)
	}
	stopSpinner(cmd)
	if cmd.ProcessState == nil || cmd.ProcessState.Exited() {
		t.Errorf("after stopSpinner: %v, want killed and reaped", cmd.ProcessState)
	}
}

func TestMarkdownSaysWhenServersRanBesideASpinner(t *testing.T) {
	rep := summarise(testConfig(1), names([]string{"crawecho", "echo-nopoll"}), nil)
	if strings.Contains(rep.markdown(), "-spin") || strings.Contains(rep.svg(), "-spin") {
		t.Error("the report mentions -spin in a run without it")
	}
	cfg := testConfig(1)
	cfg.spin = true
	rep = summarise(cfg, names([]string{"crawecho", "echo-nopoll"}), nil)
	if !rep.Meta.Spin || !strings.Contains(rep.markdown(), "- **-spin:** each server ran beside a spinner") {
		t.Errorf("a -spin run: meta.spin %v, markdown:\n%s", rep.Meta.Spin, rep.markdown())
	}
	if !strings.Contains(rep.svg(), "-spin: each server beside a spinner") {
		t.Error("a -spin run's chart does not say so")
	}
}
