package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// A run as results.json held it before the load generator's line had one
// type: -from must still read such a file.
const earlierRun = `{"server":"goecho","workload":"50x64B","round":3,"ops_per_sec":41000,"p50_us":1200.5,"p99_us":2400.25,"ops":24600,"ops_all":33000,"errors":0,"stalls":0,"setup_ms":3.5,"server_cpu_us_per_op":14.5,"load_busy":0.9,"other_cores":0.05}`

func TestRunRecordJSON(t *testing.T) {
	t.Run("reads a run of an earlier results.json", func(t *testing.T) {
		var r runRecord
		if err := json.Unmarshal([]byte(earlierRun), &r); err != nil {
			t.Fatal(err)
		}
		if r.Server != "goecho" || r.Workload != "50x64B" || r.Round != 3 ||
			r.OpsPerSec != 41000 || r.P50us != 1200.5 || r.P99us != 2400.25 ||
			r.Ops != 24600 || r.OpsAll != 33000 || r.SetupMs != 3.5 ||
			r.ServerCPUus != 14.5 || r.LoadBusy != 0.9 || r.OtherCores != 0.05 {
			t.Errorf("read %+v from %s", r, earlierRun)
		}
	})
	t.Run("the workload is the record's when the load generator never ran", func(t *testing.T) {
		r := runRecord{Server: "echo", Workload: "accept", Round: 1, Error: "no listening line within 5s"}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"workload":"accept"`) {
			t.Errorf("%s: want the record's workload", b)
		}
		var back runRecord
		if err := json.Unmarshal(b, &back); err != nil || back.Workload != "accept" {
			t.Errorf("read back workload %q (%v), want accept", back.Workload, err)
		}
	})
}

func TestProcessCPUCountsEveryThreadInNanoseconds(t *testing.T) {
	pid := os.Getpid()
	before, err := processCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	// 10 ms of CPU on each of three threads, one after the other, each of
	// which then exits (a goroutine that ends locked takes its thread with
	// it; at most one of them can be the main thread): the process's clock
	// counts them all.
	var burnt time.Duration
	for range 3 {
		done := make(chan time.Duration)
		go func() {
			runtime.LockOSThread()
			for threadCPU(t) < 10*time.Millisecond {
			}
			done <- threadCPU(t)
		}()
		burnt += <-done
	}
	after, err := processCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if got := after - before; got < burnt*9/10 {
		t.Errorf("processCPU rose by %v over %v of CPU on three other threads", got, burnt)
	}
	if after%time.Millisecond == 0 && before%time.Millisecond == 0 {
		t.Errorf("processCPU reads %v and %v: whole milliseconds, not a ns clock", before, after)
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := processCPU(gone.Process.Pid); err == nil {
		t.Error("processCPU of a process that has exited and been reaped: no error")
	}
	if _, err := processCPU(1 << 30); err == nil {
		t.Error("processCPU of a pid out of range: no error")
	}
}

// threadCPU is the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID).
func threadCPU(t *testing.T) time.Duration {
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 3, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		t.Error(errno)
		return time.Hour
	}
	return time.Duration(ts.Nano())
}

func TestListeningAddr(t *testing.T) {
	for _, tc := range []struct {
		line, want string
		ok         bool
	}{
		{"echo: listening on 127.0.0.1:9876", "127.0.0.1:9876", true},
		{"kv: listening on [::1]:6380\r", "[::1]:6380", true},
		{"echo: upgraded to pid 7", "", false},
		{": listening on 127.0.0.1:1", "", false},
		{"warning: not listening on 127.0.0.1:1", "", false},
	} {
		got, ok := listeningAddr(tc.line)
		if got != tc.want || ok != tc.ok {
			t.Errorf("listeningAddr(%q) = %q, %v; want %q, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}
