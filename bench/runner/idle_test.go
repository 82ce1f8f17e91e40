package main

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// The idle table takes each server's median over its good rounds and marks
// a ratio over the target.
func TestIdleRatiosAgainstTheCReference(t *testing.T) {
	rep := &idleReport{Conns: 10, Servers: []string{"crawecho", "echo-nopoll", "cecho", "echo-bufferevent-nopoll"}, Runs: []idleRun{
		{Server: "crawecho", PerConn: 200},
		{Server: "echo-nopoll", PerConn: 290},
		{Server: "echo-nopoll", PerConn: 300},
		{Server: "echo-nopoll", PerConn: 310},
		{Server: "echo-nopoll", PerConn: 1e6, Error: "failed"},
		{Server: "cecho", PerConn: 1000},
		{Server: "echo-bufferevent-nopoll", PerConn: 1200},
	}}
	md := rep.markdown()
	for _, want := range []string{
		"| echo-nopoll | 300 | 3 |",
		"| `echo-nopoll` / `crawecho` | ≤ 1.3 | **1.50** |",
		"| `echo-bufferevent-nopoll` / `cecho` | ≤ 1.3 | 1.20 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "`echo` / `crawecho`") {
		t.Errorf("a ratio for a server not measured:\n%s", md)
	}
}

// The multi-core mode pins only where every loop and load generator gets a
// CPU of its own, and says so either way.
func TestMultiPinningNeedsACorePerLoopAndGenerator(t *testing.T) {
	n := runtime.NumCPU() // 2n CPUs are never there
	srv, load, note := multiPinning(n)
	if srv != nil || load(0) != nil || !strings.Contains(note, "nothing pinned") {
		t.Errorf("%d loops on %d CPUs: server %v, load %v, note %q", n, n, srv, load(0), note)
	}
	if _, err := exec.LookPath("taskset"); err == nil && runtime.NumCPU() >= 2 {
		srv, load, note = multiPinning(1)
		if strings.Join(srv, " ") != "taskset -c 0-0" || strings.Join(load(0), " ") != "taskset -c 1" {
			t.Errorf("1 loop on %d CPUs: server %v, load %v (%s)", runtime.NumCPU(), srv, load(0), note)
		}
	}
}
